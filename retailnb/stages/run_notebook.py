"""Run one stage's notebook: execute it with papermill and export the executed copy as an HTML report.

Every stage of ``dvc.yaml`` is ``python -m retailnb.stages.run_notebook NOTEBOOK OUTPUT -p NAME VALUE ...``. One
process does both steps (a papermill run then a separate ``jupyter nbconvert`` cost a second interpreter
and a second import of the Jupyter stack per stage), and every ``-p`` value reaches the notebook as the
string written: the stages pass only the params file, a foreach key and paths, and the typed values come
from ``params.yaml`` (:mod:`retailnb.config`), never from the command line.

A notebook also runs by hand, in JupyterLab, whose kernel starts in ``notebooks/``: its first code cell
calls :func:`work_in_repository`, which moves the kernel to the repository root, where ``dvc repro``
runs it, so that the same relative paths (``params.yaml``, ``data/prepared/...``) name the same files.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retailnb.util.atomic import atomic_write_text

PARAMS_FILE = "params.yaml"
"""The file that marks the folder a stage runs in: the repository root, where ``dvc repro`` runs it."""


def work_in_repository(start: str | Path | None = None) -> Path:
    """Change the working directory to the repository root, the nearest folder at or above ``start`` (the
    working directory) that holds ``params.yaml``, and return it.

    Under ``dvc repro`` the kernel already runs there and nothing changes; in JupyterLab it starts in
    ``notebooks/`` and moves up one folder.

    Raises:
        FileNotFoundError: no folder at or above ``start`` holds ``params.yaml``.
    """
    here = Path(start if start is not None else os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PARAMS_FILE).is_file():
            os.chdir(folder)
            return folder
    raise FileNotFoundError(f"{here}: neither this folder nor any above it holds {PARAMS_FILE}; "
                            "start the notebook inside the retailnb repository")


KERNEL = "python3"
"""The Jupyter kernel every stage runs in (the environment's own Python)."""


def kernel_metadata(kernel: str = KERNEL) -> dict[str, str]:
    """The notebook's ``kernelspec`` metadata exactly as JupyterLab writes it for ``kernel``.

    JupyterLab replaces a notebook's ``kernelspec`` with its kernel's (name, display name, language)
    when it opens the notebook, which marks it changed and autosaves it. Writing the same values into
    every executed notebook keeps a report that a user merely opened byte for byte as DVC recorded it.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(kernel)
    return {"display_name": spec.display_name, "language": spec.language, "name": kernel}


PAPERMILL_CLOCK = ("start_time", "end_time", "duration")
"""The wall-clock fields papermill writes into a notebook's and each cell's ``metadata.papermill``."""


INJECTED_CELL_ID = "injected-parameters"
"""The id of the cell papermill adds with the run's parameters (a random one otherwise)."""


def log_path(output: str | Path) -> Path:
    """The run's log beside the executed notebook: ``reports/01_data.ipynb`` -> ``reports/01_data.log``.

    Not a DVC output and not in git: it holds what changes from run to run (timings, progress).
    """
    return Path(output).with_suffix(".log")


def settle(nb: Any) -> str:
    """Take from an executed notebook (in place) what differs between two runs of the same stage, and return it.

    Papermill's clock fields go, its injected cell gets a fixed id; what the kernel wrote on standard error (progress lines with their
    elapsed times, warnings, the timings a stage logs) moves to the returned log text, one block per cell.
    The notebook then holds only what the run computed, so that repeating a stage leaves its report,
    and so ``dvc.lock``, byte for byte as it was.
    """
    for meta in (nb.metadata.get("papermill", {}), *(c.metadata.get("papermill", {}) for c in nb.cells)):
        for key in PAPERMILL_CLOCK:
            meta.pop(key, None)
    blocks = []
    for index, cell in enumerate(nb.cells):
        cell.metadata.pop("execution", None)  # the kernel's own timestamps, when it records them
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = INJECTED_CELL_ID  # papermill draws a random one on every run
        if cell.cell_type != "code":
            continue
        logged = [o for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"]
        if logged:
            blocks.append(f"--- cell {index} ---\n" + "".join(o.text for o in logged))
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    return "".join(blocks)


def execute(notebook: str | Path, output: str | Path, parameters: dict[str, str]) -> Path:
    """Execute ``notebook`` with ``parameters`` injected after its ``parameters`` cell; write ``output``.

    What the kernel writes on standard error (the training loops' one line per epoch, warnings, timings)
    is forwarded to this process's standard error as it arrives, the live progress of ``dvc repro``, and
    kept in :func:`log_path`; the executed notebook holds the rest (:func:`settle`).

    Raises:
        papermill.PapermillExecutionError: a cell raised; ``output`` holds the run up to that cell.
    """
    import nbformat
    import papermill

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name=KERNEL,
                               progress_bar=False, stderr_file=sys.stderr,
                               # the kernel's own start-up warning (TCP on localhost) would open every stage's log
                               extra_arguments=["--IPKernelApp.log_level=ERROR"])
    nb = nbformat.read(str(output), as_version=4)
    atomic_write_text(log_path(output), settle(nb))
    nb.metadata["kernelspec"] = kernel_metadata()
    atomic_write_text(Path(output), nbformat.writes(nb))
    return Path(output)


def report_view(nb: Any) -> Any:
    """A copy of an executed notebook as the HTML report shows it: without the kernel's standard error.

    The executed notebook keeps its log (progress lines, warnings); the report a reader opens holds the
    narrative, tables and figures.
    """
    import copy

    view = copy.deepcopy(nb)
    for cell in view.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if not (o.output_type == "stream" and o.name == "stderr")]
    return view


def figure_descriptions(nb: Any) -> dict[str, str]:
    """Each displayed PNG's base64 data mapped to its ``alt`` description (see :mod:`retailnb.stages.display`)."""
    found = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data, meta = output.get("data", {}), output.get("metadata", {})
            alt = meta.get("image/png", {}).get("alt") if isinstance(meta.get("image/png"), dict) else None
            if "image/png" in data and alt:
                found["".join("".join(data["image/png"]).split())] = alt
    return found


def html_report(nb: Any) -> str:
    """The HTML report of an executed notebook: code and prompts hidden, stderr left out, figures described.

    nbconvert's lab template ignores an image's ``alt`` metadata and writes a placeholder; the
    descriptions are put back by matching each image's data.
    """
    from bs4 import BeautifulSoup
    from nbconvert import HTMLExporter

    view = report_view(nb)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(view)
    descriptions = figure_descriptions(view)
    soup = BeautifulSoup(body, features="html.parser")
    for img in soup.find_all("img"):
        src = str(img.get("src", ""))
        key = "".join(src.split(",", 1)[-1].split())
        if src.startswith("data:image/png;base64,") and key in descriptions:
            img["alt"] = descriptions[key]
    return str(soup)


def export_html(executed: str | Path) -> Path:
    """Write the executed notebook as ``<name>.html`` beside it (atomically), the shareable report."""
    import nbformat

    return atomic_write_text(Path(executed).with_suffix(".html"), html_report(nbformat.read(str(executed), as_version=4)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line: the notebook, the executed copy, and ``-p NAME VALUE`` pairs (strings)."""
    parser = argparse.ArgumentParser(prog="python -m retailnb.stages.run_notebook", description=__doc__.splitlines()[0])
    parser.add_argument("notebook", help="the source notebook, e.g. notebooks/01_data.ipynb")
    parser.add_argument("output", help="the executed copy, e.g. reports/01_data.ipynb (the HTML goes beside it)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a notebook parameter, passed as a string")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Execute the notebook and export its HTML report; 1 when a cell raised (papermill says which)."""
    args = parse_args(argv)
    parameters = dict(args.parameter)
    if len(parameters) != len(args.parameter):
        names = [name for name, _ in args.parameter]
        repeated = sorted({n for n in names if names.count(n) > 1})
        print(f"error: parameter given twice: {', '.join(repeated)}", file=sys.stderr)
        return 2
    if not Path(args.notebook).is_file():
        print(f"error: no notebook at {args.notebook}", file=sys.stderr)
        return 2
    from papermill import PapermillExecutionError

    try:
        executed = execute(args.notebook, args.output, parameters)
    except PapermillExecutionError as error:
        print(f"error: {args.notebook} stopped in cell {error.exec_count}: {error.ename}: {error.evalue}\n"
              f"(the run up to that cell is in {args.output})", file=sys.stderr)
        return 1
    export_html(executed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run one stage's notebook: execute it with papermill and export the executed copy as an HTML report.

Every stage of ``dvc.yaml`` is ``python -m retailnb.notebooks NOTEBOOK OUTPUT -p NAME VALUE ...``. One
process does both steps (a papermill run then a separate ``jupyter nbconvert`` cost a second interpreter
and a second import of the Jupyter stack per stage), and every ``-p`` value reaches the notebook as the
string written: the stages pass only the params file, a foreach key and paths, and the typed values come
from ``params.yaml`` (:mod:`retailnb.config`), never from the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from retailnb.atomic import atomic_write_text

KERNEL = "python3"
"""The Jupyter kernel every stage runs in (the environment's own Python)."""


def execute(notebook: str | Path, output: str | Path, parameters: dict[str, str]) -> Path:
    """Execute ``notebook`` with ``parameters`` injected after its ``parameters`` cell; write ``output``.

    Raises:
        papermill.PapermillExecutionError: a cell raised; ``output`` holds the run up to that cell.
    """
    import papermill

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name=KERNEL,
                               progress_bar=False)
    return Path(output)


def export_html(executed: str | Path) -> Path:
    """Write the executed notebook as ``<name>.html`` beside it (atomically), the shareable report."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(executed))
    return atomic_write_text(Path(executed).with_suffix(".html"), body)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line: the notebook, the executed copy, and ``-p NAME VALUE`` pairs (strings)."""
    parser = argparse.ArgumentParser(prog="python -m retailnb.notebooks", description=__doc__.splitlines()[0])
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

"""The stage runner: papermill execution and the HTML report in one process, string parameters, clear errors."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from retailnb.stages.run_notebook import main

pytestmark = pytest.mark.pipeline  # notebooks run through papermill: end to end


def write_notebook(path: Path, body: str) -> Path:
    """A notebook with a ``parameters`` cell (``flag = True``, ``name = "x"``) and one cell of ``body``."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('flag = True\nname = "x"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_runs_the_notebook_with_string_parameters_and_writes_its_html_report(tmp_path: Path) -> None:
    """``-p flag false`` arrives as the string "false" (the CLI never guesses types), and the HTML is written."""
    notebook = write_notebook(tmp_path / "nb.ipynb", "print(repr(flag), repr(name), type(flag).__name__)")
    out = tmp_path / "reports" / "nb.ipynb"
    assert main([str(notebook), str(out), "-p", "flag", "false", "-p", "name", "models/a"]) == 0
    executed = nbformat.read(out, as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert printed.strip() == "'false' 'models/a' str"
    html = out.with_suffix(".html").read_text()
    assert "<html" in html and "models/a" in html


def test_a_failing_cell_exits_1_naming_the_error_and_writes_no_html(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    notebook = write_notebook(tmp_path / "nb.ipynb", 'raise ValueError("params.yaml: data.seed: bad")')
    out = tmp_path / "nb_out.ipynb"
    assert main([str(notebook), str(out)]) == 1
    err = capsys.readouterr().err
    assert "ValueError: params.yaml: data.seed: bad" in err and str(out) in err
    assert not out.with_suffix(".html").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["missing.ipynb", "out.ipynb"], "no notebook at missing.ipynb"),
    (["nb.ipynb", "out.ipynb", "-p", "a", "1", "-p", "a", "2"], "parameter given twice: a"),
])
def test_bad_command_lines_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    write_notebook(tmp_path / "nb.ipynb", "pass")
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "out.ipynb").exists()


def test_the_kernels_stderr_reaches_the_terminal_and_the_log_but_not_the_notebook_or_the_html(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Live progress of ``dvc repro``: the stage's stderr gets the kernel's lines, kept in the run's log."""
    notebook = write_notebook(tmp_path / "nb.ipynb", 'import sys\nprint("epoch 1/2: loss 1.5", file=sys.stderr)\n'
                                                     'print("the table")')
    out = tmp_path / "nb_out.ipynb"
    assert main([str(notebook), str(out)]) == 0
    assert "epoch 1/2: loss 1.5" in capsys.readouterr().err
    executed = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []))
    assert executed.strip() == "the table"
    assert "epoch 1/2: loss 1.5" in (tmp_path / "nb_out.log").read_text()
    html = out.with_suffix(".html").read_text()
    assert "the table" in html and "epoch 1/2" not in html


def test_running_a_notebook_twice_writes_the_same_bytes(tmp_path: Path) -> None:
    """A rerun of a stage leaves its report (and so dvc.lock) unchanged: no clock in the notebook or the HTML."""
    body = 'import sys, time\ntime.sleep(0.01)\nprint(f"took {time.perf_counter()} s", file=sys.stderr)\nprint(6 * 7)'
    notebook = write_notebook(tmp_path / "nb.ipynb", body)
    out, runs = tmp_path / "reports" / "nb.ipynb", []
    for _ in range(2):
        assert main([str(notebook), str(out), "-p", "name", "y"]) == 0  # papermill injects a cell: a fixed id
        runs.append((out.read_bytes(), out.with_suffix(".html").read_bytes(), out.with_suffix(".log").read_text()))
    assert runs[0][:2] == runs[1][:2]
    assert runs[0][2] != runs[1][2] and "took" in runs[0][2]  # the clock went to the log
    meta = nbformat.read(out, as_version=4).metadata["papermill"]
    assert "duration" not in meta and meta["parameters"] == {"name": "y"}


def test_the_html_report_hides_code_and_describes_each_figure(tmp_path: Path) -> None:
    body = ("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
            "from retailnb.stages.display import show_figure\nfig, ax = plt.subplots()\nax.plot([1, 2])\n"
            f"show_figure(fig, {str(tmp_path / 'figs' / 'line.png')!r}, alt='A rising line from 1 to 2.')")
    notebook = write_notebook(tmp_path / "nb.ipynb", body)
    out = tmp_path / "nb_out.ipynb"
    assert main([str(notebook), str(out), "-p", "name", "SECRET_PARAMETER_CELL"]) == 0
    html = out.with_suffix(".html").read_text()
    assert "show_figure" not in html and "SECRET_PARAMETER_CELL" not in html  # no code, not even the parameters
    assert 'alt="A rising line from 1 to 2."' in html
    assert "No description has been provided" not in html


def test_executed_notebooks_carry_the_kernelspec_jupyterlab_writes(tmp_path: Path) -> None:
    """JupyterLab replaces a differing kernelspec when it opens a notebook and autosaves it (see tests/test_reports)."""
    from retailnb.stages.run_notebook import kernel_metadata

    notebook = write_notebook(tmp_path / "nb.ipynb", "pass")  # display_name "Python 3", as papermill keeps it
    out = tmp_path / "nb_out.ipynb"
    assert main([str(notebook), str(out)]) == 0
    assert nbformat.read(out, as_version=4).metadata["kernelspec"] == kernel_metadata()
    assert kernel_metadata()["display_name"] != "Python 3"  # the test would pass vacuously otherwise


def test_source_notebooks_carry_the_kernelspec_jupyterlab_writes() -> None:
    from retailnb.stages.run_notebook import kernel_metadata

    for path in sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb")):
        assert nbformat.read(path, as_version=4).metadata["kernelspec"] == kernel_metadata(), path.name

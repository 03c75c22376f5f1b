"""The stage runner: papermill execution and the HTML report in one process, string parameters, clear errors."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from retailnb.notebooks import main


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

"""What stage notebooks display: described figures, tables instead of JSON dumps, settings folded away."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from retailnb.stages import display  # noqa: E402


def test_records_become_a_markdown_table() -> None:
    text = display.records_markdown([{"round": 1, "accuracy": 0.51234, "note": None}, {"round": 2, "accuracy": 0.6}])
    assert text.splitlines() == ["| round | accuracy | note |", "| :--- | ---: | ---: |", "| 1 | 0.512 | – |",
                                 "| 2 | 0.600 | – |"]
    assert display.records_markdown([]) == "*(none)*"


def test_settings_are_folded_and_escaped() -> None:
    html = display.settings_html("Settings <data>", {"root": "a<b", "nested": {"k": 1}})
    assert html.startswith("<details><summary>Settings &lt;data&gt;</summary><pre>")
    assert "root: a&lt;b" in html and "nested:\n  k: 1" in html


def test_a_figure_needs_a_description() -> None:
    with pytest.raises(ValueError, match="alt"):
        display.figure_metadata("  ")


def test_show_figure_saves_closes_and_displays_the_file_with_its_description(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[Any] = []
    monkeypatch.setattr("IPython.display.display", lambda *objs: shown.extend(objs))
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = tmp_path / "sub" / "f.png"
    assert display.show_figure(fig, path, "A line.") is None  # a cell ending with it prints nothing more
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert not plt.fignum_exists(fig.number)
    (image,) = shown
    data, metadata = image._repr_png_()
    assert base64.b64decode(data) == path.read_bytes() and metadata["alt"] == "A line."

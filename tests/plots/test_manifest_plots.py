"""The data notebook's view of the manifest: a table of roles, and a figure only where counts differ."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from retailnb.data.manifest import Manifest, ManifestRow
from retailnb.plots.manifest import class_counts, uneven_roles
from retailnb.stages.data import roles_markdown


def manifest(counts: dict[str, dict[str, int]]) -> Manifest:
    """A manifest with ``counts[role][class]`` rows."""
    rows = [ManifestRow(path=f"{role}/{name}/{i}.png", label=0, class_name=name, split="train", role=role)
            for role, per_class in counts.items() for name, n in per_class.items() for i in range(n)]
    return Manifest(records=tuple(rows), root=Path("."))


def test_roles_whose_classes_share_one_count_get_a_table_line_and_no_figure() -> None:
    m = manifest({"labelled": {"a": 4, "b": 4}, "probe_train": {"x": 1, "y": 3, "z": 3}})
    assert uneven_roles(m) == ["probe_train"]
    lines = roles_markdown(m).splitlines()
    assert lines[0] == "| role | classes | images | images per class |"
    assert lines[2:] == ["| `labelled` | 2 | 8 | 4 |", "| `probe_train` | 3 | 7 | 1–3 |"]


def test_the_figure_labels_each_whole_count_once() -> None:
    fig = class_counts(manifest({"probe_train": {"x": 1, "y": 3, "z": 3}}), ["probe_train"])
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "3"]
    assert [p.get_height() for p in ax.patches] == [1, 2]

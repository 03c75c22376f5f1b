"""Figure of the new-products notebook: accuracy of old and new products, and time, against shots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def enrolment_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Two panels from the rows of :func:`retailnb.bundle.enrolment.enrolment_curve`.

    Left: test accuracy on old and on new products against images per new product, ``0`` being the
    bundle before enrolment (new products never recognised). Right: seconds each enrolment took.
    The shot counts are evenly spaced categories, as in the evaluation's few-shot figure.

    Args:
        rows: dicts with ``shots``, ``old_accuracy``, ``new_accuracy`` and ``seconds``.
    """
    labels = ["before" if r["shots"] == 0 else str(r["shots"]) for r in rows]
    x = list(range(len(rows)))
    fig, (acc, sec) = plt.subplots(1, 2, figsize=(8, 3.2))
    for key, name in (("old_accuracy", "old products"), ("new_accuracy", "new products")):
        points = [(i, r[key]) for i, r in zip(x, rows) if r[key] is not None]
        acc.plot([i for i, _ in points], [v for _, v in points], marker="o", label=name)
    acc.set_xticks(x, labels)
    acc.set_xlabel("images per new product")
    acc.set_ylabel("test accuracy")
    acc.set_ylim(-0.02, 1.02)
    acc.legend(fontsize=8, loc="lower right")
    acc.set_title("Accuracy after enrolment", fontsize=9)
    sec.bar(x[1:], [r["seconds"] for r in rows[1:]], color="tab:gray")
    sec.set_xticks(x[1:], labels[1:])
    sec.set_xlabel("images per new product")
    sec.set_ylabel("seconds (embed + refit)")
    sec.set_title("Time to enrol the new products", fontsize=9)
    fig.tight_layout()
    return fig

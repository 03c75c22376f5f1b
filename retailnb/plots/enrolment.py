"""Figure of the new-products notebook: accuracy of old and new products against shots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def enrolment_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Test accuracy on old and on new products against images per new product, from the rows of
    :func:`retailnb.bundle.enrolment.enrolment_curve`; ``before`` is the bundle before enrolment (new
    products never recognised). The shot counts are evenly spaced categories, as in the evaluation's
    few-shot figure. How long an enrolment takes is a timing, in the stage's log and in
    ``benchmarks/bench_new_products.py``.

    Args:
        rows: dicts with ``shots``, ``old_accuracy`` and ``new_accuracy``.
    """
    labels = ["before" if r["shots"] == 0 else str(r["shots"]) for r in rows]
    x = list(range(len(rows)))
    fig, acc = plt.subplots(figsize=(5, 3.2))
    for key, name in (("old_accuracy", "old products"), ("new_accuracy", "new products")):
        points = [(i, r[key]) for i, r in zip(x, rows) if r[key] is not None]
        acc.plot([i for i, _ in points], [v for _, v in points], marker="o", label=name)
    acc.set_xticks(x, labels)
    acc.set_xlabel("images per new product")
    acc.set_ylabel("test accuracy")
    acc.set_ylim(-0.02, 1.02)
    acc.legend(fontsize=8, loc="best")
    acc.set_title("Accuracy after enrolling the new products", fontsize=9)
    fig.tight_layout()
    return fig

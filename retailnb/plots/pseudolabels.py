"""Figures of noisy-student pseudolabels: choosing the threshold, and what each round brought."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from retailnb.plots.limits import data_limits


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """``rows[i][key]`` as floats, NaN where the key is missing or None (matplotlib leaves a gap)."""
    return np.array([np.nan if row.get(key) is None else float(row[key]) for row in rows], dtype=float)


def threshold_plot(curve_rows: Sequence[Mapping[str, Any]], chosen_threshold: float) -> Figure:
    """Pseudolabel precision and coverage against the confidence threshold, the chosen one marked.

    Args:
        curve_rows: rows of :func:`retailnb.noisy.pseudolabels.threshold_curve` (keys ``threshold``,
            ``precision``, ``coverage``).
        chosen_threshold: the threshold used, drawn as a dashed vertical line.
    """
    thresholds = _column(curve_rows, "threshold")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(thresholds, _column(curve_rows, "precision"), marker="o", label="precision")
    ax.plot(thresholds, _column(curve_rows, "coverage"), marker="s", label="coverage")
    ax.axvline(chosen_threshold, color="tab:gray", linestyle="--", label=f"chosen ({chosen_threshold:g})")
    ax.set_xlabel("teacher confidence threshold")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Pseudolabel precision and coverage against the threshold", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def rounds_plot(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Probe accuracy per noisy-student round (left), and each round's pseudolabel precision and coverage
    (right).

    The accuracy panel is scaled to its values: the gains of a round are a few points, which a 0-1 axis
    shared with the coverage would flatten. Round 0 is the contrastive backbone alone: it has a probe
    accuracy but no pseudolabels, so its precision and coverage may be missing or None (no point drawn).

    Args:
        rows: one mapping per round with keys ``round``, ``probe_accuracy``, ``precision``, ``coverage``.
    """
    rounds = _column(rows, "round")
    accuracy = _column(rows, "probe_accuracy")
    fig, (acc, labels) = plt.subplots(1, 2, figsize=(8, 3.2))
    acc.plot(rounds, accuracy, marker="o", color="tab:blue")
    acc.set_ylim(*data_limits(list(accuracy)))
    acc.set_ylabel("probe accuracy on the target")
    acc.set_title("Frozen-feature probe per round", fontsize=9)
    labels.plot(rounds, _column(rows, "precision"), marker="s", label="precision")
    labels.plot(rounds, _column(rows, "coverage"), marker="^", label="coverage")
    labels.set_ylim(-0.02, 1.02)
    labels.set_ylabel("fraction of the unlabelled pool's pseudolabels")
    labels.set_title("Pseudolabels per round", fontsize=9)
    labels.legend(fontsize=8)
    for ax in (acc, labels):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round (0 = contrastive backbone alone)")
    fig.tight_layout()
    return fig

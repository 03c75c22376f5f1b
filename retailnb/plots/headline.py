"""The report's headline figure: each row's accuracy over the training seeds, against the finetuned network."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from retailnb.results.records import IntervalRecord, TargetSummary
from retailnb.results.summary import noisy_rounds


def headline_rows(summary: TargetSummary) -> list[tuple[str, IntervalRecord, bool]]:
    """(label, all-image accuracy over the seeds, whether it is a finetuned network) per row, top to bottom:
    random weights, the main backbone, each noisy-student round (probes), then the finetuning baselines."""
    methods, main = summary.methods, summary.main_variant
    rows: list[tuple[str, IntervalRecord, bool]] = []
    for name, label in (("random_init", "random weights"), (main, f"{main} (main)"),
                        *((n, f"noisy student, round {r}") for r, n in noisy_rounds(methods))):
        if "probe_all" in methods.get(name, {}):
            rows.append((f"probe: {label}", methods[name]["probe_all"], False))
    for init, label in (("pretrained", f"from {main}"), ("random_init", "from random weights")):
        if init in summary.finetune:
            rows.append((f"finetuned {label}", summary.finetune[init].accuracy, True))
    return rows


def headline_figure(summary: TargetSummary) -> Figure:
    """Each row's test accuracy with all training images: the mean over the training seeds and its interval
    (bars), the finetuned main backbone as a dashed reference line.

    Raises:
        ValueError: the summary holds no all-image accuracy to draw.
    """
    rows = headline_rows(summary)
    if not rows:
        raise ValueError(f"target {summary.target!r}: no all-image accuracy to draw")
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.3))
    for y, (label, cell, finetuned) in enumerate(rows):
        lo = cell.mean - cell.low if cell.low is not None else 0.0
        hi = cell.high - cell.mean if cell.high is not None else 0.0
        ax.errorbar(cell.mean, y, xerr=[[lo], [hi]], fmt="s" if finetuned else "o", capsize=4,
                    color="tab:gray" if finetuned else "tab:blue")
        ax.annotate(f"{cell.mean:.3f}", (cell.mean, y), xytext=(0, 7), textcoords="offset points",
                    ha="center", fontsize=7)
    tuned = summary.finetune.get("pretrained")
    if tuned is not None:
        ax.axvline(tuned.accuracy.mean, color="tab:gray", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.7)
    ax.set_xlim(0, 1)  # accuracy: the same scale in every report, an interval past it clipped
    ax.set_xlabel("test accuracy, all training images", fontsize=8)
    n, level = len(summary.seeds), next(iter(rows))[1].confidence
    ax.set_title(f"Target {summary.target}: mean over {n} training seed{'s' if n != 1 else ''}"
                 + (f", {level:.0%} interval" if n > 1 else "") + "; dashed: the finetuned main backbone",
                 fontsize=9, loc="left")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig

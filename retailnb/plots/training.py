"""Figures of a training run: its curves, and retrievals that show what the features learned."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.preprocessing import normalize
from torch import nn

from retailnb.evaluation.quickprobe import ProbeData
from retailnb.models.inference import extract_features


def training_curves(history: Mapping[str, Sequence[float]]) -> Figure:
    """Loss terms (left) and learning rate (right) per epoch."""
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(9, 3))
    for name, values in history.items():
        if name != "lr":
            ax_loss.plot(range(1, len(values) + 1), values, marker="o", label=name)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    lr = history.get("lr", [])
    ax_lr.plot(range(1, len(lr) + 1), lr, marker="o", color="tab:gray")
    ax_lr.set_xlabel("epoch")
    ax_lr.set_ylabel("learning rate (end of epoch)")
    fig.tight_layout()
    return fig


def nearest(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` gallery rows most cosine-similar to each query row, best first."""
    similarity = normalize(queries) @ normalize(gallery).T
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def retrievals(backbone: nn.Module, data: ProbeData, *, n_queries: int = 6, k: int = 5, seed: int = 0) -> Figure:
    """Shelf queries from ``monitor_test`` and their ``k`` nearest ``monitor_train`` images.

    A green frame marks a neighbour of the query's product, red another product.
    """
    f_gallery = extract_features(backbone, data.x_train)
    pick = np.random.default_rng(seed).choice(len(data.x_test), size=min(n_queries, len(data.x_test)), replace=False)
    f_query = extract_features(backbone, data.x_test[pick])
    idx = nearest(f_query, f_gallery, k)
    fig, axes = plt.subplots(len(pick), k + 1, figsize=(1.5 * (k + 1), 1.6 * len(pick)), squeeze=False)
    for row, q, neighbours in zip(axes, pick, idx):
        row[0].imshow(data.x_test[q])
        row[0].set_ylabel(data.classes[data.y_test[q]], fontsize=7)
        for ax, n in zip(row[1:], neighbours):
            ax.imshow(data.x_train[n])
            colour = "tab:green" if data.y_train[n] == data.y_test[q] else "tab:red"
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("shelf query", fontsize=8)
    for j, ax in enumerate(axes[0][1:], start=1):
        ax.set_title(f"#{j}", fontsize=8)
    fig.tight_layout()
    return fig

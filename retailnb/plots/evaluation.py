"""Figures of the evaluation: accuracy against shots, a map of the embeddings, and the probe's confusions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from retailnb.evaluation.fewshot import CATALOGUE
from retailnb.evaluation.probe import DEFAULT_THREADS
from retailnb.evaluation.quickprobe import ProbeData
from retailnb.plots.limits import data_limits
from retailnb.plots.training import nearest

MIN_TSNE_POINTS = 10
"""Below this many points t-SNE has no meaningful neighbourhoods (its perplexity must stay below the
number of points), so :func:`embedding_map` shows the first two principal components instead."""

MAX_LEGEND_CLASSES = 20
"""More classes than this make a legend taller than the map and colours no eye can tell apart."""


def shot_order(shots: Sequence[int | str]) -> list[int | str]:
    """Distinct shot counts, numbers ascending and ``"all"`` last, after ``"catalogue"`` (the catalogue-only
    probe) when present: the x positions of :func:`shots_figure`."""
    distinct = set(shots)
    numbers = sorted(s for s in distinct if not isinstance(s, str))
    return ([CATALOGUE] if CATALOGUE in distinct else []) + [*numbers] + (["all"] if "all" in distinct else [])


def shots_figure(summaries: Mapping[str, Sequence[Mapping[str, Any]]], finetuned_accuracy: float) -> Figure:
    """Probe accuracy against images per product, one line per method, finetuning as a dashed line.

    The shot counts are evenly spaced categories (1, 5, 10, all) rather than a numeric axis, so that
    ``"all"``, whose size depends on the dataset, sits at the end. Error bars are one standard deviation
    over the seeded draws of the shots. The catalogue-only probe, when measured, is a diamond of the
    method's colour at the first position, not joined to the line: its images are packshots, not shelf
    photos.

    Args:
        summaries: method name → rows of :func:`retailnb.evaluation.fewshot.summarize_fewshot` (keys
            ``shots``, ``probe_accuracy_mean``, ``probe_accuracy_std``).
        finetuned_accuracy: test accuracy of the main backbone finetuned end to end (the baseline).
    """
    order = shot_order([row["shots"] for rows in summaries.values() for row in rows])
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    extent = [finetuned_accuracy]
    for name, rows in summaries.items():
        kept = sorted(((order.index(r["shots"]), r) for r in rows
                       if "probe_accuracy_mean" in r and r["shots"] != CATALOGUE), key=lambda pair: pair[0])
        x = [i for i, _ in kept]
        mean = np.array([r["probe_accuracy_mean"] for _, r in kept])
        std = np.array([r.get("probe_accuracy_std", 0.0) for _, r in kept])
        line = ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=name)
        extent += [*(mean - std), *(mean + std)]
        packshots = [r["probe_accuracy_mean"] for r in rows if r["shots"] == CATALOGUE and "probe_accuracy_mean" in r]
        if packshots:
            ax.plot([order.index(CATALOGUE)], packshots, marker="D", linestyle="none", color=line.lines[0].get_color())
            extent += packshots
    ax.axhline(finetuned_accuracy, color="black", linestyle="--", label=f"finetuned ({finetuned_accuracy:.3f})")
    ax.set_xticks(range(len(order)), ["catalogue\nonly" if s == CATALOGUE else str(s) for s in order])
    ax.set_xlabel("training images per product")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(*data_limits(extent))
    ax.set_title("Logistic regression on frozen features against finetuning", fontsize=9)
    # beside the axes, so that no label hides the last points
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def _pca(x: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    """The first ``n_components`` principal components of ``x``, zero columns where fewer exist."""
    k = min(n_components, *x.shape)
    out = np.zeros((len(x), n_components))
    if k > 0:
        out[:, :k] = PCA(n_components=k, random_state=seed).fit_transform(x)
    return out


def embed_2d(features: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``features`` and the method's name ("t-SNE" or "PCA").

    The features are standardised (each dimension weighs the same) and reduced to 50 principal
    components, which removes noise and makes t-SNE fast; t-SNE starts from the PCA layout (stable
    global arrangement) with a fixed ``random_state``, so the same features give the same map.
    Fewer than :data:`MIN_TSNE_POINTS` points are shown by PCA alone.
    """
    x = StandardScaler().fit_transform(np.asarray(features, dtype=np.float64).reshape(len(features), -1))
    if len(x) < MIN_TSNE_POINTS:
        return _pca(x, 2, seed), "PCA"
    reduced = _pca(x, 50, seed)
    perplexity = min(30.0, (len(x) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    with threadpool_limits(limits=DEFAULT_THREADS):
        return tsne.fit_transform(reduced), "t-SNE"


def class_colours(n: int) -> list[Any]:
    """``n`` distinct colours: the qualitative tab10/tab20 palettes while they suffice, a rainbow beyond."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("turbo")(v) for v in np.linspace(0.05, 0.95, n)]


MAX_LEGEND_GROUPS = 10
"""Most groups :func:`embedding_map` colours apart (the ten colours of tab10 that an eye tells apart)."""

GROUP_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
"""Markers of the products within one group (cycled when a group has more)."""


def class_group(name: str) -> str:
    """The group of a class named ``"<Brand> <Variant>"``: its first word (the synthetic brand family).

    A name of one word is its own group.
    """
    return name.split()[0] if name.split() else name


def product_groups(classes: Sequence[str], groups: Mapping[str, str] | None = None) -> list[str]:
    """The group of each class: ``groups[name]`` where given, else :func:`class_group` of its name."""
    given = groups or {}
    return [given.get(name) or class_group(name) for name in classes]


def embedding_map(features: np.ndarray, labels: np.ndarray, classes: list[str], *, seed: int = 0,
                  groups: Mapping[str, str] | None = None) -> Figure:
    """A 2-D map of embeddings (t-SNE, or PCA for a handful of points), coloured so that a reader can name them.

    Up to :data:`MAX_LEGEND_CLASSES` classes get a colour each and a legend. Beyond that no eye tells
    the colours apart (the synthetic target has 40 products), so the products are coloured by their group
    (a brand: the first word of ``"<Brand> <Variant>"``, or ``groups``) with a legend of the groups, and
    a marker tells the products of one group apart. Products whose points form separate clusters are ones
    a linear probe can tell apart; a brand's markers mixed in one cluster are its fine-grained neighbours.
    With more than :data:`MAX_LEGEND_GROUPS` groups every product keeps its own colour, without a legend.

    Args:
        features: (N, D) features.
        labels: (N,) class indices into ``classes``.
        classes: class names.
        seed: seed of PCA and t-SNE.
        groups: class name -> group (e.g. the manifest's ``group``: brand or coarse kind); a class not in
            it is grouped by its name's first word.

    Raises:
        ValueError: ``features`` and ``labels`` have different lengths.
    """
    labels = np.asarray(labels)
    if len(features) != len(labels):
        raise ValueError(f"features has {len(features)} rows but labels has {len(labels)}")
    xy, method = embed_2d(features, seed=seed)
    present = [int(c) for c in np.unique(labels)]
    group_of = product_groups(classes, groups)
    names = list(dict.fromkeys(group_of[c] for c in present))
    fig, ax = plt.subplots(figsize=(7.5, 5))
    if len(present) <= MAX_LEGEND_CLASSES or len(names) > MAX_LEGEND_GROUPS:
        for colour, c in zip(class_colours(len(present)), present):
            pts = xy[labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=12, color=colour, label=classes[c])
        if len(present) <= MAX_LEGEND_CLASSES:
            ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=1.5, frameon=False)
        title = f"{method} of {len(labels)} embeddings, {len(present)} products"
    else:
        colours = dict(zip(names, class_colours(len(names))))
        rank: dict[str, int] = {}
        for c in present:
            group = group_of[c]
            marker = GROUP_MARKERS[rank.get(group, 0) % len(GROUP_MARKERS)]
            rank[group] = rank.get(group, 0) + 1
            pts = xy[labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=14, color=colours[group], marker=marker, alpha=0.85)
        # one entry per group, in its colour (a round marker: the markers belong to the products)
        handles = [Line2D([], [], marker="o", linestyle="", color=colours[g], label=g) for g in names]
        ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                  title="group (brand)", title_fontsize=7)
        title = (f"{method} of {len(labels)} embeddings, {len(present)} products in {len(names)} groups\n"
                 "colour: group, marker: product within its group")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def confusion_pairs(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> list[tuple[int, int, int]]:
    """The ``n`` most frequent mistakes as (true class, predicted class, count).

    Sorted by count, most frequent first, ties by true then predicted class so the order is stable.
    Correct predictions are not counted; fewer than ``n`` pairs come back when fewer kinds of mistake exist.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must have the same shape")
    counts = Counter((int(t), int(p)) for t, p in zip(y_true, y_pred) if t != p)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [(t, p, count) for (t, p), count in ranked[:n]]


def _show(ax: Axes, image: np.ndarray | None, title: str) -> None:
    """An image without ticks and with a small title; a blank panel saying so when there is none."""
    if image is None:
        ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=7)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=7)


def _first(images: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The first image where ``mask`` holds, or None when it holds nowhere."""
    hits = np.flatnonzero(mask)
    return images[hits[0]] if hits.size else None


def confusion_figure(data: ProbeData, predicted: np.ndarray, *, n_pairs: int = 4) -> Figure:
    """The probe's most frequent confusions, each shown as a mistaken test image and the two products.

    Each row is one (true, predicted) pair: the first test image of the true product that was taken for
    the other, then a training image of each product, so a reader sees whether the two really look alike.
    The figure takes the probe's predictions rather than fitting a probe of its own, so that the stage
    fits it once (:func:`retailnb.evaluation.compare.probe_predictions`) and the figure shows the
    confusions its plot data records.

    Args:
        data: the images and labels of the target.
        predicted: (M,) the probe's predicted class of every test image, aligned with ``data.y_test``.
        n_pairs: how many of the most frequent pairs to show.

    Raises:
        ValueError: ``predicted`` does not have one class per test image.
    """
    y_pred = np.asarray(predicted)
    pairs = confusion_pairs(data.y_test, y_pred, n_pairs)
    if not pairs:
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.text(0.5, 0.5, f"No confusions: all {len(data.y_test)} test images classified correctly",
                ha="center", va="center", fontsize=9)
        ax.set_axis_off()
        return fig
    fig, axes = plt.subplots(len(pairs), 3, figsize=(6.6, 2.3 * len(pairs)), squeeze=False)
    for row, (t, p, count) in zip(axes, pairs):
        true_name, pred_name = data.classes[t], data.classes[p]
        _show(row[0], _first(data.x_test, (data.y_test == t) & (y_pred == p)),
              f"test: {true_name}\ntaken for {pred_name} ({count}×)")
        _show(row[1], _first(data.x_train, data.y_train == t),
              f"train: {true_name}\n({int(np.sum(data.y_test == t))} test images)")
        _show(row[2], _first(data.x_train, data.y_train == p),
              f"train: {pred_name}\n({int(np.sum(y_pred == p))} predicted)")
    fig.suptitle(f"Most frequent probe confusions ({int(np.sum(y_pred != data.y_test))} of "
                 f"{len(data.y_test)} test images wrong)", fontsize=9)
    fig.tight_layout()
    return fig


def catalogue_gallery(data: ProbeData) -> np.ndarray:
    """Indices of the training images a shelf query is matched against: the catalogue shots.

    When the training split has no catalogue images (an image-folder target), every training image is
    the gallery.
    """
    catalogue = np.flatnonzero([r.domain == "catalogue" for r in data.train])
    return catalogue if catalogue.size else np.arange(len(data.train))


def shelf_to_catalogue_figure(
    features: tuple[np.ndarray, np.ndarray], data: ProbeData, *, n_queries: int = 6, k: int = 4, seed: int = 0
) -> Figure:
    """Shelf test images and their ``k`` nearest catalogue images by cosine similarity of the features.

    This is the retail gap in one picture: a query taken on a shelf, the catalogue shots the frozen
    features place nearest. A green frame marks the query's own product, red another.

    Args:
        features: (train, test) features, rows aligned with ``data.x_train`` and ``data.x_test``.
        data: the images and labels the features were extracted from.
        n_queries: shelf queries drawn (seeded) from the test images.
        k: neighbours per query (at most the gallery's size).
    """
    f_train, f_test = features
    gallery = catalogue_gallery(data)
    k = min(k, len(gallery))
    pick = np.random.default_rng(seed).choice(len(f_test), size=min(n_queries, len(f_test)), replace=False)
    neighbours = gallery[nearest(f_test[pick], f_train[gallery], k)]
    fig, axes = plt.subplots(len(pick), k + 1, figsize=(1.5 * (k + 1), 1.6 * len(pick)), squeeze=False)
    for row, query, found in zip(axes, pick, neighbours):
        _show(row[0], data.x_test[query], f"shelf: {data.classes[data.y_test[query]]}"[:28])
        for j, (ax, n) in enumerate(zip(row[1:], found), start=1):
            _show(ax, data.x_train[n], f"#{j} {data.classes[data.y_train[n]]}"[:24])
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:green" if data.y_train[n] == data.y_test[query] else "tab:red")
                spine.set_linewidth(3)
    fig.suptitle("Shelf queries and their nearest catalogue images", fontsize=9)
    fig.tight_layout()
    return fig

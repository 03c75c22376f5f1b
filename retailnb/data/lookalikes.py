"""Groups of look-alike images of a product, and the share of them kept out of training for a threshold.

A product's training photos are often near-copies of each other (the same pack, moments apart), and a
new shelf photo is not. Two things need such photos in whole groups: the out-of-fold scores a rejection
threshold is chosen from (:func:`retailnb.evaluation.rejection.calibration_scores`), and the photos a real
dataset keeps out of the backbone's training so that its thresholds can be chosen on photos no training saw
(``data.calibration_folds``; :func:`calibration_share`).
"""

from __future__ import annotations

import numpy as np
from sklearn.preprocessing import normalize

LOOK_ALIKE_GROUPS = 3
"""Groups of look-alikes per product and fold (:func:`near_copy_folds`). With one group per fold a fold held
out a product's most unlike images, and thresholds accepted more than asked (97-100% for the 95% asked on the
Grocery Store Dataset's class-disjoint target, groups by k-means; two: 95-98%); with three, 95-97% for every
score but ``energy`` and ``relative_mahalanobis``, and 94-98% on the synthetic default (noisy student, three
seeds; ``benchmarks/bench_rejection.py``)."""

THUMBNAIL_SIDE = 8
"""Side of the colour thumbnails :func:`calibration_share` groups photos by, in blocks."""

THUMBNAIL_SOURCE = 64
"""Side of the decoded images the data stage makes thumbnails from (the default ``backbone.image_size``)."""


def near_copy_folds(features: np.ndarray, labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """(N,) the fold of each image: each product's images in groups of look-alikes, whole groups to a fold.

    Each product's images are grouped around :data:`LOOK_ALIKE_GROUPS` centres per fold, chosen among its
    unit ``features`` by k-means++ seeding (scikit-learn's ``kmeans_plusplus``, ``seed``: spread-out images,
    each image joining its nearest centre; a few milliseconds a product, where k-means itself took 40), and
    group ``j`` goes to fold ``j % folds``. A product with no more images than groups deals them out to the
    folds in turn (one image per fold, for up to ``folds``).

    Raises:
        ValueError: fewer than 2 folds.
    """
    from sklearn.cluster import kmeans_plusplus

    unit, labels = normalize(np.asarray(features, dtype=np.float64)), np.asarray(labels)
    if folds < 2:
        raise ValueError(f"calibration needs at least 2 folds, got {folds}")
    groups = LOOK_ALIKE_GROUPS * folds
    out = np.zeros(len(labels), dtype=np.int64)
    for product in np.unique(labels):
        rows = np.flatnonzero(labels == product)
        if len(rows) <= groups:
            out[rows] = np.arange(len(rows)) % folds
            continue
        centres, _ = kmeans_plusplus(unit[rows], groups, random_state=seed)
        out[rows] = (unit[rows] @ centres.T).argmax(axis=1) % folds
    return out


def thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, 3 * THUMBNAIL_SIDE**2) float32: each (H, W, C) image as the mean colour of its blocks on an
    :data:`THUMBNAIL_SIDE` grid (rows and columns past a multiple of the grid dropped)."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or min(x.shape[1:3]) < THUMBNAIL_SIDE:
        raise ValueError(f"images must be (N, H, W, C) with H, W >= {THUMBNAIL_SIDE}, got shape {x.shape}")
    n, h, w, c = x.shape
    s = THUMBNAIL_SIDE
    blocks = x[:, : h - h % s, : w - w % s].reshape(n, s, h // s, s, w // s, c)
    return blocks.mean(axis=(2, 4)).reshape(n, -1)


def calibration_share(images: np.ndarray, labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """(N,) bool: the photos kept out of training for the rejection thresholds: of each product's photos,
    whole groups of look-alikes, one fold in ``folds`` (:func:`near_copy_folds` on :func:`thumbnails`,
    centred on these photos' mean: no backbone has seen them yet).

    A product with at most :data:`LOOK_ALIKE_GROUPS` x ``folds`` photos keeps its first one out.
    """
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    out = np.zeros(len(labels), dtype=bool)
    if not len(labels):
        return out
    thumbs = thumbnails(images)
    return near_copy_folds(thumbs - thumbs.mean(axis=0), labels, folds, seed) == 0

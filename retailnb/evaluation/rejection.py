"""Unknown-product rejection: answer "unknown" when an image is unlike every enrolled product.

A probe over the enrolled products always names one of them, and on a real shelf many photos show
products that are not (yet) enrolled. Each image gets a *known-ness* score, higher for images that look
like an enrolled product, and an image whose score is below a threshold is rejected. The first three:

* ``msp``: the probe's maximum softmax probability (Hendrycks & Gimpel, ICLR 2017);
* ``energy``: the log-sum-exp of the probe's logits, the negative free energy (Liu et al., NeurIPS 2020),
  which unlike the softmax keeps how large the logits are, not only how they compare;
* ``prototype``: the cosine similarity of the L2-normalised feature to its nearest class prototype, the
  normalised mean of the class's normalised training features; it needs no probe at all.

and ``knn``, ``mahalanobis`` and ``relative_mahalanobis`` (:func:`known_scores`). With images the store knows
it does not sell (negatives), ``prototype`` and ``knn`` subtract the similarity to the nearest of them, and
``background`` is the probability that a probe over the enrolled products plus one class of the negatives
gives the enrolled products.

The threshold is chosen from the enrolled products' own images at a target known-product recall (the
share of known images accepted): :func:`threshold_at_recall` of their *held-out* scores. The scores of
the images a probe was fitted on are over-confident (the probe has seen them), and so are those of images
scored against near-copies of themselves, so the calibration scores are out of fold, each fold holding out
whole groups of a product's look-alike images (:func:`calibration_scores`,
:func:`~retailnb.data.lookalikes.near_copy_folds`).
Nothing here sees an unknown product: the threshold is what a store can compute on
day one, and :func:`rejection_metrics` measures it on products held out of the enrolment.

A second unknown set, where the target has one
(:func:`retailnb.evaluation.compare.source_unknown_records`): the source's *unlabelled-only* products,
which the backbones saw in pretraining and the noisy student without a label and which no store enrolled
("products on the shelf that are not in the catalogue"). They are scored against the known test images
at the same threshold (:func:`source_metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import logsumexp, softmax
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import normalize as sk_normalize

from retailnb.data.lookalikes import near_copy_folds
from retailnb.config.score_names import (
    BACKGROUND_SCORES,
    NEGATIVE_SCORES,
    PROBE_SCORES,
    SCORES,
    BundleScore,
    check_bundle_score,
)

log = logging.getLogger(__name__)

LogitsFit = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]
"""Fits a probe on (features, labels) and returns its logits function (N, D) -> (N, K) over the sorted
labels it saw: how :func:`calibration_scores` refits the probe on each fold."""


def background_training_set(features: np.ndarray, labels: np.ndarray,
                            negatives: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """What the ``background`` score's probe is fitted on: the enrolled images (``labels`` ``0..K-1``) and
    ``negatives`` as one more class, ``K``, all L2-normalised (:func:`normalize`; the probe reads unit
    features, as the other scores on features compare them: on the Grocery Store Dataset's class-disjoint
    target that told held-out products apart better than the raw features, AUROC 0.763 [0.749, 0.778]
    against 0.742 [0.710, 0.775], noisy student, three seeds).

    Raises:
        ValueError: no negatives.
    """
    if negatives is None or len(negatives) == 0:
        raise ValueError("the background score needs negatives: images of products the store does not sell")
    labels = np.asarray(labels)
    background = np.full(len(negatives), int(labels.max()) + 1)
    return np.concatenate([normalize(features), normalize(negatives)]), np.concatenate([labels, background])


def background_fit(fit: LogitsFit, features: np.ndarray, labels: np.ndarray,
                   negatives: np.ndarray | None) -> Callable[[np.ndarray], np.ndarray]:
    """The logits function of a probe ``fit`` on :func:`background_training_set`, which reads unit features:
    its last column is the background (what the ``background`` score reads)."""
    logits_of = fit(*background_training_set(features, labels, negatives))
    return lambda x: logits_of(normalize(x))


def normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in float64 (a zero row stays zero): scikit-learn's ``normalize``."""
    return np.asarray(sk_normalize(np.asarray(features, dtype=np.float64)))


def class_prototypes(features: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, D) unit prototypes: the normalised mean of each class's normalised features.

    Raises:
        ValueError: some class index in ``0..n_classes-1`` has no feature.
    """
    x, labels = normalize(features), np.asarray(labels)
    counts = np.bincount(labels, minlength=n_classes)
    if len(counts) > n_classes or (counts[:n_classes] == 0).any():
        raise ValueError(f"every class 0..{n_classes - 1} needs at least one feature; counts {counts.tolist()}")
    sums = np.zeros((n_classes, x.shape[1]))
    np.add.at(sums, labels, x)
    return normalize(sums)


@dataclass(frozen=True)
class Gaussians:
    """Class-conditional Gaussians with a shared covariance on unit features, and one for all of them (the
    background), as the Mahalanobis scores read them (Lee et al., NeurIPS 2018; Ren et al. 2021).

    Both covariances are Ledoit-Wolf shrinkage estimates (scikit-learn), which stay invertible with fewer
    images than feature dimensions, as in few-shot enrolment.
    """

    means: np.ndarray  # (K, D)
    precision: np.ndarray  # (D, D), shared by the classes
    background_mean: np.ndarray  # (D,)
    background_precision: np.ndarray  # (D, D)

    @classmethod
    def fit(cls, unit: np.ndarray, labels: np.ndarray, n_classes: int) -> Gaussians:
        """Fit on (N, D) unit features whose labels cover ``0..n_classes-1``."""
        means = np.zeros((n_classes, unit.shape[1]))
        np.add.at(means, labels, unit)
        means /= np.maximum(np.bincount(labels, minlength=n_classes), 1)[:, None]
        shared = LedoitWolf(assume_centered=True).fit(unit - means[labels])
        background = LedoitWolf().fit(unit)
        return cls(means, shared.precision_, background.location_, background.precision_)

    def class_distances(self, unit: np.ndarray) -> np.ndarray:
        """(N,) squared Mahalanobis distance of each unit feature to its nearest class mean."""
        xp = unit @ self.precision
        d = (xp * unit).sum(axis=1)[:, None] - 2 * xp @ self.means.T + ((self.means @ self.precision) * self.means).sum(axis=1)
        return np.asarray(d.min(axis=1))

    def background_distances(self, unit: np.ndarray) -> np.ndarray:
        """(N,) squared Mahalanobis distance of each unit feature to the background Gaussian."""
        c = unit - self.background_mean
        return np.asarray(((c @ self.background_precision) * c).sum(axis=1))


class Reference:
    """What the feature scores compare an image with: the enrolled images and the images the store does not sell.

    Args:
        features: (N, D) features of the enrolled images.
        labels: (N,) their product indices, covering ``0..n_classes-1``.
        n_classes: products enrolled.
        negatives: (M, D) features of images no answer may name (outlier exposure: e.g. the products
            pretraining saw, or a folder the store knows it does not sell), or None.
        knn_k: the neighbour whose similarity the ``knn`` score is (1: the nearest enrolled image).
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray, n_classes: int, *,
                 negatives: np.ndarray | None = None, knn_k: int = 1) -> None:
        if knn_k < 1:
            raise ValueError(f"knn_k must be at least 1, got {knn_k}")
        self.unit = normalize(features)
        self.labels = np.asarray(labels)
        self.n_classes = n_classes
        self.prototypes = class_prototypes(self.unit, self.labels, n_classes)
        self.negatives = None if negatives is None or len(negatives) == 0 else normalize(negatives)
        self.knn_k = knn_k
        self._gaussians: Gaussians | None = None

    @property
    def gaussians(self) -> Gaussians:
        """The Mahalanobis scores' Gaussians, fitted on first use."""
        if self._gaussians is None:
            self._gaussians = Gaussians.fit(self.unit, self.labels, self.n_classes)
        return self._gaussians

    def negative_similarity(self, unit: np.ndarray) -> np.ndarray:
        """(N,) cosine similarity of each unit feature to its nearest negative; 0 without negatives."""
        if self.negatives is None:
            return np.zeros(len(unit))
        return np.asarray((unit @ self.negatives.T).max(axis=1))

    def kth_similarity(self, unit: np.ndarray) -> np.ndarray:
        """(N,) cosine similarity of each unit feature to its ``knn_k``-th nearest enrolled image (the last
        one when there are fewer)."""
        sims = unit @ self.unit.T
        k = min(self.knn_k, sims.shape[1])
        return np.asarray(-np.partition(-sims, k - 1, axis=1)[:, k - 1])


def known_scores(score: BundleScore, *, logits: np.ndarray | None = None, features: np.ndarray | None = None,
                 reference: Reference | None = None) -> np.ndarray:
    """(N,) known-ness of each image, higher for images like an enrolled product.

    ``msp`` and ``energy`` read the probe's (N, K) ``logits``; ``background`` the (N, K + 1) logits of the
    probe whose last class is the store's negatives (:func:`background_fit`): one minus that class's
    probability (a probe with an extra class of outliers, as in outlier exposure, Hendrycks et al., ICLR
    2019). The others read (N, D) ``features`` and the enrolled images' :class:`Reference`:

    * ``prototype``: cosine similarity to the nearest class prototype;
    * ``knn``: cosine similarity to the ``knn_k``-th nearest enrolled image (Sun et al., ICML 2022);
    * ``mahalanobis``: minus the squared Mahalanobis distance to the nearest class mean, shared covariance;
    * ``relative_mahalanobis``: the same minus the background Gaussian's distance (Ren et al. 2021), which
      discounts directions every image varies in.

    The scores of :data:`NEGATIVE_SCORES` subtract the similarity to the nearest of the reference's
    negatives when it has some.
    """
    score = check_bundle_score(score)
    if score in PROBE_SCORES or score in BACKGROUND_SCORES:
        if logits is None:
            raise ValueError(f"the {score} score needs the probe's logits")
        z = np.asarray(logits, dtype=np.float64)
        if score in BACKGROUND_SCORES:
            return np.asarray(1.0 - softmax(z, axis=1)[:, -1])
        if score == "msp":
            return np.asarray(softmax(z, axis=1).max(axis=1))
        return np.asarray(logsumexp(z, axis=1))
    if features is None or reference is None:
        raise ValueError(f"the {score} score needs features and the enrolled images' reference")
    unit = normalize(features)
    if score == "prototype":
        return np.asarray((unit @ reference.prototypes.T).max(axis=1)) - reference.negative_similarity(unit)
    if score == "knn":
        return reference.kth_similarity(unit) - reference.negative_similarity(unit)
    distance = reference.gaussians.class_distances(unit)
    if score == "relative_mahalanobis":
        distance = distance - reference.gaussians.background_distances(unit)
    return -distance


def calibration_scores(score: BundleScore, features: np.ndarray, labels: np.ndarray, *, fit: LogitsFit | None = None,
                       folds: int = 3, seed: int = 0, negatives: np.ndarray | None = None,
                       knn_k: int = 1, fold_of: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold known-ness of the enrolled images: what the threshold is chosen from.

    The images are split into ``folds`` folds of look-alikes (:func:`~retailnb.data.lookalikes.near_copy_folds`),
    and each fold is scored by what the other folds give: prototypes and nearest images (``prototype``, ``knn``,
    less the similarity to the nearest of ``negatives``), Gaussians (``mahalanobis``, ``relative_mahalanobis``), or a
    probe ``fit`` (``msp``, ``energy``; ``background``: with ``negatives`` as one more class). An image
    whose product has no image in the other folds cannot be scored as known (NaN). ``fold_of`` gives each
    image's fold instead (``folds`` is then unused); an image of a negative fold is never held out, only fitted
    on, and stays NaN.

    Folds of look-alikes rather than shuffled folds or leave-one-out: on the Grocery Store Dataset's
    class-disjoint target (noisy student, three seeds), whose products' training photos are near-copies,
    thresholds for 95% recall accepted 79% (``knn``, leave-one-out), 88% (``mahalanobis``, shuffled folds)
    and 85% (``background``) of new known photos, and 97%, 96% and 96% with look-alike folds; on the
    synthetic default (no near-copies) 93-98% either way, relative Mahalanobis aside (99%;
    :data:`~retailnb.data.lookalikes.LOOK_ALIKE_GROUPS`).
    Leave-one-out class means with the covariance of all the images would be cheaper for the Gaussians, but
    the image then shapes the covariance it is measured with (13% accepted for 95% asked, measured once).
    """
    score = check_bundle_score(score)
    features, labels = np.asarray(features), np.asarray(labels)
    if (score in PROBE_SCORES or score in BACKGROUND_SCORES) and fit is None:
        raise ValueError(f"the {score} score needs a probe fit to calibrate")
    if score in BACKGROUND_SCORES and (negatives is None or len(negatives) == 0):
        raise ValueError(f"the {score} score needs negatives: images of products the store does not sell")
    out = np.full(len(labels), np.nan)
    if len(labels) < 2:
        return out
    if fold_of is None:
        fold_of = near_copy_folds(features, labels, folds, seed)
    elif np.shape(fold_of) != labels.shape:
        raise ValueError(f"fold_of has shape {np.shape(fold_of)}; the labels have {labels.shape}")
    fold_of = np.asarray(fold_of, dtype=np.int64)
    for fold in range(int(fold_of.max()) + 1):
        train, held = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        seen = np.unique(labels[train])
        if len(seen) < 2 and score not in NEGATIVE_SCORES:  # a probe or a shared covariance needs two products
            continue
        scorable = held[np.isin(labels[held], seen)]
        if not scorable.size:
            continue
        train_labels = np.searchsorted(seen, labels[train])
        if score in PROBE_SCORES:
            assert fit is not None
            out[scorable] = known_scores(score, logits=fit(features[train], train_labels)(features[scorable]))
        elif score in BACKGROUND_SCORES:
            assert fit is not None
            logits_of = background_fit(fit, features[train], train_labels, negatives)
            out[scorable] = known_scores(score, logits=logits_of(features[scorable]))
        else:
            reference = Reference(features[train], train_labels, len(seen), knn_k=knn_k,
                                  negatives=negatives if score in NEGATIVE_SCORES else None)
            out[scorable] = known_scores(score, features=features[scorable], reference=reference)
    return out


def calibration_folds(calibrate: np.ndarray | None, n: int) -> np.ndarray | None:
    """The ``fold_of`` of :func:`calibration_scores` for ``n`` enrolled images of which ``calibrate`` marks those
    no training saw: the marked images are the one fold scored (0), the rest only fitted on (-1).

    None (look-alike folds over every image) when ``calibrate`` is None or marks every image: with no image
    trained on, every image is as new as a shelf photo.

    Raises:
        ValueError: ``calibrate`` is not ``n`` flags, or marks none.
    """
    if calibrate is None:
        return None
    flags = np.asarray(calibrate)
    if flags.shape != (n,) or flags.dtype != bool:
        raise ValueError(f"calibrate must be {n} booleans, one per enrolled image; got {flags.dtype} of shape "
                         f"{flags.shape}")
    if not flags.any():
        raise ValueError("calibrate marks none of the enrolled images: it names the photos no training saw, "
                         "which the threshold is chosen on")
    return None if flags.all() else np.where(flags, 0, -1)


def unseen_photos(paths: Sequence[Path], trained: frozenset[Path]) -> np.ndarray | None:
    """(N,) bool: which of the enrolled photos (resolved ``paths``) trained no backbone (are not among the resolved
    ``trained`` paths, :meth:`~retailnb.data.manifest.Manifest.training_paths`): the photos a rejection threshold
    is chosen on (the ``calibrate`` of :func:`evaluate_rejection` and of the bundle's fits). None when every
    photo trained a backbone, or there are none: no photo is left to choose on, and a threshold from the photos
    a backbone knows accepts fewer new photos than asked (the caller says so).
    """
    unseen = np.array([path not in trained for path in paths], dtype=bool)
    return unseen if unseen.any() else None


def threshold_at_recall(scores: np.ndarray, recall: float) -> float:
    """The largest threshold that accepts at least ``recall`` of ``scores`` (score >= threshold: known).

    NaN scores are ignored; with none left the threshold is ``-inf`` (accept everything), the only
    choice that keeps the recall promise.
    """
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    s = np.asarray(scores, dtype=np.float64)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return float("-inf")
    needed = int(np.ceil(recall * s.size - 1e-9))  # images that must score at or above the threshold
    return float(np.sort(s)[s.size - needed])


def _auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """AUROC of ``known`` scores (the positive class) against ``unknown`` ones; 0.5 is chance."""
    y = np.concatenate([np.ones(known.size), np.zeros(unknown.size)])
    return float(roc_auc_score(y, np.concatenate([known, unknown])))


def rejection_metrics(known: np.ndarray, unknown: np.ndarray, known_correct: np.ndarray,
                      threshold: float) -> dict[str, float]:
    """How well a score separates known from unknown products, and what its threshold does.

    Args:
        known: scores of test images of enrolled products.
        unknown: scores of test images of products that were not enrolled.
        known_correct: (len(known),) whether the probe names each known image's product correctly.
        threshold: images scoring below it are rejected as unknown.

    Returns:
        ``auroc`` (known as the positive class; 0.5 is chance), ``known_accuracy`` (known images accepted
        AND named correctly, over all known images: a rejected known image counts as an error),
        ``closed_accuracy`` (known images named correctly, rejection off),
        ``known_acceptance`` (the recall actually reached on test), ``unknown_rejection`` (unknown images
        rejected), and ``threshold``.
    """
    known, unknown = np.asarray(known, dtype=np.float64), np.asarray(unknown, dtype=np.float64)
    correct = np.asarray(known_correct, dtype=bool)
    if known.size == 0 or unknown.size == 0 or correct.shape != known.shape:
        raise ValueError("rejection metrics need known and unknown scores, and one correctness per known image")
    accepted = known >= threshold
    return {
        "auroc": _auroc(known, unknown),
        "known_accuracy": float((accepted & correct).mean()),
        "closed_accuracy": float(correct.mean()),
        "known_acceptance": float(accepted.mean()),
        "unknown_rejection": float((unknown < threshold).mean()),
        "threshold": float(threshold),
    }


def source_metrics(known: np.ndarray, source: np.ndarray, threshold: float) -> dict[str, float]:
    """How well a score tells known products' test images from the source's unlabelled-only products.

    Args:
        known: scores of test images of enrolled products.
        source: scores of the images of the source's unlabelled-only products (never enrolled).
        threshold: the same threshold as :func:`rejection_metrics` (chosen on the enrolled images).

    Returns:
        ``source_auroc`` (known as the positive class; 0.5 is chance) and ``source_unknown_rejection``
        (share of the source images scoring below ``threshold``).
    """
    known, source = np.asarray(known, dtype=np.float64), np.asarray(source, dtype=np.float64)
    if known.size == 0 or source.size == 0:
        raise ValueError("source rejection metrics need known scores and at least one source-product score")
    return {
        "source_auroc": _auroc(known, source),
        "source_unknown_rejection": float((source < threshold).mean()),
    }


def group_metrics(known: np.ndarray, sibling: np.ndarray, new_group: np.ndarray) -> dict[str, float]:
    """How well a score tells known products' test images from held-out products of an enrolled product's group
    (``sibling``: another variant of a kind or brand the store sells) and of a group with no enrolled product
    (``new_group``).

    Returns:
        ``sibling_auroc`` and ``new_group_auroc`` (known as the positive class; 0.5 is chance), each only when
        its set has a score.

    Raises:
        ValueError: no known score, or neither set has one.
    """
    known = np.asarray(known, dtype=np.float64)
    if known.size == 0 or np.size(sibling) + np.size(new_group) == 0:
        raise ValueError("group rejection metrics need known scores and at least one held-out product's score")
    out = {}
    for name, unknown in (("sibling_auroc", sibling), ("new_group_auroc", new_group)):
        unknown = np.asarray(unknown, dtype=np.float64)
        if unknown.size:
            out[name] = _auroc(known, unknown)
    return out


def split_known_unknown(labels: np.ndarray, unknown_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of the classes of ``labels`` into known (enrolled) and unknown (held-out) ones.

    At least one class is unknown and at least two stay known (a probe needs two).

    Returns:
        Sorted known and unknown class indices.
    """
    classes = np.unique(np.asarray(labels))
    if not 0.0 < unknown_fraction < 1.0:
        raise ValueError(f"unknown_fraction must be in (0, 1), got {unknown_fraction}")
    if len(classes) < 3:
        raise ValueError(f"holding products out needs at least 3 classes, got {len(classes)}")
    n_unknown = int(np.clip(round(unknown_fraction * len(classes)), 1, len(classes) - 2))
    order = np.random.default_rng(seed).permutation(classes)
    return np.sort(order[n_unknown:]), np.sort(order[:n_unknown])


def evaluate_rejection(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray, *,
                       fit: LogitsFit, unknown_fraction: float, recall: float, seed: int = 0,
                       folds: int = 3, f_source_unknown: np.ndarray | None = None,
                       f_negatives: np.ndarray | None = None, knn_k: int = 1,
                       scores: tuple[BundleScore, ...] = SCORES, groups: Sequence[str] | None = None,
                       more_recalls: Sequence[float] = (), calibrate: np.ndarray | None = None) -> dict[str, Any]:
    """Hold ``unknown_fraction`` of the products out, enrol the rest, and score every rejection score.

    The probe is fitted on the known products' training images only; the test images of known products
    are the positives and those of the held-out products the negatives; each score's threshold comes
    from the known training images alone (:func:`calibration_scores`, :func:`threshold_at_recall`).

    Args:
        f_source_unknown: (M, D) features of a second unknown set, the source's unlabelled-only products
            (:func:`retailnb.evaluation.compare.source_unknown_records`), or None. Given, each score is
            also measured on them against the known test images, at the same threshold
            (:func:`source_metrics`).
        f_negatives: (M, D) features of images the store knows it does not sell, which the scores of
            :data:`NEGATIVE_SCORES` use (:class:`Reference`) and those of :data:`BACKGROUND_SCORES` need
            (:func:`background_fit`), or None.
        knn_k: the neighbour of the ``knn`` score.
        scores: the scores measured (``background`` only with ``f_negatives``).
        groups: the group of each class index (the product's kind or brand family, e.g. the Grocery Store
            Dataset's coarse class), or None. Given, the held-out products are also measured in two parts
            (:func:`group_metrics`): siblings, whose group has an enrolled product, and products of a new group.
        more_recalls: further known-product recalls to measure each score's threshold at (a trade-off of
            rejection against accuracy), from the same fits and calibration scores as ``recall``.
        calibrate: (N_train,) bool, the training images whose scores choose the thresholds, each scored by
            what the other known training images give; or None: every known training image, out of fold in
            look-alike folds. For a backbone that trained on some of the store's photos: its thresholds come
            from the photos it did not see, which a new photo resembles.

    Returns:
        ``n_known``/``n_unknown`` (products), ``recall`` (the target), and per score the dict of
        :func:`rejection_metrics`, plus that of :func:`source_metrics` when ``f_source_unknown`` is given
        and that of :func:`group_metrics` when ``groups`` is (with ``n_sibling``/``n_new_group`` products);
        with ``more_recalls``, each score's ``at_recall`` maps each of them (as ``f"{recall:g}"``) to the dicts of
        :func:`rejection_metrics` and :func:`source_metrics` at its threshold.

    Raises:
        ValueError: ``f_source_unknown`` has no rows (pass None for no second set), ``groups`` does not
            name every class index of ``y_train``, or ``calibrate`` is not one flag per training image or
            marks no known product's image (:func:`calibration_folds`).
    """
    f_train, y_train, f_test, y_test = map(np.asarray, (f_train, y_train, f_test, y_test))
    if calibrate is not None and np.shape(calibrate) != y_train.shape:
        raise ValueError(f"calibrate has shape {np.shape(calibrate)}; y_train has {y_train.shape}")
    if f_source_unknown is not None and len(f_source_unknown) == 0:
        raise ValueError("f_source_unknown has no rows; pass None when the target has no source products")
    if groups is not None and len(groups) <= int(y_train.max()):
        raise ValueError(f"groups names {len(groups)} classes; the labels go up to class index {int(y_train.max())}")
    known_classes, unknown_classes = split_known_unknown(y_train, unknown_fraction, seed)
    remap = {int(c): i for i, c in enumerate(known_classes)}
    tr = np.isin(y_train, known_classes)
    te_known, te_unknown = np.isin(y_test, known_classes), np.isin(y_test, unknown_classes)
    x_tr, y_tr = f_train[tr], np.array([remap[int(c)] for c in y_train[tr]])
    y_te = np.array([remap[int(c)] for c in y_test[te_known]])
    fold_of = None if calibrate is None else calibration_folds(np.asarray(calibrate)[tr], int(tr.sum()))
    logits_of = fit(x_tr, y_tr)
    reference = Reference(x_tr, y_tr, len(known_classes), negatives=f_negatives, knn_k=knn_k)
    sets = {"known": f_test[te_known], "unknown": f_test[te_unknown]}
    if f_source_unknown is not None:
        sets["source"] = np.asarray(f_source_unknown)
    result: dict[str, Any] = {"n_known": len(known_classes), "n_unknown": len(unknown_classes), "recall": recall}
    if groups is not None:
        enrolled = {groups[int(c)] for c in known_classes}
        siblings = [int(c) for c in unknown_classes if groups[int(c)] in enrolled]
        parts = {"sibling": np.isin(y_test, siblings), "new_group": te_unknown & ~np.isin(y_test, siblings)}
        sets.update({name: f_test[rows] for name, rows in parts.items() if rows.any()})
        result.update(n_sibling=len(siblings), n_new_group=len(unknown_classes) - len(siblings))
    logits = {name: logits_of(x) for name, x in sets.items()}
    correct = logits["known"].argmax(axis=1) == y_te
    if any(score in BACKGROUND_SCORES for score in scores):  # the probe with the negatives as one more class
        background_of = background_fit(fit, x_tr, y_tr, f_negatives)
        background_logits = {name: background_of(x) for name, x in sets.items()}
    for score in scores:
        calibration = calibration_scores(score, x_tr, y_tr, fit=fit, folds=folds, seed=seed, negatives=f_negatives,
                                         knn_k=knn_k, fold_of=fold_of)
        if fold_of is not None:
            calibration = calibration[fold_of == 0]
        s = {name: known_scores(score, logits=background_logits[name] if score in BACKGROUND_SCORES else logits[name],
                                features=x, reference=reference) for name, x in sets.items()}
        result[score] = threshold_metrics(s, correct, threshold_at_recall(calibration, recall))
        if groups is not None:
            result[score].update(group_metrics(s["known"], s.get("sibling", np.empty(0)), s.get("new_group", np.empty(0))))
        if more_recalls:
            result[score]["at_recall"] = {f"{r:g}": threshold_metrics(s, correct, threshold_at_recall(calibration, r))
                                          for r in more_recalls}
    return result


def threshold_metrics(scores: Mapping[str, np.ndarray], known_correct: np.ndarray,
                      threshold: float) -> dict[str, float]:
    """:func:`rejection_metrics` of the ``known`` and ``unknown`` scores at ``threshold``, and
    :func:`source_metrics` too when ``scores`` has a ``source`` set."""
    row = rejection_metrics(scores["known"], scores["unknown"], known_correct, threshold)
    if "source" in scores:
        row.update(source_metrics(scores["known"], scores["source"], threshold))
    return row


def two_column_logits(decision: np.ndarray) -> np.ndarray:
    """(N, K) logits from a scikit-learn ``decision_function``: a two-class model's single column ``d`` becomes
    ``[-d/2, d/2]``, whose softmax gives the same probabilities (as :class:`retailnb.bundle.model.LinearProbe`)."""
    d = np.asarray(decision, dtype=np.float64)
    return np.stack([-d / 2, d / 2], axis=1) if d.ndim == 1 else d


def logistic_fit(c: float, *, seed: int = 0, threads: int | None = 1) -> LogitsFit:
    """A :data:`LogitsFit` of the standardised logistic regression of the probes, at a fixed ``c``."""
    from retailnb.evaluation.probe import fit_logistic_probe

    def fit(features: np.ndarray, labels: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        pipe = fit_logistic_probe(features, labels, cs=(c,), seed=seed, threads=threads)
        return lambda x: two_column_logits(pipe.decision_function(x))

    return fit


REJECTION_METRICS = ("auroc", "known_accuracy", "unknown_rejection", "known_acceptance")
"""The measures of :func:`rejection_metrics` that results tables carry for each score."""

SOURCE_METRICS = ("source_auroc", "source_unknown_rejection")
"""The measures of :func:`source_metrics`, carried for each score when the source products were measured."""

GROUP_METRICS = ("sibling_auroc", "new_group_auroc")
"""The measures of :func:`group_metrics`, carried for each score when the products' groups were given."""


def rejection_cells(result: Mapping[str, Any]) -> dict[str, float]:
    """A result of :func:`evaluate_rejection` as flat table cells ``reject_<score>_<measure>``: the
    :data:`REJECTION_METRICS` always, the :data:`SOURCE_METRICS` when the result holds them."""
    return {f"reject_{score}_{measure}": float(result[score][measure])
            for score in SCORES if score in result
            for measure in (*REJECTION_METRICS, *SOURCE_METRICS, *GROUP_METRICS)
            if measure in result[score]}

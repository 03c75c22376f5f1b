"""Unknown-product rejection: answer "unknown" when an image is unlike every enrolled product.

A probe over the enrolled products always names one of them, and on a real shelf many photos show
products that are not (yet) enrolled. Each image gets a *known-ness* score, higher for images that look
like an enrolled product, and an image whose score is below a threshold is rejected. Three scores:

* ``msp``: the probe's maximum softmax probability (Hendrycks & Gimpel, ICLR 2017);
* ``energy``: the log-sum-exp of the probe's logits, the negative free energy (Liu et al., NeurIPS 2020),
  which unlike the softmax keeps how large the logits are, not only how they compare;
* ``prototype``: the cosine similarity of the L2-normalised feature to its nearest class prototype, the
  normalised mean of the class's normalised training features; it needs no probe at all.

The threshold is chosen from the enrolled products' own images at a target known-product recall (the
share of known images accepted): :func:`threshold_at_recall` of their *held-out* scores. The scores of
the images a probe was fitted on are over-confident (the probe has seen them), so the calibration scores
are out of fold (:func:`calibration_scores`): leave-one-out prototypes, and k-fold probes for the
probe-based scores. Nothing here sees an unknown product: the threshold is what a store can compute on
day one, and :func:`rejection_metrics` measures it on products held out of the enrolment.

A second unknown set, where the target has one
(:func:`retailnb.evaluation.compare.source_unknown_records`): the source's *unlabelled-only* products,
which the backbones saw in pretraining and the noisy student without a label and which no store enrolled
("products on the shelf that are not in the catalogue"). They are scored against the known test images
at the same threshold (:func:`source_metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
from scipy.special import logsumexp, softmax
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize as sk_normalize

Score = Literal["msp", "energy", "prototype"]
SCORES: tuple[Score, ...] = ("msp", "energy", "prototype")
"""The known-ness scores :func:`known_scores` computes, in the order results list them."""

LogitsFit = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]
"""Fits a probe on (features, labels) and returns its logits function (N, D) -> (N, K) over the sorted
labels it saw: how :func:`calibration_scores` refits the probe on each fold."""


def check_score(score: str) -> Score:
    """``score`` if it is one of :data:`SCORES`, else a ValueError naming the choices."""
    if score not in SCORES:
        raise ValueError(f"unknown rejection score {score!r}; expected one of {', '.join(SCORES)}")
    return score  # type: ignore[return-value]


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


def known_scores(score: Score, *, logits: np.ndarray | None = None, features: np.ndarray | None = None,
                 prototypes: np.ndarray | None = None) -> np.ndarray:
    """(N,) known-ness of each image, higher for images like an enrolled product.

    ``msp`` and ``energy`` read the probe's (N, K) ``logits``; ``prototype`` reads (N, D) ``features`` and
    the (K, D) unit ``prototypes`` of :func:`class_prototypes`.
    """
    check_score(score)
    if score == "prototype":
        if features is None or prototypes is None:
            raise ValueError("the prototype score needs features and prototypes")
        return np.asarray((normalize(features) @ np.asarray(prototypes).T).max(axis=1))
    if logits is None:
        raise ValueError(f"the {score} score needs the probe's logits")
    z = np.asarray(logits, dtype=np.float64)
    if score == "msp":
        return np.asarray(softmax(z, axis=1).max(axis=1))
    return np.asarray(logsumexp(z, axis=1))


def leave_one_out_prototype_scores(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) each image's similarity to its nearest prototype when its own class prototype leaves it out.

    An image that is its class's only one has no prototype of its own then: NaN (skip it when choosing a
    threshold). The other classes' prototypes are whole.
    """
    x, labels = normalize(features), np.asarray(labels)
    classes, inverse = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(classes), x.shape[1]))
    np.add.at(sums, inverse, x)
    counts = np.bincount(inverse, minlength=len(classes))
    sims = x @ normalize(sums).T  # (N, K): every image against every whole prototype
    own = sums[inverse] - x  # each image's class sum without the image
    rows = np.arange(len(x))
    sims[rows, inverse] = (own * x).sum(axis=1) / np.maximum(np.linalg.norm(own, axis=1), 1e-12)
    out = sims.max(axis=1)
    out[counts[inverse] < 2] = np.nan
    return np.asarray(out)


def calibration_scores(score: Score, features: np.ndarray, labels: np.ndarray, *, fit: LogitsFit | None = None,
                       folds: int = 3, seed: int = 0) -> np.ndarray:
    """Out-of-fold known-ness of the enrolled images: what the threshold is chosen from.

    ``prototype``: leave-one-out (:func:`leave_one_out_prototype_scores`). ``msp``/``energy``: the images
    are split into ``folds`` shuffled folds; each fold is scored by a probe ``fit`` on the others. An
    image whose product has no image in the other folds cannot be scored as known (NaN).
    """
    check_score(score)
    features, labels = np.asarray(features), np.asarray(labels)
    if score == "prototype":
        return leave_one_out_prototype_scores(features, labels)
    if fit is None:
        raise ValueError(f"the {score} score needs a probe fit to calibrate")
    out = np.full(len(labels), np.nan)
    n_splits = min(folds, len(labels))
    if n_splits < 2:
        return out
    for train, held in KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(features):
        seen = np.unique(labels[train])
        if len(seen) < 2:
            continue
        logits_of = fit(features[train], labels[train])
        scorable = held[np.isin(labels[held], seen)]
        if scorable.size:
            out[scorable] = known_scores(score, logits=logits_of(features[scorable]))
    return out


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
        ``known_acceptance`` (the recall actually reached on test), ``unknown_rejection`` (unknown images
        rejected), and ``threshold``.
    """
    known, unknown = np.asarray(known, dtype=np.float64), np.asarray(unknown, dtype=np.float64)
    correct = np.asarray(known_correct, dtype=bool)
    if known.size == 0 or unknown.size == 0 or correct.shape != known.shape:
        raise ValueError("rejection metrics need known and unknown scores, and one correctness per known image")
    y = np.concatenate([np.ones(known.size), np.zeros(unknown.size)])
    accepted = known >= threshold
    return {
        "auroc": float(roc_auc_score(y, np.concatenate([known, unknown]))),
        "known_accuracy": float((accepted & correct).mean()),
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
    y = np.concatenate([np.ones(known.size), np.zeros(source.size)])
    return {
        "source_auroc": float(roc_auc_score(y, np.concatenate([known, source]))),
        "source_unknown_rejection": float((source < threshold).mean()),
    }


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
                       folds: int = 3, f_source_unknown: np.ndarray | None = None) -> dict[str, Any]:
    """Hold ``unknown_fraction`` of the products out, enrol the rest, and score every rejection score.

    The probe is fitted on the known products' training images only; the test images of known products
    are the positives and those of the held-out products the negatives; each score's threshold comes
    from the known training images alone (:func:`calibration_scores`, :func:`threshold_at_recall`).

    Args:
        f_source_unknown: (M, D) features of a second unknown set, the source's unlabelled-only products
            (:func:`retailnb.evaluation.compare.source_unknown_records`), or None. Given, each score is
            also measured on them against the known test images, at the same threshold
            (:func:`source_metrics`).

    Returns:
        ``n_known``/``n_unknown`` (products), ``recall`` (the target), and per score the dict of
        :func:`rejection_metrics`, plus that of :func:`source_metrics` when ``f_source_unknown`` is given.

    Raises:
        ValueError: ``f_source_unknown`` has no rows (pass None for no second set).
    """
    f_train, y_train, f_test, y_test = map(np.asarray, (f_train, y_train, f_test, y_test))
    if f_source_unknown is not None and len(f_source_unknown) == 0:
        raise ValueError("f_source_unknown has no rows; pass None when the target has no source products")
    known_classes, unknown_classes = split_known_unknown(y_train, unknown_fraction, seed)
    remap = {int(c): i for i, c in enumerate(known_classes)}
    tr = np.isin(y_train, known_classes)
    te_known, te_unknown = np.isin(y_test, known_classes), np.isin(y_test, unknown_classes)
    x_tr, y_tr = f_train[tr], np.array([remap[int(c)] for c in y_train[tr]])
    y_te = np.array([remap[int(c)] for c in y_test[te_known]])
    logits_of = fit(x_tr, y_tr)
    logits_known, logits_unknown = logits_of(f_test[te_known]), logits_of(f_test[te_unknown])
    correct = logits_known.argmax(axis=1) == y_te
    protos = class_prototypes(x_tr, y_tr, len(known_classes))
    kw_source: dict[str, Any] | None = None
    if f_source_unknown is not None:
        f_source = np.asarray(f_source_unknown)
        kw_source = {"logits": logits_of(f_source), "features": f_source, "prototypes": protos}
    result: dict[str, Any] = {"n_known": len(known_classes), "n_unknown": len(unknown_classes), "recall": recall}
    for score in SCORES:
        kw_known: dict[str, Any] = {"logits": logits_known, "features": f_test[te_known], "prototypes": protos}
        kw_unknown: dict[str, Any] = {"logits": logits_unknown, "features": f_test[te_unknown], "prototypes": protos}
        threshold = threshold_at_recall(calibration_scores(score, x_tr, y_tr, fit=fit, folds=folds, seed=seed), recall)
        known = known_scores(score, **kw_known)
        result[score] = rejection_metrics(known, known_scores(score, **kw_unknown), correct, threshold)
        if kw_source is not None:
            result[score].update(source_metrics(known, known_scores(score, **kw_source), threshold))
    return result


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


def rejection_cells(result: Mapping[str, Any]) -> dict[str, float]:
    """A result of :func:`evaluate_rejection` as flat table cells ``reject_<score>_<measure>``: the
    :data:`REJECTION_METRICS` always, the :data:`SOURCE_METRICS` when the result holds them."""
    return {f"reject_{score}_{measure}": float(result[score][measure])
            for score in SCORES if score in result for measure in (*REJECTION_METRICS, *SOURCE_METRICS)
            if measure in result[score]}

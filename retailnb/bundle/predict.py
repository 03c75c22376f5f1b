"""Predictions of a bundle: the most probable products of images, features or image files, whether each is
a known product at all, and what a bundle is (:func:`describe_bundle`).

An image whose known-ness score (:mod:`retailnb.evaluation.rejection`) is below the bundle's
:class:`~retailnb.bundle.model.Rejection` threshold is not ``known``: its answer is
:data:`~retailnb.bundle.model.UNKNOWN`. The scores on features compare an image with the bundle's stored
training features and its negatives (:func:`reference`). A bundle written before rejection existed rejects
nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from retailnb.bundle.embed import embed, embed_files
from retailnb.bundle.info import describe
from retailnb.bundle.io import bundle_meta, load_bundle
from retailnb.bundle.choices import ON_ERROR
from retailnb.bundle.model import Bundle, LinearProbe, PathLike, Predictions, check_features
from retailnb.evaluation.rejection import Reference, known_scores, normalize
from retailnb.config.score_names import BACKGROUND_SCORES, PROBE_SCORES, check_bundle_score


def _require_probe(bundle: Bundle) -> LinearProbe:
    if bundle.probe is None:
        raise ValueError("this bundle has no products yet: fit a probe first (fit_probe / `retailnb fit`)")
    return bundle.probe


def reference(bundle: Bundle) -> Reference:
    """What the feature scores compare an image with: the bundle's stored training features and labels, and
    its negatives (:class:`retailnb.evaluation.rejection.Reference`).

    Built from the stored features rather than stored, so it always follows the products added and
    removed; prototypes are one pass over N x D numbers, the Mahalanobis scores' Gaussians are fitted on
    first use.

    Raises:
        ValueError: the bundle has no products.
    """
    _require_probe(bundle)
    return Reference(bundle.features, bundle.labels, len(bundle.class_names), negatives=bundle.negatives)


def bundle_known_scores(bundle: Bundle, features: np.ndarray, score: str | None = None) -> np.ndarray:
    """(N,) known-ness of (N, D) features under ``score`` (default: the bundle's rejection score), higher for
    images more like an enrolled product (:func:`retailnb.evaluation.rejection.known_scores`).

    ``msp`` and ``energy`` read the probe's logits, ``background`` the logits of the bundle's
    :attr:`~retailnb.bundle.model.Bundle.background` probe on unit features; the other scores read the
    features against :func:`reference` (the stored training features, and the negatives for ``prototype``
    and ``knn``).

    Raises:
        ValueError: the bundle has no probe, an unknown score, ``background`` without the bundle's background
            probe, or features that do not fit the backbone.
    """
    probe = _require_probe(bundle)
    score = check_bundle_score(score or (bundle.rejection.score if bundle.rejection
                                         else bundle.settings.rejection_score))
    features = check_features(bundle, features, "features")
    if score in PROBE_SCORES:
        return known_scores(score, logits=probe.logits(features))
    if score in BACKGROUND_SCORES:
        if bundle.background is None:
            raise ValueError("this bundle has no background probe: it is fitted when the bundle rejects with the "
                             "background score (`retailnb add-negatives IMAGES --rejection-score background`)")
        return known_scores(score, logits=bundle.background.logits(normalize(features)))
    return known_scores(score, features=features, reference=reference(bundle))


def predict_features(bundle: Bundle, features: np.ndarray, k: int = 5, *, reject: bool = True) -> Predictions:
    """The ``k`` most probable products for each row of ``features`` (at most every product), and whether
    each is a known product at all.

    Args:
        bundle: a bundle with a probe.
        features: (N, D) features of its backbone.
        k: products per image.
        reject: mark images scoring below the bundle's rejection threshold as not ``known`` (their
            :attr:`Predictions.answers` is :data:`UNKNOWN`); False takes every image for a known product.
            A bundle without rejection (an older file) rejects nothing either way.

    Raises:
        ValueError: the bundle has no probe, ``k`` is below 1, or the features do not fit the backbone.
    """
    probe = _require_probe(bundle)
    if k < 1:
        raise ValueError(f"k (top-k) must be at least 1, got {k}")
    features = check_features(bundle, features, "features")
    p = probe.probabilities(features)
    k = min(k, p.shape[1])
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    predictions = Predictions(order, np.take_along_axis(p, order, axis=1), bundle.class_names, p,
                              known=np.ones(len(features), dtype=bool))
    rejection = bundle.rejection
    if rejection is None:
        return predictions
    scores = bundle_known_scores(bundle, features, rejection.score)
    if not (reject and rejection.active):
        return predictions._replace(known_scores=scores, rejection_score=rejection.score)
    return predictions._replace(known_scores=scores, known=scores >= rejection.threshold,
                                threshold=rejection.threshold, rejection_score=rejection.score)


def predict(bundle: Bundle, images: np.ndarray | torch.Tensor, k: int = 5, *, reject: bool = True) -> Predictions:
    """The ``k`` most probable products of each uint8 image (see :func:`embed` for the layout), and whether
    each is a known product (``reject``: see :func:`predict_features`)."""
    _require_probe(bundle)
    return predict_features(bundle, embed(bundle, images), k, reject=reject)


def predict_files(
    bundle: Bundle | PathLike,
    images: Sequence[PathLike],
    k: int = 5,
    *,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    on_error: str = "raise",
    reject: bool = True,
) -> Predictions:
    """The ``k`` most probable products of image files, in one call: what ``retailnb predict`` computes.

    Example::

        predictions = predict_files("shop.bundle", ["shelf_crops/"], k=3)
        for path, names, answer in zip(predictions.paths, predictions.names(), predictions.answers):
            print(path, names, answer)  # answer: the top product, or "unknown"
        predictions.probabilities  # (N, K), columns named by predictions.classes_

    Args:
        bundle: a loaded bundle (run where its backbone is), or a bundle file, loaded onto ``auto``
            (CUDA when available; load it yourself with :func:`load_bundle` to choose).
        images: image files and folders of images (every image below a folder, sorted), as
            :func:`embed_files` takes them.
        k: products per image (at most every product).
        batch_size: see :func:`embed_files`.
        workers: see :func:`embed_files`.
        progress: see :func:`embed_files`.
        on_error: an image that cannot be read: ``"raise"`` (the default) stops at the first; ``"skip"``
            predicts the others and returns the errors in ``failures`` (see :func:`embed_files`).
        reject: see :func:`predict_features`.

    Returns:
        The predictions, with the image file of each row in ``paths``.

    Raises:
        FileNotFoundError: the bundle file, an image or a folder is missing.
        BundleError: the bundle file is not a bundle of this format.
        ImageError: with ``"raise"``, an image cannot be read; the message names it.
        ValueError: the bundle has no products, no images are given, an unknown ``on_error``, or every
            image is unreadable (``"skip"``; the message names the first).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle, device="auto")
    _require_probe(bundle)
    done = embed_files(bundle, images, batch_size=batch_size, workers=workers, progress=progress, on_error=on_error,
                       precision="fp32")
    return predict_features(bundle, done.features, k, reject=reject)._replace(paths=done.paths, failures=done.failures)


def describe_bundle(bundle: Bundle) -> dict[str, Any]:
    """What a bundle is, as JSON data: products with their image counts, negatives, backbone, preprocessing,
    provenance.

    The summary ``retailnb info`` prints (which reads it from the file with
    :func:`retailnb.bundle.info.bundle_info`, without building the backbone); unlike ``repr``, it lists
    every product.
    """
    n_calibration = None if bundle.calibrate is None else int(bundle.calibrate.sum())
    return describe(bundle_meta(bundle), bundle.feature_dim, bundle.labels, bundle.n_negatives, n_calibration)

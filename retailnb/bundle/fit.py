"""Building a bundle and changing its products: a new backbone, a fitted probe, products added and removed,
and the images it must never name (its negatives).

Every operation (:func:`fit_probe`, :func:`add_products`, :func:`remove_products`, :func:`add_negatives`,
:func:`remove_negatives`) returns a new :class:`~retailnb.bundle.model.Bundle` and leaves its argument
alone; nothing touches a file until :func:`retailnb.bundle.io.save_bundle` (or
:func:`retailnb.bundle.io.edit_bundle`, which changes a file under its lock). :func:`fit_probe` chooses the
logistic regression's C by cross-validation; adding or removing products refits the probe from scratch on
every stored feature with that C (a single fit: seconds for a hundred products), and scores every product
with the same prior, so that a product enrolled from one image is not out-voted by products that had a
dozen (:attr:`~retailnb.bundle.model.ProbeSettings.uniform_prior`).

A probe always names one of its products, but a shelf shows many that are not enrolled. Every fit
therefore also chooses a :class:`~retailnb.bundle.model.Rejection` threshold on a known-ness score
(:mod:`retailnb.evaluation.rejection`) from the enrolled images' own out-of-fold scores, at the target
recall :attr:`~retailnb.bundle.model.ProbeSettings.recall` (:func:`choose_rejection`);
:func:`retailnb.bundle.predict.predict_features` marks images below it as not ``known``, answered
:data:`~retailnb.bundle.model.UNKNOWN`.

A bundle's negatives (:attr:`~retailnb.bundle.model.Bundle.negatives`: e.g. products the store knows it does
not sell) never train the probe; the scores of :data:`~retailnb.config.score_names.NEGATIVE_SCORES` hold an
image's likeness to the enrolled images against its likeness to them, and the ``background`` score's probe
(:func:`fit_background`) learns them as one more class, so adding or removing negatives chooses the
threshold again (and refits that probe), and every refit keeps them.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import os
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn.pipeline import Pipeline

import retailnb
from retailnb.util.hashing import file_sha256
from retailnb.bundle.choices import IMAGE_KINDS
from retailnb.bundle.model import (
    UNKNOWN,
    Bundle,
    ClassNameError,
    LinearProbe,
    Preprocessing,
    ProbeSettings,
    Rejection,
    check_features,
    frozen_backbone,
)
from retailnb.evaluation.probe import fit_logistic_probe
from retailnb.evaluation.rejection import (
    background_training_set,
    calibration_folds,
    calibration_scores,
    logistic_fit,
    threshold_at_recall,
)
from retailnb.config.score_names import BACKGROUND_SCORES, PROBE_SCORES, SCORES, check_bundle_score
from retailnb.models.backbone import WEIGHTS_HUB, WEIGHTS_NONE, create_backbone
from retailnb.models.backbone_info import resolve_backbone
from retailnb.models.inference import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)


def new_bundle(
    architecture: str | None = None,
    *,
    weights: str | os.PathLike[str] = WEIGHTS_NONE,
    image_size: int | None = None,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    settings: ProbeSettings = ProbeSettings(),
) -> Bundle:
    """A bundle with a backbone and its preprocessing but no products yet.

    Example::

        bundle = new_bundle(weights="models/seeds/0/pretrain/simclr_supcon/backbone.pt")  # size from backbone.json
        bundle = new_bundle("mobilenetv3_small_100", image_size=64)  # random weights

    Args:
        architecture: timm model name; None takes the one recorded in the ``backbone.json`` beside
            ``weights`` (see :func:`retailnb.models.backbone_info.resolve_backbone`).
        weights: the backbone's weights, as :func:`retailnb.models.backbone.create_backbone` takes them:
            the path of a checkpoint file (what pretraining and the noisy rounds write), ``"none"`` (random,
            for tests and timing) or ``"hub"``.
        image_size: side of the square images the backbone sees, in pixels; None takes the size recorded in
            ``backbone.json``.
        mean: per-channel normalisation mean (RGB in [0, 1]).
        std: per-channel normalisation standard deviation.
        settings: how probes of this bundle are fitted.

    Returns:
        The bundle, with its backbone's origin (and the SHA-256 of a weights file) in its provenance.

    Raises:
        ValueError: unknown architecture; one that is not the one ``backbone.json`` records (the message
            names both); a value neither given nor recorded; a weights file that does not fit; a bad image size.
        FileNotFoundError: ``weights`` names a missing file.
    """
    weights = os.fspath(weights)
    architecture, image_size, _ = resolve_backbone(architecture, weights, image_size)
    preprocessing = Preprocessing(int(image_size), tuple(mean), tuple(std))  # type: ignore[arg-type]
    model = frozen_backbone(create_backbone(architecture, weights=weights))
    origin: dict[str, Any] = {"architecture": architecture, "weights": weights}
    if weights not in (WEIGHTS_NONE, WEIGHTS_HUB) and Path(weights).is_file():
        origin["weights_sha256"] = file_sha256(weights)
    provenance = {"backbone": origin, "history": []}
    return Bundle(architecture, model, preprocessing, settings=settings, provenance=provenance)


def nfc(names: Sequence[str]) -> list[str]:
    """Product names in Unicode NFC: ``Café`` typed as one character or as e + accent is one product."""
    return [unicodedata.normalize("NFC", str(n)) for n in names]


def _check_class_names(class_names: Sequence[str]) -> tuple[str, ...]:
    """Class names as a tuple of non-empty, distinct strings, none of them :data:`UNKNOWN`."""
    names = tuple(str(c) for c in class_names)
    if any(not n.strip() for n in names):
        raise ClassNameError("class names must be non-empty")
    if UNKNOWN in names:
        raise ClassNameError(f"a product cannot be named {UNKNOWN!r}: it is the answer for an image unlike "
                             "every enrolled product; rename its folder")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ClassNameError(f"class names must be distinct; repeated: {', '.join(map(repr, repeated))}")
    return names


class _Change(NamedTuple):
    """What an operation did, for the bundle's provenance."""

    operation: str
    classes: Sequence[str]
    n_images: int
    source: Mapping[str, Any] | None
    enrolled_from: Mapping[str, Mapping[str, Any]] | None = None


def check_image_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`IMAGE_KINDS`, else a ValueError naming the choices."""
    if kind not in IMAGE_KINDS:
        raise ValueError(f"unknown kind of enrolment images {kind!r}; expected one of {', '.join(IMAGE_KINDS)}")
    return kind


def _enrolled_from(names: Sequence[str], kind: str) -> dict[str, dict[str, Any]]:
    """Per product of ``names`` (one entry per image), what its images were and how many: for the history."""
    check_image_kind(kind)
    products, counts = np.unique(np.asarray(names, dtype=str), return_counts=True)
    return {str(n): {"images": kind, "n_images": int(c)} for n, c in zip(products, counts)}


def _history_entry(change: _Change, features: np.ndarray, c: float | None, c_from: str | None,
                   rejection: Rejection | None = None, n_negatives: int = 0) -> dict[str, Any]:
    """One provenance record: what was done, to which classes, with which data, C, threshold and code.

    ``n_images`` counts the images the operation brought in; ``enrolled_from`` says per new product
    whether its images were shelf photos or catalogue packshots and how many; ``n_train`` and
    ``features_sha256`` describe the whole training set the probe was then fitted on; ``n_negatives`` the
    negatives the bundle then held; ``rejection`` the threshold chosen on them.
    """
    entry: dict[str, Any] = {
        "operation": change.operation,
        "classes": list(change.classes),
        "n_images": change.n_images,
        "n_train": len(features),
        "n_negatives": n_negatives,
        "features_sha256": hashlib.sha256(np.ascontiguousarray(features).tobytes()).hexdigest(),
        "c": c,
        "c_from": c_from,
        "rejection": None if rejection is None else rejection.as_json(),
        "retailnb_version": retailnb.__version__,
    }
    if change.enrolled_from:
        entry["enrolled_from"] = {name: dict(v) for name, v in change.enrolled_from.items()}
    if change.source:
        entry["source"] = json.loads(json.dumps(dict(change.source), default=str))  # JSON values only
    return entry


def _fit_pipeline(features: np.ndarray, labels: np.ndarray, settings: ProbeSettings, c: float | None) -> Pipeline:
    """The standardiser + logistic regression on ``features``: C chosen by cross-validation, or ``c``.

    With a given ``c``, :func:`fit_logistic_probe` fits once, without the 3 folds x 4 candidates of
    cross-validation: a 110-product refit takes seconds instead of tens.
    """
    with warnings.catch_warnings():  # few shots of many products is this module's normal case
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        s = settings
        return fit_logistic_probe(features, labels, cs=s.cs if c is None else (c,), cv=s.cv, max_iter=s.max_iter,
                                  seed=s.seed)


def choose_rejection(features: np.ndarray, labels: np.ndarray, settings: ProbeSettings, c: float,
                     negatives: np.ndarray | None = None, calibrate: np.ndarray | None = None) -> Rejection:
    """The rejection threshold of a probe fitted at ``c`` on ``features`` / ``labels``, at ``settings.recall``.

    The threshold is the :func:`retailnb.evaluation.rejection.threshold_at_recall` of the enrolled images' own
    out-of-fold scores (:func:`retailnb.evaluation.rejection.calibration_scores`): each fold of a product's
    look-alike images scored by the prototypes, nearest images, Gaussians or probes (refitted at ``c``) of
    the other folds. In-sample scores, or scores against an image's near-copies, would be over-confident and
    reject too many known images. The scores that use ``negatives`` (the
    bundle's, :data:`~retailnb.config.score_names.USES_NEGATIVES`) are calibrated with them, as they are
    then computed. A product with a single image cannot be scored out of fold (skipped); when no image
    can, the threshold is ``-inf`` (accept everything) and a warning says rejection is off.

    With ``calibrate`` (the rows whose photos trained no backbone: :attr:`Bundle.calibrate`), only those rows
    are scored, each by what the other rows give (:func:`retailnb.evaluation.rejection.calibration_folds`): a
    backbone that trained on a photo finds it more familiar than a new one, and a threshold from such photos
    accepts fewer new photos than asked.
    """
    score = check_bundle_score(settings.rejection_score)
    fit = logistic_fit(c, seed=settings.seed) if score in PROBE_SCORES or score in BACKGROUND_SCORES else None
    calibration = calibration_scores(score, features, labels, fit=fit, seed=settings.seed, negatives=negatives,
                                     fold_of=calibration_folds(calibrate, len(labels)))
    rejection = Rejection(score, float(settings.recall), threshold_at_recall(calibration, settings.recall))
    if not rejection.active:
        logger.warning("unknown-product rejection is off: no enrolled image could be scored out of fold; it "
                       "needs products with two or more images")
    return rejection


def check_background(settings: ProbeSettings, n_negatives: int) -> None:
    """A ValueError, saying what to do, when ``settings`` reject with ``background`` and there are no negatives."""
    if settings.rejection_score in BACKGROUND_SCORES and not n_negatives:
        raise ValueError("the background rejection score needs negatives, images the store does not sell: add "
                         "them with the score (`retailnb add-negatives IMAGES --rejection-score background`), or "
                         f"choose another score (one of {', '.join(SCORES)})")


def fit_background(features: np.ndarray, labels: np.ndarray, settings: ProbeSettings, c: float,
                   negatives: np.ndarray | None) -> LinearProbe | None:
    """The ``background`` score's probe (:attr:`~retailnb.bundle.model.Bundle.background`) at the probe's
    ``c``, when ``settings`` reject with it; None otherwise.

    Raises:
        ValueError: ``settings`` reject with ``background`` and there are no negatives.
    """
    if settings.rejection_score not in BACKGROUND_SCORES:
        return None
    check_background(settings, 0 if negatives is None else len(negatives))
    return LinearProbe.from_pipeline(_fit_pipeline(*background_training_set(features, labels, negatives), settings, c))


def _refit(bundle: Bundle, features: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...],
           change: _Change, *, choose_c: bool, calibrate: np.ndarray | None = None) -> Bundle:
    """A copy of ``bundle`` whose probe is fitted from scratch on ``features`` / ``labels``.

    C is chosen by cross-validation when ``choose_c`` is set or the bundle has no probe to take it from;
    otherwise the bundle's C is kept. The rejection threshold is chosen again with every fit
    (:func:`choose_rejection`, on the rows ``calibrate`` marks: the new bundle's :attr:`Bundle.calibrate`), so it
    follows the products added and removed; the bundle's negatives are kept.
    """
    missing = sorted(set(range(len(class_names))) - set(labels.tolist()))
    if missing:
        raise ValueError(f"every class needs training images; none for {', '.join(class_names[i] for i in missing)}")
    probe, c_from, rejection, background = None, None, None, None
    if class_names:
        if len(class_names) < 2:
            raise ValueError(f"a probe needs at least two products, got only {class_names[0]!r}")
        keep = bundle.probe is not None and not choose_c
        c_from = "kept" if keep else "cross-validation"
        pipe = _fit_pipeline(features, labels, bundle.settings, bundle.probe.c if keep and bundle.probe else None)
        counts = np.bincount(labels, minlength=len(class_names)) if bundle.settings.uniform_prior else None
        probe = LinearProbe.from_pipeline(pipe, counts)
        background = fit_background(features, labels, bundle.settings, probe.c, bundle.negatives)  # checks first
        rejection = choose_rejection(features, labels, bundle.settings, probe.c, bundle.negatives, calibrate)
    entry = _history_entry(change, features, probe.c if probe else None, c_from, rejection, bundle.n_negatives)
    history = [*bundle.provenance.get("history", []), entry]
    return dataclasses.replace(bundle, class_names=class_names, features=features, labels=labels, probe=probe,
                               rejection=rejection, background=background, calibrate=calibrate,
                               provenance={**bundle.provenance, "history": history})


def fit_probe(
    bundle: Bundle,
    features: np.ndarray,
    names: Sequence[str],
    *,
    source: Mapping[str, Any] | None = None,
    image_kind: str = "shelf",
    calibrate: np.ndarray | None = None,
) -> Bundle:
    """A copy of ``bundle`` whose products are exactly those of ``names``, with a probe fitted on ``features``.

    Any products and training features the bundle held are replaced; the products are ordered by
    name. C is chosen by cross-validation on these features alone (see
    :func:`retailnb.evaluation.probe.fit_logistic_probe`).

    Args:
        bundle: the bundle whose backbone produced ``features``.
        features: (N, D) features, e.g. from :func:`retailnb.bundle.embed.embed`.
        names: (N,) the product of each feature row; at least two distinct products.
        source: JSON description of the data (folder, manifest, its SHA-256, parameters) for provenance.
        image_kind: what the images are, one of :data:`IMAGE_KINDS` (``shelf`` photos or ``catalogue``
            packshots); recorded per product in the history.
        calibrate: (N,) bool, the rows whose photos trained no backbone (e.g. those a pipeline run kept out of
            training with ``data.calibration_folds``: :func:`retailnb.evaluation.rejection.unseen_photos`); the
            threshold is chosen on them. None when the backbone trained on none of the photos (or every row
            is marked).

    Returns:
        The new bundle, with its rejection threshold chosen (see :func:`choose_rejection`).

    Raises:
        ValueError: ``names`` does not have one entry per feature row, or names fewer than two products,
            or an unknown ``image_kind``; :class:`ClassNameError` for an empty name or :data:`UNKNOWN`.
    """
    features = check_features(bundle, features, "features")
    if len(names) != len(features):
        raise ValueError(f"names must give the product of each of the {len(features)} feature rows, got {len(names)}")
    names = nfc(names)
    classes, labels = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    class_names = _check_class_names(classes.tolist())
    change = _Change("fit", class_names, len(features), source, _enrolled_from(names, image_kind))
    calibrate = calibration_rows(calibrate, len(features))
    return _refit(bundle, features, labels.astype(np.int64), class_names, change, choose_c=True, calibrate=calibrate)


def calibration_rows(calibrate: np.ndarray | None, n: int) -> np.ndarray | None:
    """``calibrate`` as :attr:`Bundle.calibrate` keeps it: None when it is None or marks all ``n`` rows (every
    photo is as new as a shelf photo), a bool array otherwise.

    Raises:
        ValueError: not ``n`` booleans, or marking none (:func:`retailnb.evaluation.rejection.calibration_folds`).
    """
    return None if calibration_folds(calibrate, n) is None else np.asarray(calibrate, dtype=bool)


def _old_training_set(bundle: Bundle, old_features: np.ndarray | None,
                      old_labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's stored training features, or the caller's replacement for them."""
    if old_features is None and old_labels is None:
        return bundle.features, bundle.labels
    if old_features is None or old_labels is None:
        raise ValueError("old_features and old_labels go together: give both or neither")
    old_features = check_features(bundle, old_features, "old_features")
    old_labels = np.asarray(old_labels, dtype=np.int64)
    if old_labels.shape != (len(old_features),) or (old_labels.size and (
            old_labels.min() < 0 or old_labels.max() >= len(bundle.class_names))):
        raise ValueError(
            f"old_labels must be {len(old_features)} indices into the bundle's {len(bundle.class_names)} classes"
        )
    return old_features, old_labels


def check_new_products(bundle: Bundle, names: Sequence[str]) -> None:
    """Raise unless every name is a valid product name that ``bundle`` does not have yet.

    :func:`add_products` calls it; call it yourself to fail before embedding any image.

    Raises:
        ClassNameError: a name is empty or :data:`UNKNOWN`, or already a product of the bundle (the message
            names it).
    """
    names = nfc(names)
    _check_class_names(sorted(set(names)))
    existing = sorted(set(names) & set(nfc(bundle.class_names)))
    if existing:
        raise ClassNameError(
            f"product(s) already in the bundle: {', '.join(map(repr, existing))}; remove them first "
            "(remove_products / `retailnb remove-products`) to replace their images, or choose new names"
        )


def add_products(
    bundle: Bundle,
    features: np.ndarray,
    names: Sequence[str],
    *,
    old_features: np.ndarray | None = None,
    old_labels: np.ndarray | None = None,
    choose_c: bool = False,
    source: Mapping[str, Any] | None = None,
    image_kind: str = "shelf",
) -> Bundle:
    """A copy of ``bundle`` that also recognises new products, its probe refitted on old + new features.

    Refitting on every class's features, rather than bolting new rows onto the old weights, keeps the
    old products' accuracy: the new classes compete with the old ones during the fit. The old classes
    keep their indices; the new ones are appended in sorted name order. The probe is fitted from
    scratch, with the bundle's C (chosen by cross-validation when the bundle was first fitted) unless
    ``choose_c`` asks to choose it again (cross-validation: a dozen fits instead of one).

    A bundle that knows which of its photos trained no backbone (:attr:`Bundle.calibrate`) keeps choosing its
    threshold on those: the new products' photos, which may have trained it, are only fitted on. With
    ``old_features`` that record no longer describes the rows, and the threshold comes from every row.

    Args:
        bundle: the bundle to extend (unchanged).
        features: (N, D) features of the new products' images, e.g. from :func:`retailnb.bundle.embed.embed`.
        names: (N,) the product name of each row; every name must be new to the bundle.
        old_features: training features of the bundle's classes to refit on instead of the stored ones
            (e.g. more images of them); None uses the stored features.
        old_labels: class indices of ``old_features``; given with it.
        choose_c: choose C again by cross-validation (always done when the bundle has no probe yet).
        source: JSON description of the data, for provenance.
        image_kind: what the new images are, one of :data:`IMAGE_KINDS`: ``shelf`` photos, or
            ``catalogue`` packshots (often one or two per product); recorded per product in the history.

    Returns:
        The new bundle, its rejection threshold chosen again on old + new images.

    Raises:
        ClassNameError: a name is already a product of the bundle, or is :data:`UNKNOWN`.
        ValueError: shapes that do not match, fewer than two products in all, or an unknown ``image_kind``.
    """
    features = check_features(bundle, features, "features")
    names = nfc(names)
    if len(names) != len(features):
        raise ValueError(f"names must give one product name per feature row: {len(names)} names, {len(features)} rows")
    if not names:
        raise ValueError("no new products: features and names are empty")
    new = sorted(set(names))
    check_new_products(bundle, new)
    class_names = (*bundle.class_names, *new)
    index = {n: i for i, n in enumerate(class_names)}
    old_x, old_y = _old_training_set(bundle, old_features, old_labels)
    x = np.concatenate([old_x, features])
    y = np.concatenate([old_y, np.asarray([index[n] for n in names], dtype=np.int64)])
    change = _Change("add_products", new, len(features), source, _enrolled_from(names, image_kind))
    calibrate = None  # the stored rows' marks; the new photos may have trained the backbone: only fitted on
    if bundle.calibrate is not None and old_features is None:
        calibrate = np.concatenate([bundle.calibrate, np.zeros(len(features), dtype=bool)])
    return _refit(bundle, x, y, class_names, change, choose_c=choose_c, calibrate=calibrate)


def _unknown_names_message(unknown: Sequence[str], known: Sequence[str]) -> str:
    """Which names are not products of the bundle, with close matches as a hint."""
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hints.append(f"{name!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
    return f"no such product(s) in the bundle: {', '.join(hints)}; it has {len(known)} products"


def remove_products(
    bundle: Bundle, names: Sequence[str], *, choose_c: bool = False, source: Mapping[str, Any] | None = None
) -> Bundle:
    """A copy of ``bundle`` without some products, its probe refitted on the remaining classes.

    As in :func:`add_products`, the probe is refitted with the bundle's C unless ``choose_c`` is set.

    The remaining classes keep their order and are re-indexed from 0. Removing every product leaves a
    bundle without a probe (a backbone ready for :func:`fit_probe` or :func:`add_products`).

    Args:
        bundle: the bundle to shrink (unchanged).
        names: products to remove.
        choose_c: choose C again by cross-validation.
        source: JSON description of why or by whom, for provenance.

    Returns:
        The new bundle.

    Raises:
        ClassNameError: a name is not a product of the bundle (the message names it).
        ValueError: no names, or exactly one product would remain (a probe needs two).
    """
    drop = sorted({str(n) for n in names})
    if not drop:
        raise ValueError("no products to remove were given")
    unknown = [n for n in drop if n not in bundle.class_names]
    if unknown:
        raise ClassNameError(_unknown_names_message(unknown, bundle.class_names))
    keep = [i for i, n in enumerate(bundle.class_names) if n not in drop]
    remap = np.full(len(bundle.class_names), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    rows = remap[bundle.labels] >= 0
    class_names = tuple(bundle.class_names[i] for i in keep)
    if len(class_names) == 1:
        raise ValueError(f"a probe needs at least two products; only {class_names[0]!r} would remain")
    features = bundle.features[rows]
    change = _Change("remove_products", drop, 0, source)
    calibrate = None if bundle.calibrate is None or not bundle.calibrate[rows].any() else bundle.calibrate[rows]
    return _refit(bundle, features, remap[bundle.labels[rows]], class_names, change, choose_c=choose_c,
                  calibrate=calibrate)


def _with_negatives(bundle: Bundle, negatives: np.ndarray | None, change: _Change) -> Bundle:
    """A copy of ``bundle`` whose negatives are ``negatives`` (None: none), its threshold chosen again.

    The probe is not refitted (negatives never train it); the rejection threshold is chosen again with the
    probe's C when the bundle has a probe, since the scores that use negatives change with them, and so is
    the ``background`` score's probe, which they train.
    """
    probe, rejection, background = bundle.probe, None, None
    n_negatives = 0 if negatives is None else len(negatives)
    if probe is not None:
        background = fit_background(bundle.features, bundle.labels, bundle.settings, probe.c, negatives)
        rejection = choose_rejection(bundle.features, bundle.labels, bundle.settings, probe.c, negatives,
                                     bundle.calibrate)
    entry = _history_entry(change, bundle.features, probe.c if probe else None, "kept" if probe else None,
                           rejection, n_negatives)
    history = [*bundle.provenance.get("history", []), entry]
    return dataclasses.replace(bundle, negatives=negatives, rejection=rejection, background=background,
                               provenance={**bundle.provenance, "history": history})


def add_negatives(bundle: Bundle, features: np.ndarray, *, source: Mapping[str, Any] | None = None) -> Bundle:
    """A copy of ``bundle`` that also holds ``features`` as negatives: images it must never name.

    Negatives are images the store knows it does not sell (say, the products pretraining saw, or a folder
    of other shops' products). They never train the probe; the ``prototype`` and ``knn`` scores
    (:data:`~retailnb.config.score_names.NEGATIVE_SCORES`) subtract an image's cosine similarity to the
    nearest negative, so an image like a negative is more readily answered :data:`UNKNOWN`, and the
    ``background`` score (which needs them) fits a probe with them as one more class (:func:`fit_background`).
    The rejection threshold is chosen again with them (:func:`choose_rejection`); other scores ignore them.
    They are added to any negatives the bundle holds, and every later refit (adding, removing or
    fitting products) keeps them.

    Example::

        photos = embed_files(bundle, ["not_sold/"])
        bundle = add_negatives(bundle, photos.features)

    Args:
        bundle: the bundle (unchanged); with or without products.
        features: (M, D) features of the images, e.g. from :func:`retailnb.bundle.embed.embed_files`.
        source: JSON description of the images (where they came from, their SHA-256), for provenance.

    Returns:
        The new bundle.

    Raises:
        ValueError: ``features`` has no rows or does not fit the backbone, or is not finite.
    """
    features = check_features(bundle, features, "negative features")
    if not len(features):
        raise ValueError("no negatives: the features have no rows")
    if not np.isfinite(features).all():
        raise ValueError("negative features must be finite")
    negatives = features if bundle.negatives is None else np.concatenate([bundle.negatives, features])
    return _with_negatives(bundle, negatives, _Change("add_negatives", (), len(features), source))


def remove_negatives(bundle: Bundle, *, source: Mapping[str, Any] | None = None) -> Bundle:
    """A copy of ``bundle`` without negatives, its rejection threshold chosen again without them.

    Args:
        bundle: the bundle (unchanged).
        source: JSON description of why or by whom, for provenance.

    Raises:
        ValueError: the bundle holds no negatives, or rejects with the ``background`` score, which needs them
            (choose another score first: ``dataclasses.replace(bundle, settings=...)``).
    """
    if not bundle.n_negatives:
        raise ValueError("this bundle holds no negatives to remove")
    if bundle.settings.rejection_score in BACKGROUND_SCORES:
        raise ValueError("this bundle rejects with the background score, which needs its negatives: remove them "
                         "with another score (`retailnb remove-negatives --rejection-score SCORE`, one of "
                         f"{', '.join(SCORES)})")
    return _with_negatives(bundle, None, _Change("remove_negatives", (), 0, source))

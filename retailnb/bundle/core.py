"""Model bundles: one file that holds everything needed to recognise a catalogue's products.

The paper's practical promise is that adding products, or a product whose packaging changed, means
refitting a logistic regression on frozen features, not finetuning a network. A bundle makes that a
file operation: it holds the frozen backbone (architecture name and weights), its preprocessing (image
size and normalisation), the fitted standardiser + logistic regression, the class names, the small
training features of every class (so that the probe can be refitted on old + new products without the
old images), and provenance (what produced it, with which parameters, data and retailnb version).

The file format (:data:`BUNDLE_FORMAT`) is one uncompressed zip archive:

* ``bundle.json``: format name and version, architecture, preprocessing, class names, probe settings,
  the chosen C and provenance;
* ``backbone/<state-dict key>.npy``: every tensor of the backbone's state dict;
* ``probe/{mean,scale,coef,intercept}.npy``: the standardiser and the logistic regression;
* ``train/{features,labels}.npy``: the training features and their class indices.

Only JSON and ``.npy`` arrays read with ``allow_pickle=False``: loading a bundle never runs code from
the file. Entries carry a fixed timestamp, so the same bundle always gives the same bytes (and the same
DVC hash). :func:`save_bundle` writes a temporary file and renames it over the destination, so a
reader, or a run interrupted halfway, sees the old bundle or the complete new one, never a part.

Every operation (:func:`fit_probe`, :func:`add_products`, :func:`remove_products`) returns a new
:class:`Bundle` and leaves its argument alone; nothing touches a file until :func:`save_bundle`.
To change a bundle file in place, use :func:`edit_bundle`: it holds the file's lock
(:func:`retailnb.util.locks.exclusive`) from load to save, so two concurrent edits land one after the
other instead of the later save dropping the earlier change.
:func:`fit_probe` chooses the logistic regression's C by cross-validation; adding or removing products
refits the probe from scratch on every stored feature with that C (a single fit: seconds for a hundred
products), and scores every product with the same prior, so that a product enrolled from one image is
not out-voted by products that had a dozen (:attr:`ProbeSettings.uniform_prior`).

A probe always names one of its products, but a shelf shows many that are not enrolled. Every fit
therefore also chooses a :class:`Rejection` threshold on a known-ness score (:mod:`retailnb.evaluation.rejection`)
from the enrolled images' own out-of-fold scores, at the target recall :attr:`ProbeSettings.recall`;
:func:`predict_features` marks images below it as not ``known``, answered :data:`UNKNOWN`. The
threshold is kept in ``bundle.json`` (``rejection``); a file written before it existed loads with
rejection off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import timm
import torch
from sklearn.pipeline import Pipeline
from torch import nn

import retailnb
from retailnb.util.atomic import atomic_write
from retailnb.data.inputs import image_files
from retailnb.data.images import ImageError, decode_images, load_fitted
from retailnb.util.errors import FileProblem
from retailnb.evaluation.probe import fit_logistic_probe
from retailnb.util.locks import DEFAULT_TIMEOUT_S, exclusive
from retailnb.models.backbone import (
    WEIGHTS_HUB,
    WEIGHTS_NONE,
    create_backbone,
    feature_dim,
)
from retailnb.models.inference import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    autocast_dtype,
    borrowed_for_inference,
    extract_features,
    forward_batch,
    model_device,
)
from retailnb.util.parallel import chunks, default_workers
from retailnb.evaluation.rejection import (
    calibration_scores,
    check_score,
    class_prototypes,
    known_scores,
    logistic_fit,
    threshold_at_recall,
)

PathLike = str | os.PathLike[str]

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"
"""The answer for an image unlike every enrolled product (:attr:`Predictions.answers`); no product may be named so."""

IMAGE_KINDS = ("shelf", "catalogue")
"""What a product's enrolment images are: photos from the shelf, or catalogue packshots (often one or two)."""

BUNDLE_FORMAT_NAME = "retailnb.bundle"
"""The ``format`` value of every bundle's ``bundle.json``: tells a bundle from any other zip file."""

BUNDLE_FORMAT = 1
"""Version of the bundle file layout this retailnb writes and reads; raised whenever it changes."""

DEVICES = ("auto", "cpu", "cuda")
"""Device names :func:`inference_device` takes (also ``cuda:<index>``); ``auto`` is CUDA when available."""

_META = "bundle.json"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: a fixed timestamp makes the bytes reproducible
_PROBE_KEYS = ("mean", "scale", "coef", "intercept")


class BundleError(FileProblem):
    """A bundle file is unreadable, corrupt, of another format version, or does not fit its backbone."""


class ClassNameError(ValueError):
    """A product (class) name that must be new already exists, or one that must exist does not."""


@dataclass(frozen=True)
class Preprocessing:
    """How images are prepared for the backbone: the bundle's features only mean something this way.

    Attributes:
        image_size: side of the square input, in pixels (shorter side resized, then centre-cropped).
        mean: per-channel mean of RGB values in [0, 1], subtracted before the backbone.
        std: per-channel standard deviation the centred values are divided by.
    """

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 8:
            raise ValueError(f"image_size must be an integer of at least 8 pixels, got {self.image_size!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need three values (R, G, B), std positive; got {self.mean}, {self.std}")

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) images to float, scaled to [0, 1] and standardised by ``mean`` / ``std``.

        As ``(x / 255 - mean) / std`` (equal to float rounding), in one multiply and one add on the
        converted batch, in place, so the batch's memory format is kept: at 128 px the four-step form
        cost about a quarter as much as the forward pass of mobilenetv3_small_100.
        """
        std = torch.tensor(self.std, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(self.mean, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
        return x.float().mul_(1.0 / (255.0 * std)).sub_(mean / std)


@dataclass(frozen=True)
class ProbeSettings:
    """How the probe is (re)fitted; kept in the bundle so that every refit is done the same way.

    Attributes:
        cs: candidate Cs of the cross-validation (see :func:`retailnb.evaluation.probe.fit_logistic_probe`).
        cv: its folds.
        max_iter: iteration limit of the solver.
        seed: seed of the folds and the solver.
        uniform_prior: score every product with the same prior, whatever its number of training images.
            A logistic regression's intercepts learn how often each class occurs in the training set; after
            enrolment that is how many images each product happened to have (say 12 for the old products,
            1 for a new one), and under strong regularisation that prior alone can keep a 1-shot product
            from ever being predicted. The fitted intercepts are therefore shifted by ``-log(n_k / n)``
            (post-hoc logit adjustment, Menon et al., ICLR 2021). With the same number of images per
            product the shift is the same for every class and changes no probability.
    """

    cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    cv: int = 3
    max_iter: int = 1000
    seed: int = 0
    uniform_prior: bool = True
    rejection_score: str = "prototype"
    recall: float = 0.95

    def __post_init__(self) -> None:
        check_score(self.rejection_score)
        if isinstance(self.recall, bool) or not isinstance(self.recall, (int, float)) or not 0.0 < self.recall <= 1.0:
            raise ValueError(f"recall must be a number in (0, 1] (the share of known-product images to accept), "
                             f"got {self.recall!r}")


@dataclass(frozen=True)
class Rejection:
    """How a bundle tells an unknown product from its enrolled ones: a known-ness score and its threshold.

    An image whose score (see :func:`retailnb.evaluation.rejection.known_scores`) is below ``threshold`` is
    answered :data:`UNKNOWN`. The threshold is chosen at each (re)fit from the enrolled images' own
    out-of-fold scores, so that about ``recall`` of known-product images are accepted
    (:func:`retailnb.evaluation.rejection.threshold_at_recall`).

    Attributes:
        score: ``msp``, ``energy`` or ``prototype`` (:data:`retailnb.evaluation.rejection.SCORES`).
        recall: the target share of known-product images accepted.
        threshold: images scoring below it are unknown; ``-inf`` (accept everything) while no enrolled
            image could be scored out of fold (every product has a single image).
    """

    score: str
    recall: float
    threshold: float

    @property
    def active(self) -> bool:
        """Whether any image can be rejected (the threshold is finite)."""
        return math.isfinite(self.threshold)

    def as_json(self) -> dict[str, Any]:
        """The JSON of ``bundle.json`` and of the history; ``-inf`` is written as null (JSON has no infinity)."""
        return {"score": self.score, "recall": self.recall, "threshold": self.threshold if self.active else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rejection:
        """The inverse of :meth:`as_json`."""
        threshold = data["threshold"]
        return cls(check_score(str(data["score"])), float(data["recall"]),
                   float("-inf") if threshold is None else float(threshold))


@dataclass(frozen=True, eq=False)
class LinearProbe:
    """A fitted ``StandardScaler`` + multinomial ``LogisticRegression``, as plain arrays.

    Row ``k`` of ``coef`` and entry ``k`` of ``intercept`` score class index ``k`` of the bundle.

    Attributes:
        mean: (D,) feature means the scaler subtracts.
        scale: (D,) feature scales the scaler divides by.
        coef: (K, D) weights of the standardised features.
        intercept: (K,) biases.
        c: the inverse regularisation strength the fit chose.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    c: float

    @classmethod
    def from_pipeline(cls, pipe: Pipeline, class_counts: np.ndarray | None = None) -> LinearProbe:
        """The arrays of a pipeline from :func:`fit_logistic_probe` whose classes are ``0..K-1``.

        scikit-learn keeps a two-class logistic regression as one weight row ``w`` that scores class 1
        (probability ``sigmoid(w.x + b)``); it is stored as the rows ``-w/2`` and ``w/2``, whose softmax
        gives exactly the same probabilities, so every probe is scored the same way.

        Args:
            pipe: the fitted pipeline.
            class_counts: (K,) training images per class; when given, the intercepts are shifted by
                ``-log(count / total)`` so that every class has the same prior (see
                :attr:`ProbeSettings.uniform_prior`). None keeps the pipeline's probabilities exactly.
        """
        scaler, logreg = pipe[0], pipe[-1]
        coef = np.asarray(logreg.coef_, dtype=np.float64)
        intercept = np.asarray(logreg.intercept_, dtype=np.float64)
        if coef.shape[0] == 1:
            coef = np.concatenate([-coef / 2, coef / 2])
            intercept = np.concatenate([-intercept / 2, intercept / 2])
        if class_counts is not None:
            counts = np.asarray(class_counts, dtype=np.float64)
            intercept = intercept - np.log(counts / counts.sum())
        return cls(
            mean=np.asarray(scaler.mean_, dtype=np.float64),
            scale=np.asarray(scaler.scale_, dtype=np.float64),
            coef=coef,
            intercept=intercept,
            c=float(logreg.C),
        )

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(N, K) class scores of (N, D) features, before the softmax (what ``msp`` and ``energy`` read)."""
        return np.asarray(((np.asarray(features, dtype=np.float64) - self.mean) / self.scale) @ self.coef.T
                          + self.intercept)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, K) class probabilities of (N, D) features; rows sum to one."""
        logits = self.logits(features)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


@dataclass(frozen=True, eq=False, repr=False)
class Bundle:
    """A frozen backbone, its preprocessing, a probe over named products, and how it all came about.

    Build one with :func:`new_bundle`, fill it with :func:`fit_probe` or :func:`add_products`, write it
    with :func:`save_bundle` and read it back with :func:`load_bundle`.

    Attributes:
        architecture: timm model name of the backbone.
        backbone: the backbone (pooled features out), in eval mode.
        preprocessing: image size and normalisation the backbone expects.
        class_names: product names; class index ``k`` is ``class_names[k]``.
        features: (N, D) float32 training features of every class, kept to refit the probe.
        labels: (N,) int64 class index of each row of ``features``.
        probe: the fitted probe, or None while the bundle has no products.
        settings: how the probe is fitted.
        provenance: JSON data: the backbone's origin and one ``history`` entry per operation.
        rejection: the known-ness score and threshold chosen with the probe; None while there is no
            probe, or for a bundle written before rejection existed (every image is then answered with
            a product, until the next refit).
    """

    architecture: str
    backbone: nn.Module
    preprocessing: Preprocessing
    class_names: tuple[str, ...] = ()
    features: np.ndarray = field(default_factory=lambda: np.empty((0, 0), dtype=np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    probe: LinearProbe | None = None
    settings: ProbeSettings = ProbeSettings()
    provenance: dict[str, Any] = field(default_factory=dict)
    rejection: Rejection | None = None

    def __post_init__(self) -> None:
        if self.features.size == 0:  # no products yet: (0, D), so that old and new features always stack
            object.__setattr__(self, "features", np.empty((0, self.feature_dim), dtype=np.float32))

    @property
    def feature_dim(self) -> int:
        """Width of the backbone's features."""
        return feature_dim(self.backbone)

    @property
    def classes_(self) -> np.ndarray:
        """The product names as a string array, in class-index order (scikit-learn's ``classes_``).

        Column ``k`` of :attr:`Predictions.probabilities` is the probability of ``classes_[k]``.
        """
        return np.asarray(self.class_names, dtype=np.str_)

    @property
    def image_counts(self) -> dict[str, int]:
        """Training images per product, in class-index order."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts)}

    @property
    def device(self) -> torch.device:
        """Where the backbone is, so where :func:`embed_files` and :func:`predict_files` run it."""
        return model_device(self.backbone)

    def __repr__(self) -> str:
        # The dataclass repr would print every layer of the backbone and every stored array (hundreds of lines).
        return (f"Bundle(architecture={self.architecture!r}, image_size={self.preprocessing.image_size}, "
                f"products={len(self.class_names)}, training_images={len(self.labels)}, "
                f"device={str(self.device)!r}, format_version={BUNDLE_FORMAT})")


ON_ERROR = ("skip", "raise")
"""What :func:`predict_files` and :func:`embed_readable_files` do with an unreadable image."""


class EmbeddedFiles(NamedTuple):
    """The features of the readable files among many, and the errors of the others.

    Attributes:
        features: (N, D) float32 features of the readable files.
        paths: the N readable files, in the order given.
        failures: one :class:`~retailnb.data.images.ImageError` per unreadable file (``path``,
            ``problem``), in the order given.
    """

    features: np.ndarray
    paths: tuple[Path, ...]
    failures: tuple[ImageError, ...]


class Predictions(NamedTuple):
    """The ``k`` most probable products of each image, best first, and every product's probability.

    Attributes:
        indices: (N, k) class indices.
        scores: (N, k) probabilities.
        class_names: the bundle's class names, which ``indices`` index.
        probabilities: (N, K) probability of every product; column ``k`` is ``classes_[k]`` (as
            scikit-learn's ``predict_proba``).
        paths: the image file of each row, when the images came from files (:func:`predict_files`).
        failures: the files that could not be read, each error naming its file and the problem, when
            :func:`predict_files` ran with ``on_error="skip"``; they have no row.
        known_scores: (N,) each image's known-ness under the bundle's rejection score (higher: more
            like an enrolled product); None when the bundle has no rejection (an older bundle file).
        known: (N,) bool, whether each image is taken for an enrolled product (``known_scores >=
            threshold``); all True when rejection is off or was not asked for. None: all known.
        threshold: the threshold ``known`` was decided by; None when nothing was rejected by a threshold.
        rejection_score: the name of the score in ``known_scores`` (``msp``, ``energy``, ``prototype``).
    """

    indices: np.ndarray
    scores: np.ndarray
    class_names: tuple[str, ...]
    probabilities: np.ndarray
    paths: tuple[Path, ...] = ()
    failures: tuple[ImageError, ...] = ()
    known_scores: np.ndarray | None = None
    known: np.ndarray | None = None
    threshold: float | None = None
    rejection_score: str | None = None

    @property
    def classes_(self) -> np.ndarray:
        """The product name of each column of ``probabilities``, as a string array (scikit-learn's name)."""
        return np.asarray(self.class_names, dtype=np.str_)

    def names(self) -> list[list[str]]:
        """The predicted product names, one list of ``k`` per image."""
        return [[self.class_names[i] for i in row] for row in self.indices]

    @property
    def answers(self) -> list[str]:
        """One answer per image: its most probable product, or :data:`UNKNOWN` when it was rejected."""
        known = np.ones(len(self.indices), dtype=bool) if self.known is None else self.known
        return [self.class_names[row[0]] if ok else UNKNOWN for row, ok in zip(self.indices, known)]


# --------------------------------------------------------------------------------------------------
# Building and changing a bundle
# --------------------------------------------------------------------------------------------------


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes: the version of the data or weights it holds."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(paths: Sequence[PathLike]) -> str:
    """One hex SHA-256 over the bytes of several files, in the order given: the version of a data set."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def _frozen(model: nn.Module) -> nn.Module:
    """``model`` in eval mode and channels_last, the layout feature extraction runs it in.

    Converting once here makes the conversion that :func:`extract_features` does for every batch a
    no-op, instead of a copy of every convolution weight per batch.
    """
    return model.eval().to(memory_format=torch.channels_last)


def new_bundle(
    architecture: str,
    *,
    weights: str | os.PathLike[str] = WEIGHTS_NONE,
    image_size: int,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    settings: ProbeSettings = ProbeSettings(),
) -> Bundle:
    """A bundle with a backbone and its preprocessing but no products yet.

    Args:
        architecture: timm model name.
        weights: the backbone's weights, as :func:`retailnb.models.backbone.create_backbone` takes them:
            the path of a checkpoint file (what pretraining writes), ``"none"`` (random, for tests and
            timing) or ``"hub"``.
        image_size: side of the square images the backbone sees, in pixels.
        mean: per-channel normalisation mean (RGB in [0, 1]).
        std: per-channel normalisation standard deviation.
        settings: how probes of this bundle are fitted.

    Returns:
        The bundle, with its backbone's origin (and the SHA-256 of a weights file) in its provenance.

    Raises:
        ValueError: unknown architecture, a weights file that does not fit it, or a bad image size.
        FileNotFoundError: ``weights`` names a missing file.
    """
    preprocessing = Preprocessing(int(image_size), tuple(mean), tuple(std))  # type: ignore[arg-type]
    weights = os.fspath(weights)
    model = _frozen(create_backbone(architecture, weights=weights))
    origin: dict[str, Any] = {"architecture": architecture, "weights": weights}
    if weights not in (WEIGHTS_NONE, WEIGHTS_HUB) and Path(weights).is_file():
        origin["weights_sha256"] = file_sha256(weights)
    provenance = {"backbone": origin, "history": []}
    return Bundle(architecture, model, preprocessing, settings=settings, provenance=provenance)


def _check_features(bundle: Bundle, features: np.ndarray, what: str) -> np.ndarray:
    """``features`` as float32 (N, D), D the width of the bundle's backbone."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != bundle.feature_dim:
        raise ValueError(
            f"{what} must be an (N, {bundle.feature_dim}) array (the width of this bundle's "
            f"{bundle.architecture} features), got shape {features.shape}"
        )
    return features


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
                   rejection: Rejection | None = None) -> dict[str, Any]:
    """One provenance record: what was done, to which classes, with which data, C, threshold and code.

    ``n_images`` counts the images the operation brought in; ``enrolled_from`` says per new product
    whether its images were shelf photos or catalogue packshots and how many; ``n_train`` and
    ``features_sha256`` describe the whole training set the probe was then fitted on; ``rejection`` the
    threshold chosen on it.
    """
    entry: dict[str, Any] = {
        "operation": change.operation,
        "classes": list(change.classes),
        "n_images": change.n_images,
        "n_train": len(features),
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


def choose_rejection(features: np.ndarray, labels: np.ndarray, settings: ProbeSettings, c: float) -> Rejection:
    """The rejection threshold of a probe fitted at ``c`` on ``features`` / ``labels``, at ``settings.recall``.

    The threshold is the :func:`retailnb.evaluation.rejection.threshold_at_recall` of the enrolled images' own
    out-of-fold scores (:func:`retailnb.evaluation.rejection.calibration_scores`): leave-one-out prototypes, or
    probes refitted at ``c`` on k-1 folds. In-sample scores would be over-confident and reject too
    many known images. A product with a single image cannot be scored out of fold (skipped); when no
    image can, the threshold is ``-inf`` (accept everything) and a warning says rejection is off.
    """
    score = check_score(settings.rejection_score)
    fit = None if score == "prototype" else logistic_fit(c, seed=settings.seed)
    calibration = calibration_scores(score, features, labels, fit=fit, seed=settings.seed)
    rejection = Rejection(score, float(settings.recall), threshold_at_recall(calibration, settings.recall))
    if not rejection.active:
        logger.warning("unknown-product rejection is off: no enrolled image could be scored out of fold; it "
                       "needs products with two or more images")
    return rejection


def _refit(bundle: Bundle, features: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...],
           change: _Change, *, choose_c: bool) -> Bundle:
    """A copy of ``bundle`` whose probe is fitted from scratch on ``features`` / ``labels``.

    C is chosen by cross-validation when ``choose_c`` is set or the bundle has no probe to take it from;
    otherwise the bundle's C is kept. The rejection threshold is chosen again with every fit
    (:func:`choose_rejection`), so it follows the products added and removed.
    """
    missing = sorted(set(range(len(class_names))) - set(labels.tolist()))
    if missing:
        raise ValueError(f"every class needs training images; none for {', '.join(class_names[i] for i in missing)}")
    probe, c_from, rejection = None, None, None
    if class_names:
        if len(class_names) < 2:
            raise ValueError(f"a probe needs at least two products, got only {class_names[0]!r}")
        keep = bundle.probe is not None and not choose_c
        c_from = "kept" if keep else "cross-validation"
        pipe = _fit_pipeline(features, labels, bundle.settings, bundle.probe.c if keep and bundle.probe else None)
        counts = np.bincount(labels, minlength=len(class_names)) if bundle.settings.uniform_prior else None
        probe = LinearProbe.from_pipeline(pipe, counts)
        rejection = choose_rejection(features, labels, bundle.settings, probe.c)
    entry = _history_entry(change, features, probe.c if probe else None, c_from, rejection)
    history = [*bundle.provenance.get("history", []), entry]
    return dataclasses.replace(bundle, class_names=class_names, features=features, labels=labels, probe=probe,
                               rejection=rejection, provenance={**bundle.provenance, "history": history})


def fit_probe(
    bundle: Bundle,
    features: np.ndarray,
    names: Sequence[str],
    *,
    source: Mapping[str, Any] | None = None,
    image_kind: str = "shelf",
) -> Bundle:
    """A copy of ``bundle`` whose products are exactly those of ``names``, with a probe fitted on ``features``.

    Any products and training features the bundle held are replaced; the products are ordered by
    name. C is chosen by cross-validation on these features alone (see
    :func:`retailnb.evaluation.probe.fit_logistic_probe`).

    Args:
        bundle: the bundle whose backbone produced ``features``.
        features: (N, D) features, e.g. from :func:`embed`.
        names: (N,) the product of each feature row; at least two distinct products.
        source: JSON description of the data (folder, manifest, its SHA-256, parameters) for provenance.
        image_kind: what the images are, one of :data:`IMAGE_KINDS` (``shelf`` photos or ``catalogue``
            packshots); recorded per product in the history.

    Returns:
        The new bundle, with its rejection threshold chosen (see :func:`choose_rejection`).

    Raises:
        ValueError: ``names`` does not have one entry per feature row, or names fewer than two products,
            or an unknown ``image_kind``; :class:`ClassNameError` for an empty name or :data:`UNKNOWN`.
    """
    features = _check_features(bundle, features, "features")
    if len(names) != len(features):
        raise ValueError(f"names must give the product of each of the {len(features)} feature rows, got {len(names)}")
    classes, labels = np.unique(np.asarray([str(n) for n in names], dtype=str), return_inverse=True)
    class_names = _check_class_names(classes.tolist())
    change = _Change("fit", class_names, len(features), source, _enrolled_from(names, image_kind))
    return _refit(bundle, features, labels.astype(np.int64), class_names, change, choose_c=True)


def _old_training_set(bundle: Bundle, old_features: np.ndarray | None,
                      old_labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's stored training features, or the caller's replacement for them."""
    if old_features is None and old_labels is None:
        return bundle.features, bundle.labels
    if old_features is None or old_labels is None:
        raise ValueError("old_features and old_labels go together: give both or neither")
    old_features = _check_features(bundle, old_features, "old_features")
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
    _check_class_names(sorted(set(names)))
    existing = sorted(set(names) & set(bundle.class_names))
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

    Args:
        bundle: the bundle to extend (unchanged).
        features: (N, D) features of the new products' images, e.g. from :func:`embed`.
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
    features = _check_features(bundle, features, "features")
    names = [str(n) for n in names]
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
    return _refit(bundle, x, y, class_names, change, choose_c=choose_c)


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
    return _refit(bundle, features, remap[bundle.labels[rows]], class_names, change, choose_c=choose_c)


# --------------------------------------------------------------------------------------------------
# Features and predictions
# --------------------------------------------------------------------------------------------------


def embed(
    bundle: Bundle,
    images: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Features of uint8 images under the bundle's backbone and preprocessing.

    Args:
        bundle: the bundle.
        images: uint8 (N, S, S, 3) array, as :func:`retailnb.data.images.decode_images` returns at the
            bundle's image size S, or a (N, 3, S, S) tensor.
        batch_size: images per forward pass.
        device: where to run the backbone; defaults to where it is.
        precision: see :func:`retailnb.models.inference.extract_features`. fp32 by default: features
            computed now are fitted together with features stored earlier, so they should come from the
            same arithmetic.

    Returns:
        (N, D) float32 features.

    Raises:
        ValueError: the images are not uint8 RGB at the bundle's image size.
    """
    size = bundle.preprocessing.image_size
    spatial = tuple(images.shape[2:4]) if isinstance(images, torch.Tensor) else tuple(images.shape[1:3])
    if spatial != (size, size):
        raise ValueError(f"images must be {size}x{size} pixels (this bundle's image size), got {spatial}")
    if images.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"images must be uint8 (0-255), got {images.dtype}")
    return extract_features(bundle.backbone, images, batch_size=batch_size, device=device,
                            transform=bundle.preprocessing.normalize, precision=precision)


def default_embed_workers(model: nn.Module) -> int:
    """Threads :func:`embed_files` runs by default: one per torch intra-op thread on CPU, else one per core.

    On CPU the cores torch may use are shared out as single-threaded forward passes (see
    :func:`embed_files`). On an accelerator the threads decode images while the device computes.
    """
    return torch.get_num_threads() if model_device(model).type == "cpu" else default_workers()


@contextlib.contextmanager
def _intra_op_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (unchanged when None), restoring the count after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def embed_files(
    bundle: Bundle,
    paths: Sequence[PathLike],
    *,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Features of image files, decoded at the bundle's image size and embedded batch by batch.

    Each of ``workers`` threads takes a batch of files, decodes it and runs the backbone on it, so
    decoding overlaps the backbone's work, and only ``workers`` batches of pixels are in memory at a
    time. Decoding small JPEGs holds the GIL for a small part of the time (see
    :mod:`retailnb.data.jpeg`) and torch releases it during every operation, so the threads run in
    parallel. On CPU, torch runs one intra-op thread per worker while this runs (the process-wide
    setting is restored afterwards): a small backbone uses two cores better as two single-threaded
    forward passes than as one two-threaded pass, which spends much of its time waiting at the end of
    each operation. On 2 cores, with ``mobilenetv3_small_100`` at 64 px, prediction from JPEG files
    then ran at about the speed of the bare two-threaded forward pass on decoded images, against half
    of it when decoding and the forward pass took turns (``benchmarks/bench_new_products.py``).

    Args:
        bundle: the bundle.
        paths: image files.
        batch_size: images per forward pass; every worker holds one batch of pixels and activations.
        workers: threads; None: :func:`default_embed_workers`. 1 decodes and embeds in turn, in this
            thread, with torch's threads left as they are.
        progress: called with the number of images of each finished batch (a progress bar's ``update``).
        precision: see :func:`embed`.

    Returns:
        (len(paths), D) float32 features, in the order of ``paths``.

    Raises:
        ImageError: an image cannot be read; the message names the file (batches not yet started are
            cancelled).
        ValueError: ``paths`` is empty, or ``batch_size`` or ``workers`` is not positive.
    """
    return _embed_files(bundle, paths, batch_size=batch_size, workers=workers, progress=progress,
                        precision=precision, skip=False).features


def embed_readable_files(
    bundle: Bundle,
    paths: Sequence[PathLike],
    *,
    batch_size: int = 64,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    precision: str = "fp32",
) -> EmbeddedFiles:
    """:func:`embed_files` that goes past unreadable images: the features of the others, and the errors.

    A user with 10,000 shelf photos and three corrupt ones gets 9,997 rows and the three files named.
    A batch decodes as fast as in :func:`embed_files`; only a batch with a bad file is decoded again,
    file by file, to tell its good files from its bad ones.

    Args:
        bundle, paths, batch_size, workers, progress, precision: as :func:`embed_files`.

    Returns:
        The features and paths of the readable files, and one error per unreadable file.

    Raises:
        ValueError: as :func:`embed_files` (no paths, bad sizes).
    """
    return _embed_files(bundle, paths, batch_size=batch_size, workers=workers, progress=progress,
                        precision=precision, skip=True)


def _decode_readable(piece: Sequence[PathLike], size: int) -> tuple[np.ndarray, list[Path], list[ImageError]]:
    """Decode a batch; when a file of it is bad, decode file by file and return the good ones and the errors."""
    try:
        return decode_images(piece, size, workers=0), [Path(p) for p in piece], []
    except ImageError:
        pass
    pixels, good, bad = [], [], []
    for path in piece:
        try:
            pixels.append(load_fitted(path, size))
            good.append(Path(path))
        except ImageError as err:
            bad.append(err)
    stacked = np.stack(pixels) if pixels else np.empty((0, size, size, 3), dtype=np.uint8)
    return stacked, good, bad


def _embed_files(
    bundle: Bundle,
    paths: Sequence[PathLike],
    *,
    batch_size: int,
    workers: int | None,
    progress: Callable[[int], None] | None,
    precision: str,
    skip: bool,
) -> EmbeddedFiles:
    """:func:`embed_files` (``skip`` False: the first bad image raises) or :func:`embed_readable_files`."""
    if not paths:
        raise ValueError("no images to embed")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of images, got {batch_size}")
    model = bundle.backbone
    workers = default_embed_workers(model) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be a positive number of threads, got {workers}")
    device = model_device(model)
    amp_dtype = autocast_dtype(precision, device)
    size = bundle.preprocessing.image_size
    pieces = chunks(list(paths), batch_size)
    workers = min(workers, len(pieces))

    def features(piece: Sequence[PathLike]) -> tuple[np.ndarray, list[Path], list[ImageError]]:
        if skip:
            pixels, good, bad = _decode_readable(piece, size)
        else:
            pixels, good, bad = decode_images(piece, size, workers=0), [Path(p) for p in piece], []
        if not good:
            return np.empty((0, bundle.feature_dim), dtype=np.float32), good, bad
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2)
        return forward_batch(model, images, device, bundle.preprocessing.normalize, amp_dtype), good, bad

    rows: list[np.ndarray] = []
    kept: list[Path] = []
    failures: list[ImageError] = []
    one_thread_each = 1 if device.type == "cpu" and workers > 1 else None
    with borrowed_for_inference(model, device), _intra_op_threads(one_thread_each):
        executor = ThreadPoolExecutor(workers) if workers > 1 else None
        try:
            results = executor.map(features, pieces) if executor is not None else map(features, pieces)
            for piece, (feats, good, bad) in zip(pieces, results):
                rows.append(feats)
                kept.extend(good)
                failures.extend(bad)
                if progress is not None:
                    progress(len(piece))
        finally:
            if executor is not None:  # after an error: start no further batch, let running ones finish
                executor.shutdown(wait=True, cancel_futures=True)
    out = np.concatenate(rows).astype(np.float32, copy=False)
    return EmbeddedFiles(out, tuple(kept), tuple(failures))


def _require_probe(bundle: Bundle) -> LinearProbe:
    if bundle.probe is None:
        raise ValueError("this bundle has no products yet: fit a probe first (fit_probe / `retailnb fit`)")
    return bundle.probe


def prototypes(bundle: Bundle) -> np.ndarray:
    """(K, D) unit class prototypes of the bundle's stored training features (what ``prototype`` compares to).

    Recomputed from the stored features rather than stored, so they always follow the products added
    and removed; it is one pass over N x D numbers.
    """
    return class_prototypes(bundle.features, bundle.labels, len(bundle.class_names))


def bundle_known_scores(bundle: Bundle, features: np.ndarray, score: str | None = None) -> np.ndarray:
    """(N,) known-ness of (N, D) features under ``score`` (default: the bundle's rejection score).

    Raises:
        ValueError: the bundle has no probe, an unknown score, or features that do not fit the backbone.
    """
    probe = _require_probe(bundle)
    score = check_score(score or (bundle.rejection.score if bundle.rejection else bundle.settings.rejection_score))
    features = _check_features(bundle, features, "features")
    if score == "prototype":
        return known_scores(score, features=features, prototypes=prototypes(bundle))
    return known_scores(score, logits=probe.logits(features))


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
    features = _check_features(bundle, features, "features")
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
        images: image files and folders of images (every image below a folder, sorted).
        k: products per image (at most every product).
        batch_size: see :func:`embed_files`.
        workers: see :func:`embed_files`.
        progress: see :func:`embed_files`.
        on_error: ``"raise"`` stops at the first unreadable image; ``"skip"`` predicts the others and
            returns the errors in ``failures`` (see :func:`embed_readable_files`).
        reject: see :func:`predict_features`.

    Returns:
        The predictions, with the image file of each row in ``paths``.

    Raises:
        FileNotFoundError: the bundle file or an image is missing.
        BundleError: the bundle file is not a bundle of this format.
        ImageError: an image cannot be read; the message names it.
        ValueError: the bundle has no products, no images are given, an unknown ``on_error``, or every
            image is unreadable (``"skip"``; the message names the first).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle, device="auto")
    _require_probe(bundle)
    paths = image_files(images)
    done = _embed_files(bundle, paths, batch_size=batch_size, workers=workers, progress=progress,
                        precision="fp32", skip=on_error == "skip")
    if not done.paths:
        raise ValueError(f"none of the {len(paths)} images could be read; the first: {done.failures[0]}")
    return predict_features(bundle, done.features, k, reject=reject)._replace(paths=done.paths, failures=done.failures)


def _describe_rejection(bundle: Bundle) -> dict[str, Any] | None:
    """The rejection part of :func:`describe_bundle`: score, recall, threshold, and in words whether it is on."""
    if bundle.probe is None:
        return None
    r = bundle.rejection
    if r is None:
        return {"score": None, "recall": None, "threshold": None, "active": False,
                "note": "off: this bundle was written before unknown-product rejection; refit it (retailnb fit, "
                        "or add or remove a product) to choose a threshold"}
    note = (f"images scoring below {r.threshold:.4g} ({r.score}) are answered {UNKNOWN!r}" if r.active else
            "off until products have two or more images (no enrolled image could be scored out of fold)")
    return {**r.as_json(), "active": r.active, "note": note}


def describe_bundle(bundle: Bundle) -> dict[str, Any]:
    """What a bundle is, as JSON data: products with their image counts, backbone, preprocessing, provenance.

    The summary ``retailnb info`` prints; unlike ``repr``, it lists every product.
    """
    p = bundle.preprocessing
    return {
        "format_version": BUNDLE_FORMAT,
        "architecture": bundle.architecture,
        "feature_dim": bundle.feature_dim,
        "preprocessing": {"image_size": p.image_size, "mean": list(p.mean), "std": list(p.std)},
        "probe": None if bundle.probe is None else {"c": bundle.probe.c,
                                                     "uniform_prior": bundle.settings.uniform_prior},
        "rejection": _describe_rejection(bundle),
        "n_products": len(bundle.class_names),
        "n_train": len(bundle.labels),
        "products": bundle.image_counts,
        "provenance": bundle.provenance,
    }


# --------------------------------------------------------------------------------------------------
# The file
# --------------------------------------------------------------------------------------------------


def _meta(bundle: Bundle) -> dict[str, Any]:
    """Everything of ``bundle`` that is not an array, as the JSON of ``bundle.json``."""
    p, s = bundle.preprocessing, bundle.settings
    return {
        "format": BUNDLE_FORMAT_NAME,
        "format_version": BUNDLE_FORMAT,
        "retailnb_version": retailnb.__version__,
        "architecture": bundle.architecture,
        "preprocessing": {"image_size": p.image_size, "mean": list(p.mean), "std": list(p.std)},
        "class_names": list(bundle.class_names),
        "probe": None if bundle.probe is None else {"c": bundle.probe.c},
        "settings": {"cs": list(s.cs), "cv": s.cv, "max_iter": s.max_iter, "seed": s.seed,
                     "uniform_prior": s.uniform_prior, "rejection_score": s.rejection_score, "recall": s.recall},
        "rejection": None if bundle.rejection is None else bundle.rejection.as_json(),
        "backbone_keys": list(bundle.backbone.state_dict()),
        "provenance": bundle.provenance,
    }


def _arrays(bundle: Bundle) -> dict[str, np.ndarray]:
    """Every array of ``bundle`` under its entry name in the file (without ``.npy``)."""
    arrays = {}
    for key, tensor in bundle.backbone.state_dict().items():
        t = tensor.detach().cpu()
        arrays[f"backbone/{key}"] = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    if bundle.probe is not None:
        for key in _PROBE_KEYS:
            arrays[f"probe/{key}"] = getattr(bundle.probe, key)
    arrays["train/features"] = np.asarray(bundle.features, dtype=np.float32)
    arrays["train/labels"] = np.asarray(bundle.labels, dtype=np.int64)
    return arrays


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED  # float weights barely compress; storing keeps loading fast
    info.external_attr = 0o644 << 16
    return info


def save_bundle(bundle: Bundle, path: PathLike) -> Path:
    """Write ``bundle`` to one file at ``path``, atomically (see the module docstring for the layout).

    The file is written under a temporary name in the destination's folder and renamed over ``path``
    once complete: an existing bundle at ``path`` is replaced whole or not at all. This takes no lock:
    to change a file that another process may be changing too, use :func:`edit_bundle`.

    Args:
        bundle: the bundle.
        path: the bundle file; missing parent folders are created. Conventionally ``*.bundle``.

    Returns:
        ``path`` as a Path.

    Raises:
        IsADirectoryError: ``path`` is a folder.
        NotADirectoryError: a parent of ``path`` is a file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; a bundle is a single file (e.g. {path / 'catalogue.bundle'})")
    meta = json.dumps(_meta(bundle), indent=1, sort_keys=True)  # fails before any file is touched
    with atomic_write(path, "wb") as fh, zipfile.ZipFile(fh, "w") as zf:
        zf.writestr(_entry(_META), meta)
        for name, array in _arrays(bundle).items():
            with zf.open(_entry(f"{name}.npy"), "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)
    return path


def edit_bundle(
    path: PathLike,
    change: Callable[[Bundle], Bundle],
    *,
    out: PathLike | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Bundle:
    """Load a bundle file, change it and save the result, holding the destination's lock throughout.

    Example::

        edit_bundle("shop.bundle", lambda b: remove_products(b, ["old_cola"]))

    Two processes that edit the same file this way both land, one after the other: the second waits
    for the first to save, then loads what it saved. Use this rather than :func:`load_bundle` then
    :func:`save_bundle` wherever another process may edit the same file.

    Args:
        path: the bundle to load.
        change: the edit, e.g. ``lambda b: add_products(b, features, names)``; it must not save.
        out: where to save; None replaces ``path``. The lock taken is ``out``'s.
        timeout: seconds to wait for another edit of the destination.

    Returns:
        The saved bundle.

    Raises:
        retailnb.util.locks.BusyError: another edit held the destination for ``timeout`` seconds.
        FileNotFoundError, BundleError: as :func:`load_bundle`; the file is left as it was.
    """
    target = Path(path if out is None else out)
    with exclusive(target, timeout):
        edited = change(load_bundle(path))
        save_bundle(edited, target)
    return edited


def _read_meta(zf: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    """The parsed ``bundle.json``, checked to be of the format and version this retailnb reads."""
    try:
        meta = json.loads(zf.read(_META))
    except KeyError:
        raise BundleError(path, f"not a retailnb bundle (a zip file without {_META})") from None
    except json.JSONDecodeError as err:
        raise BundleError(path, f"corrupt bundle: {_META} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT_NAME:
        raise BundleError(path, f"not a retailnb bundle ({_META} does not say format {BUNDLE_FORMAT_NAME!r})")
    version = meta.get("format_version")
    if version != BUNDLE_FORMAT:
        writer = meta.get("retailnb_version", "an unknown version")
        raise BundleError(
            path,
            f"bundle format {version}, this retailnb reads {BUNDLE_FORMAT} (this is retailnb {retailnb.__version__}; "
            f"the bundle was written by retailnb {writer}): use that version, or rebuild the bundle with "
            "`retailnb fit`",
        )
    return meta


def _read_arrays(zf: zipfile.ZipFile) -> dict[str, np.ndarray]:
    """Every ``.npy`` entry of the archive, read without pickle and checked against its CRC."""
    arrays = {}
    for name in zf.namelist():
        if name.endswith(".npy"):
            with zf.open(name) as fh:
                arrays[name[: -len(".npy")]] = np.lib.format.read_array(fh, allow_pickle=False)
    return arrays


def _backbone(meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> nn.Module:
    """The architecture of ``meta`` with the stored weights, checked to fit it exactly."""
    try:
        model = create_backbone(meta["architecture"])
    except ValueError as err:  # an architecture this timm does not know
        raise BundleError(path, f"{err} (installed timm {timm.__version__})") from None
    state = {key: torch.from_numpy(arrays[f"backbone/{key}"]) for key in meta["backbone_keys"]}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise BundleError(path, f"the stored weights do not fit timm model {meta['architecture']!r}: {err}") from None
    return _frozen(model)


def _bundle(meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> Bundle:
    """A :class:`Bundle` from the parsed file; KeyError or ValueError when an entry is missing or wrong."""
    pre = meta["preprocessing"]
    probe = None
    if meta["probe"] is not None:
        probe = LinearProbe(**{k: arrays[f"probe/{k}"] for k in _PROBE_KEYS}, c=float(meta["probe"]["c"]))
    s = meta["settings"]
    rejection = meta.get("rejection")  # absent in files written before rejection: it stays off
    return Bundle(
        architecture=meta["architecture"],
        backbone=_backbone(meta, arrays, path),
        preprocessing=Preprocessing(int(pre["image_size"]), tuple(pre["mean"]), tuple(pre["std"])),
        class_names=tuple(meta["class_names"]),
        features=arrays["train/features"],
        labels=arrays["train/labels"],
        probe=probe,
        settings=ProbeSettings(tuple(s["cs"]), int(s["cv"]), int(s["max_iter"]), int(s["seed"]),
                               bool(s["uniform_prior"]), str(s.get("rejection_score", "prototype")),
                               float(s.get("recall", 0.95))),
        provenance=meta["provenance"],
        rejection=None if rejection is None or probe is None else Rejection.from_json(rejection),
    )


def _check_consistent(bundle: Bundle, path: Path) -> None:
    """Reject a bundle whose arrays disagree with each other (a hand-edited or damaged file)."""
    k, d = len(bundle.class_names), bundle.feature_dim
    problems = []
    if bundle.features.shape != (len(bundle.labels), d) and bundle.features.size:
        problems.append(f"training features of shape {bundle.features.shape}, not ({len(bundle.labels)}, {d})")
    if bundle.labels.size and (bundle.labels.min() < 0 or bundle.labels.max() >= k):
        problems.append(f"training labels outside [0, {k})")
    if bundle.probe is not None and bundle.probe.coef.shape != (k, d):
        problems.append(f"probe weights of shape {bundle.probe.coef.shape} for {k} classes of width {d}")
    if problems:
        raise BundleError(path, "corrupt bundle: " + "; ".join(problems))


def inference_device(name: str | torch.device) -> torch.device:
    """The torch device that ``name`` (one of :data:`DEVICES`, or ``cuda:<index>``) means on this machine.

    Raises:
        ValueError: an unknown name, or CUDA asked for where torch sees no CUDA device (the message says
            which torch this is and what to choose instead).
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = name.partition(":")
    if kind not in DEVICES[1:] or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)} or cuda:<index>")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"CUDA is not available (torch {torch.__version__} sees no CUDA device); "
                             "use cpu, or auto to take a GPU only when there is one")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"no CUDA device {index}: this machine has {torch.cuda.device_count()}")
    return torch.device(name)


def load_bundle(path: PathLike, *, device: str | torch.device = "cpu") -> Bundle:
    """Read a bundle written by :func:`save_bundle`, without running code from the file.

    Args:
        path: the bundle file.
        device: where to put the backbone (see :func:`inference_device`; ``auto`` is CUDA when
            available); :func:`embed_files` and :func:`predict_files` run it there.

    Returns:
        The bundle, its backbone in eval mode on ``device``.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        BundleError: the file is not a bundle, is truncated or corrupt, or has another format version
            (the message says which version it is and which this retailnb reads).
        ValueError: ``device`` is unknown or not available (checked before the file is read).
    """
    target = inference_device(device)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bundle not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with zipfile.ZipFile(path) as zf:
            meta = _read_meta(zf, path)
            arrays = _read_arrays(zf)
        bundle = _bundle(meta, arrays, path)
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as err:
        raise BundleError(path, f"not a bundle, or a truncated or corrupt one ({type(err).__name__}: {err})") from None
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(path, f"corrupt bundle: missing or malformed entry ({type(err).__name__}: {err})") from None
    _check_consistent(bundle, path)
    bundle.backbone.to(target)
    return bundle

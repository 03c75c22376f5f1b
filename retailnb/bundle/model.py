"""Model bundles: one file that holds everything needed to recognise a catalogue's products.

The paper's practical promise is that adding products, or a product whose packaging changed, means
refitting a logistic regression on frozen features, not finetuning a network. A bundle makes that a
file operation: it holds the frozen backbone (architecture name and weights), its preprocessing (image
size and normalisation), the fitted standardiser + logistic regression, the class names, the small
training features of every class (so that the probe can be refitted on old + new products without the
old images), and provenance (what produced it, with which parameters, data and retailnb version).

This module holds the types (:class:`Bundle`, :class:`LinearProbe`, :class:`Rejection`,
:class:`Predictions`, ...) and the small helpers the other modules of the package share. The rest of the
package, one concept per module (each imports only those before it):

* :mod:`retailnb.bundle.choices`: the choices and defaults of the functions and commands (devices, kinds of
  enrolment images, the default rejection score, ...), in plain Python so the command line reads them
  without torch;
* :mod:`retailnb.bundle.info`: what a bundle file is, read without torch: the format's name and version,
  :class:`BundleError`, :data:`UNKNOWN` (all three also importable from here), and the summary
  ``retailnb info`` prints;
* :mod:`retailnb.bundle.io`: the bundle file (:func:`~retailnb.bundle.io.save_bundle`,
  :func:`~retailnb.bundle.io.load_bundle`, :func:`~retailnb.bundle.io.edit_bundle` under the file's
  lock) and the SHA-256 of data files for provenance;
* :mod:`retailnb.bundle.fit`: building a bundle and changing its products
  (:func:`~retailnb.bundle.fit.new_bundle`, :func:`~retailnb.bundle.fit.fit_probe`,
  :func:`~retailnb.bundle.fit.add_products`, :func:`~retailnb.bundle.fit.remove_products`) and its
  negatives (:func:`~retailnb.bundle.fit.add_negatives`, :func:`~retailnb.bundle.fit.remove_negatives`),
  and the rejection threshold chosen with every change;
* :mod:`retailnb.bundle.embed`: features of images and image files under the bundle's backbone;
* :mod:`retailnb.bundle.predict`: predictions, known-ness scores and the summary of a bundle.

A probe always names one of its products, but a shelf shows many that are not enrolled: images whose
known-ness score is below the bundle's :class:`Rejection` threshold are answered :data:`UNKNOWN`. A bundle
may also carry *negatives*, features of images it must never name (products the store knows it does not
sell): the scores of :data:`~retailnb.config.score_names.NEGATIVE_SCORES` count an image that looks like
one of them as less known, and the ``background`` score rejects with a second probe
(:attr:`Bundle.background`) over the products and the negatives as one more class.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import nn

from retailnb.bundle.choices import DEFAULT_REJECTION_SCORE, DEVICES
from retailnb.bundle.info import BUNDLE_FORMAT, BUNDLE_FORMAT_NAME, UNKNOWN, BundleError  # noqa: F401 (re-exported)
from retailnb.config.score_names import check_bundle_score
from retailnb.data.images import ImageError
from retailnb.models.backbone import feature_dim
from retailnb.models.inference import IMAGENET_MEAN, IMAGENET_STD, model_device

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

PathLike = str | os.PathLike[str]


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
        rejection_score: the known-ness score of unknown-product rejection, one of
            :data:`retailnb.config.score_names.BUNDLE_SCORES` (default :data:`DEFAULT_REJECTION_SCORE`;
            ``background`` needs negatives).
        recall: the share of known-product images the rejection threshold is chosen to accept.
    """

    cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    cv: int = 3
    max_iter: int = 1000
    seed: int = 0
    uniform_prior: bool = True
    rejection_score: str = DEFAULT_REJECTION_SCORE
    recall: float = 0.95

    def __post_init__(self) -> None:
        check_bundle_score(self.rejection_score)
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
        score: one of :data:`retailnb.config.score_names.BUNDLE_SCORES` (``knn``, ``prototype``, ``msp``, ...).
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
        return cls(check_bundle_score(str(data["score"])), float(data["recall"]),
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
        """The arrays of a :func:`~retailnb.evaluation.probe.fit_logistic_probe` pipeline whose classes are ``0..K-1``.

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

    Build one with :func:`~retailnb.bundle.fit.new_bundle`, fill it with :func:`~retailnb.bundle.fit.fit_probe`
    or :func:`~retailnb.bundle.fit.add_products`, write it with :func:`~retailnb.bundle.io.save_bundle` and
    read it back with :func:`~retailnb.bundle.io.load_bundle`.

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
        negatives: (M, D) float32 features of images the bundle must never name (outlier exposure: e.g.
            products the store knows it does not sell), which the ``prototype`` and ``knn`` scores hold
            an image's likeness to against it; None when it has none. They never train the probe.
        background: with the ``background`` rejection score, the probe over the unit features of the
            products and of the negatives as one more class (row ``K`` of its weights), refitted at the
            probe's C with every change of products or negatives
            (:func:`retailnb.evaluation.rejection.background_training_set`); None with another score.
        calibrate: (N,) bool, the training rows whose photos trained no backbone, which the rejection threshold
            is chosen on (each scored by what the other rows give:
            :func:`retailnb.evaluation.rejection.calibration_folds`);
            None: every row, out of fold in look-alike folds (a backbone that trained on none of them).
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
    negatives: np.ndarray | None = None
    background: LinearProbe | None = None
    calibrate: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.features.size == 0:  # no products yet: (0, D), so that old and new features always stack
            object.__setattr__(self, "features", np.empty((0, self.feature_dim), dtype=np.float32))

    @property
    def n_negatives(self) -> int:
        """Images in :attr:`negatives` (0 without any)."""
        return 0 if self.negatives is None else len(self.negatives)

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
        """Where the backbone is, so where :func:`~retailnb.bundle.embed.embed_files` and
        :func:`~retailnb.bundle.predict.predict_files` run it."""
        return model_device(self.backbone)

    def __repr__(self) -> str:
        # The dataclass repr would print every layer of the backbone and every stored array (hundreds of lines).
        return (f"Bundle(architecture={self.architecture!r}, image_size={self.preprocessing.image_size}, "
                f"products={len(self.class_names)}, training_images={len(self.labels)}, "
                f"device={str(self.device)!r}, format_version={BUNDLE_FORMAT})")


class EmbeddedFiles(NamedTuple):
    """What :func:`~retailnb.bundle.embed.embed_files` returns: features, the file of each row, and the files skipped.

    Unpacks as ``features, paths, failures = embed_files(bundle, ["shelf/"])``.

    Attributes:
        features: (N, D) float32 features, row ``i`` of ``paths[i]``.
        paths: the N files embedded, in the order given (a folder's images sorted).
        failures: with ``on_error="skip"``, one :class:`~retailnb.data.images.ImageError` per file that could
            not be read (``path``, ``problem``), in the order given; they have no row. Empty otherwise.
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
        paths: the image file of each row, when the images came from files
            (:func:`~retailnb.bundle.predict.predict_files`).
        failures: the files that could not be read, each error naming its file and the problem, when
            :func:`~retailnb.bundle.predict.predict_files` ran with ``on_error="skip"``; they have no row.
        known_scores: (N,) each image's known-ness under the bundle's rejection score (higher: more
            like an enrolled product); None when the bundle has no rejection (an older bundle file).
        known: (N,) bool, whether each image is taken for an enrolled product (``known_scores >=
            threshold``); all True when rejection is off or was not asked for. None: all known.
        threshold: the threshold ``known`` was decided by; None when nothing was rejected by a threshold.
        rejection_score: the name of the score in ``known_scores`` (one of
            :data:`retailnb.config.score_names.BUNDLE_SCORES`).
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
# Helpers shared by the modules of the package
# --------------------------------------------------------------------------------------------------


def frozen_backbone(model: nn.Module) -> nn.Module:
    """``model`` in eval mode and channels_last, the layout feature extraction runs it in.

    Converting once here makes the conversion that :func:`retailnb.models.inference.extract_features` does
    for every batch a no-op, instead of a copy of every convolution weight per batch.
    """
    return model.eval().to(memory_format=torch.channels_last)


def check_features(bundle: Bundle, features: np.ndarray, what: str) -> np.ndarray:
    """``features`` as float32 (N, D), D the width of the bundle's backbone."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != bundle.feature_dim:
        raise ValueError(
            f"{what} must be an (N, {bundle.feature_dim}) array (the width of this bundle's "
            f"{bundle.architecture} features), got shape {features.shape}"
        )
    return features


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

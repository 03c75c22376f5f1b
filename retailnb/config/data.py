"""The data stage's parameters: which dataset, how bad images are treated, the synthetic catalogue."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from retailnb.config.base import NonNegativeInt, PositiveInt, Probability, Spec

MAX_SKUS_PER_FAMILY = 20
"""Variant words the synthetic generator prints on packages, one per SKU of a family."""


class SyntheticSpec(Spec):
    """Every size of the synthetic dataset (``data.synthetic``).

    Attributes:
        n_source_families: source brand families whose SKUs are labelled or unlabelled-only.
        n_monitor_families: extra source families held out for the pretraining monitor.
        n_target_families: brand families of the disjoint target catalogue (downstream probe).
        skus_per_family: SKUs (variants) per brand family, at most ``MAX_SKUS_PER_FAMILY``.
        labelled_fraction: fraction of the non-monitor source SKUs that have labelled images; the
            rest are unlabelled-only SKUs (their images are all role ``unlabelled``).
        catalogue_per_sku: catalogue packshots per SKU (role ``labelled``, ``monitor_train`` or
            ``probe_train``; unlabelled-only SKUs have none).
        labelled_shelf_per_sku: shelf images with role ``labelled`` per labelled SKU.
        unlabelled_shelf_per_sku: shelf images with role ``unlabelled`` per non-monitor source SKU.
        monitor_train_per_sku: shelf images with role ``monitor_train`` per monitor SKU.
        monitor_test_per_sku: shelf images with role ``monitor_test`` per monitor SKU.
        probe_train_shelf_per_sku: shelf images with role ``probe_train`` per target SKU (added to
            its catalogue images, so 10-shot probes work by default).
        probe_test_per_sku: shelf images with role ``probe_test`` per target SKU.
        image_size: side of the square images in pixels.
        difficulty: 0 gives nearly clean shelf crops, 1 the strongest distortions.
        seed: the one seed every random choice derives from.
    """

    n_source_families: PositiveInt
    n_monitor_families: NonNegativeInt
    n_target_families: PositiveInt
    skus_per_family: Annotated[int, Field(ge=1, le=MAX_SKUS_PER_FAMILY)]
    labelled_fraction: Probability
    catalogue_per_sku: NonNegativeInt
    labelled_shelf_per_sku: NonNegativeInt
    unlabelled_shelf_per_sku: NonNegativeInt
    monitor_train_per_sku: NonNegativeInt
    monitor_test_per_sku: NonNegativeInt
    probe_train_shelf_per_sku: NonNegativeInt
    probe_test_per_sku: PositiveInt
    image_size: Annotated[int, Field(ge=16, le=1024)]
    difficulty: Probability
    seed: NonNegativeInt

    @model_validator(mode="after")
    def _target_has_training_images(self) -> SyntheticSpec:
        if self.catalogue_per_sku + self.probe_train_shelf_per_sku < 1:
            raise ValueError("target SKUs need at least one probe_train image: "
                             "catalogue_per_sku + probe_train_shelf_per_sku must be >= 1")
        return self


def check_kinds(source: str, kinds: str) -> None:
    """Only the Grocery Store Dataset has coarse kinds to split by."""
    if kinds != "all" and source != "grocery_store":
        raise ValueError(f"kinds={kinds!r} splits the Grocery Store Dataset by coarse kind; "
                         f"source {source!r} takes kinds 'all'")


def check_calibration_folds(source: str, folds: int) -> None:
    """``calibration_folds`` is 0 (keep no photo out of training) or at least 2, and 0 for the synthetic source,
    whose target products no training sees."""
    if folds == 1 or folds < 0:
        raise ValueError(f"calibration_folds must be 0 (keep no photo out) or at least 2, got {folds}")
    if folds and source == "synthetic":
        raise ValueError("calibration_folds keeps some of a real dataset's train photos out of training; the "
                         "synthetic source's target products are never trained on: set it to 0")


class DataSpec(Spec):
    """The ``data`` section: the dataset every later stage reads through the manifest.

    Attributes:
        source: ``synthetic`` (rendered by retailnb), ``grocery_store`` or ``imagefolder``.
        root: folder of a real dataset; empty for ``synthetic``.
        labels: Grocery Store labels, ``fine`` (81 products) or ``coarse`` (43 kinds).
        kinds: Grocery Store classes: ``all``, or one half of the class-disjoint split by coarse kind
            (``even`` or ``odd``), so that a target of the other half is products pretraining never saw.
        on_error: a corrupt, truncated or tiny real image stops the stage (``raise``) or is skipped and
            counted (``skip``).
        min_size: smallest accepted shorter side of a real image, in pixels.
        calibration_folds: a real dataset's train photos both train the backbone and enrol its products; with
            ``k`` >= 2, one fold in ``k`` of each product's photos (whole groups of look-alikes) is kept out of
            training, and the rejection thresholds are chosen on those
            (:func:`retailnb.data.adapters.held_for_calibration`).
            0 keeps none; the synthetic source takes 0.
        synthetic: the synthetic catalogue's sizes.
    """

    source: Literal["synthetic", "grocery_store", "imagefolder"]
    root: str
    labels: Literal["fine", "coarse"]
    kinds: Literal["all", "even", "odd"]
    on_error: Literal["raise", "skip"]
    min_size: PositiveInt
    calibration_folds: NonNegativeInt
    synthetic: SyntheticSpec

    @model_validator(mode="after")
    def _real_data_has_a_root(self) -> DataSpec:
        if self.source != "synthetic" and not self.root:
            raise ValueError(f"root must name the dataset folder for source {self.source!r}")
        check_kinds(self.source, self.kinds)
        check_calibration_folds(self.source, self.calibration_folds)
        return self


class DataStageSpec(Spec):
    """Everything the data stage reads: ``data``."""

    stage: ClassVar[str] = "data"
    """The entry of :data:`retailnb.config.stages.STAGES` that says where each field comes from."""

    data: DataSpec

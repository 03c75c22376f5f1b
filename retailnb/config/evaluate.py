"""The evaluation stage's parameters: the target, the few-shot probes and the finetuning baseline."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from retailnb.config.base import (
    BatchSize,
    NonNegativeFloat,
    OneOrList,
    PositiveFloat,
    PositiveInt,
    Probability,
    Spec,
)
from retailnb.config.data import check_kinds
from retailnb.config.pretrain import ObjectivesSpec
from retailnb.config.compute import BackboneSpec, ComputeSpec, EngineSpec, check_warmup
from retailnb.config.views import ViewSpec

ShotCount = PositiveInt | Literal["all"]


Shots = Annotated[list[ShotCount], OneOrList, Field(min_length=1)]
"""Images per product of the few-shot probes: positive integers or ``all``; one value or a list."""


def shot_counts(shots: list[int | Literal["all"]]) -> list[int | None]:
    """Shot counts as the few-shot code takes them: ``None`` for all images."""
    return [None if s == "all" else s for s in shots]


class TargetSpec(Spec):
    """One downstream target (an entry of ``evaluate.targets``).

    Attributes:
        source: ``prepared`` (the data stage's own target catalogue), ``grocery_store`` or ``imagefolder``.
        root: the dataset folder (real sources only).
        labels: ``fine`` or ``coarse`` (Grocery Store only).
        kinds: ``all``, or one half of the Grocery Store's class-disjoint split by coarse kind (``even``
            or ``odd``): with ``data.kinds`` the other half, the target holds only products pretraining and
            the noisy student never saw.
    """

    source: Literal["prepared", "grocery_store", "imagefolder"]
    root: str
    labels: Literal["fine", "coarse"]
    kinds: Literal["all", "even", "odd"]

    @model_validator(mode="after")
    def _real_data_has_a_root(self) -> TargetSpec:
        if self.source != "prepared" and not self.root:
            raise ValueError(f"root must name the dataset folder for source {self.source!r}")
        check_kinds(self.source, self.kinds)
        return self


class ProbeSpec(Spec):
    """The few-shot protocol (``evaluate.probe``).

    Attributes:
        shots: images per product; ``all`` uses every training image.
        draws: seeded draws of the shots per count.
        knn_k: neighbours of the kNN classifier.
        seed: seeds the draws and the random-init backbone.
    """

    shots: Shots
    draws: PositiveInt
    knn_k: PositiveInt
    seed: int


class FinetuneEngineSpec(Spec):
    """Optimisation of each finetuning run; the learning rate comes from the grid (``lrs``).

    Attributes:
        max_epochs: the cap; a run stops earlier when validation accuracy stops improving.
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9).
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        warmup_epochs: linear warm-up length in epochs, below ``max_epochs``.
        seed: seeds the new classifier (and a random-init backbone), batches and augmentation.
    """

    max_epochs: PositiveInt
    optimizer: Literal["adamw", "sgd"]
    weight_decay: NonNegativeFloat
    warmup_epochs: NonNegativeFloat
    seed: int

    @model_validator(mode="after")
    def _warmup_within_run(self) -> FinetuneEngineSpec:
        check_warmup(self.max_epochs, self.warmup_epochs, "max_epochs")
        return self

    def at(self, lr: float) -> EngineSpec:
        """The engine settings of one run of the grid: learning rate ``lr``, ``max_epochs`` epochs."""
        return EngineSpec(epochs=self.max_epochs, optimizer=self.optimizer, lr=lr, weight_decay=self.weight_decay,
                          warmup_epochs=self.warmup_epochs, seed=self.seed)


class FinetuneSpec(Spec):
    """The finetuning baselines (``evaluate.finetune``): a backbone and a new classifier trained end to end.

    A seeded, stratified ``val_fraction`` of the target's training images is held out; each learning rate
    of ``lrs`` trains until validation accuracy has not improved for ``patience`` epochs (at most
    ``engine.max_epochs``); the learning rate with the best validation accuracy wins, and its
    best-validation weights are scored once on the test split.

    Attributes:
        batch_size: images per batch.
        drop_rate: dropout before the new classifier.
        views: its (light) training augmentation.
        val_fraction: share of each product's training images held out for validation (a product with
            one image keeps it for training).
        lrs: the learning-rate grid.
        patience: epochs without a better validation accuracy before a run stops.
        random_init: also finetune from random weights, the same protocol without pretraining (a second
            baseline, as long again as the first; the ratio to finetuning is always to the main backbone's).
        engine: optimisation.
    """

    batch_size: BatchSize
    drop_rate: Probability
    views: ViewSpec
    val_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    lrs: Annotated[list[PositiveFloat], Field(min_length=1)]
    patience: PositiveInt
    random_init: bool
    engine: FinetuneEngineSpec


class RejectionSpec(Spec):
    """The unknown-product rejection protocol (``evaluate.rejection``; :mod:`retailnb.evaluation.rejection`).

    A seeded ``unknown_fraction`` of the target's products is held out of the probe; every backbone's
    rejection scores are measured on known against held-out products' test images, each threshold chosen
    from the known products' training images alone, out of fold, at ``recall``.

    Attributes:
        unknown_fraction: share of the target's products held out as unknown (at least one, and at least
            two stay known).
        recall: the known-product recall each threshold is chosen for, on the enrolled images.
        folds: folds of the out-of-fold scores the threshold is chosen from, each holding out groups of a
            product's look-alike images (:func:`retailnb.evaluation.rejection.near_copy_folds`).
        knn_k: the neighbour whose similarity the ``knn`` score is (1: the nearest enrolled image).
        source_unknowns: also measure rejection on a second unknown set, the source's unlabelled-only
            products (:func:`retailnb.evaluation.compare.source_unknown_records`: seen without a label in
            pretraining and the noisy student, never enrolled), at the same thresholds. Only a target
            whose manifest has such products, the synthetic ``prepared`` one, has this set; real targets
            ignore it.
    """

    unknown_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    recall: Annotated[float, Field(gt=0.0, le=1.0)]
    folds: Annotated[int, Field(ge=2)]
    knn_k: PositiveInt
    source_unknowns: bool


class EvaluateStageSpec(Spec):
    """Everything one evaluation target reads.

    Attributes:
        backbone: architecture and image size (``backbone``).
        compute: placement (``compute``).
        target: the target dataset (``evaluate.targets.<name>``).
        probe: the few-shot protocol (``evaluate.probe``).
        finetune: the finetuning baseline (``evaluate.finetune``).
        rejection: the unknown-product rejection protocol (``evaluate.rejection``).
        extra_weights: a local weights file evaluated as one more row; empty for none
            (``evaluate.extra_weights``).
        main_variant: the main backbone, round 1's teacher (``noisy.teacher_variant``).
        variants: the pretraining variants (``pretrain.variants``): their backbones are the table's rows, and
            only theirs: the folder of a variant no longer in ``params.yaml`` (DVC leaves a removed stage's
            outputs on disk) is not read.
        on_overlap: a training image that is also a test image stops the stage naming both files
            (``raise``), or is left out of training and counted (``drop``) (``evaluate.on_overlap``).
        overlap_distance: a training image whose colour thumbnail lies closer than this cosine distance to a
            test image's is that image too (a re-encoded or resized copy); 0: identical pixels only
            (``evaluate.overlap_distance``).
        on_error: what a bad image of a real target does, as for the data stage (``data.on_error``).
        min_size: smallest accepted shorter side of a real target's image (``data.min_size``).
    """

    stage: ClassVar[str] = "evaluate"
    """The entry of :data:`retailnb.config.stages.STAGES` that says where each field comes from."""

    backbone: BackboneSpec
    compute: ComputeSpec
    target: TargetSpec
    probe: ProbeSpec
    finetune: FinetuneSpec
    rejection: RejectionSpec
    extra_weights: str
    main_variant: str
    variants: dict[str, ObjectivesSpec]
    on_overlap: Literal["raise", "drop"]
    overlap_distance: Annotated[float, Field(ge=0.0, lt=1.0)]
    on_error: Literal["raise", "skip"]
    min_size: PositiveInt

    def with_seed(self, seed: int) -> EvaluateStageSpec:
        """The evaluation of training seed ``seed``'s backbones: the finetuning engine's seed and the probes'
        seed (the shot draws and the random-init backbone) plus it, so every row's randomness is repeated."""
        engine = self.finetune.engine.model_copy(update={"seed": self.finetune.engine.seed + seed})
        return self.model_copy(update={
            "finetune": self.finetune.model_copy(update={"engine": engine}),
            "probe": self.probe.model_copy(update={"seed": self.probe.seed + seed}),
        })

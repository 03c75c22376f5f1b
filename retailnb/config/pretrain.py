"""The contrastive pretraining stage's parameters (``pretrain`` and one entry of ``pretrain.variants``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field, field_validator, model_validator

from retailnb.config.base import (
    BatchSize,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Probability,
    Spec,
)
from retailnb.config.compute import BackboneSpec, ComputeSpec, EngineSpec
from retailnb.config.views import PretrainViewsSpec


def check_weights(value: str) -> str:
    """``none``, ``hub`` or an existing weights file; anything else is a typo, not a path to create."""
    if value in ("none", "hub") or Path(value).is_file():
        return value
    raise ValueError(f"must be 'none' (random init), 'hub' (timm's weights) or an existing weights file, "
                     "and no file is at that path")


class ContrastiveModelSpec(Spec):
    """The backbone's initialisation and noise, and the projection head the losses compare in.

    Attributes:
        weights: ``none`` (random init), ``hub`` (timm's weights; needs network) or a local weights file.
        drop_rate: dropout before the (removed) classifier.
        drop_path_rate: stochastic depth.
        proj_hidden_dim: hidden width of the projection head (SimCLR's, and SimSiam's when it is on).
        proj_dim: output width of the projection head.
        pred_hidden_dim: bottleneck width of SimSiam's prediction head (only built when SimSiam is on).
        temperature: softmax temperature of both losses, > 0 (a negative one trains the opposite
            objective).
        n_views: augmented views per image (SimCLR and SimSiam use the first two; SupCon all).
    """

    weights: str
    drop_rate: Probability
    drop_path_rate: Probability
    proj_hidden_dim: PositiveInt
    proj_dim: PositiveInt
    pred_hidden_dim: PositiveInt
    temperature: PositiveFloat
    n_views: Annotated[int, Field(ge=2)]

    _weights = field_validator("weights")(check_weights)


class SamplerSpec(Spec):
    """How batches are drawn.

    Attributes:
        batch_size: images per batch and process (each seen in ``n_views`` views).
        images_per_class: labelled images of one class placed together for SupCon.
        supcon_fraction: share of each batch given to such labelled groups (when SupCon is on).
    """

    batch_size: BatchSize
    images_per_class: Annotated[int, Field(ge=2)]
    supcon_fraction: Probability


class ObjectivesSpec(Spec):
    """One pretraining variant: the weight of each objective; 0 switches it off.

    Attributes:
        simclr_weight: NT-Xent over every source image, labelled or not.
        supcon_weight: supervised contrastive over the labelled images.
        simsiam_weight: SimSiam (negative cosine similarity of predicted and stop-gradient projections, no
            negatives) over every source image, labelled or not; its heads exist only when it is > 0.
    """

    simclr_weight: NonNegativeFloat
    supcon_weight: NonNegativeFloat
    simsiam_weight: NonNegativeFloat

    @model_validator(mode="after")
    def _one_objective_on(self) -> ObjectivesSpec:
        if not self.contrastive and not self.self_supervised:
            raise ValueError("switch on at least one objective: simclr_weight, supcon_weight or simsiam_weight "
                             "must be > 0")
        return self

    @property
    def contrastive(self) -> bool:
        """Whether SimCLR or SupCon is on: both compare the SimCLR projection head's outputs."""
        return self.simclr_weight > 0 or self.supcon_weight > 0

    @property
    def self_supervised(self) -> bool:
        """Whether an objective that needs no labels (SimCLR or SimSiam) is on, so unlabelled images count."""
        return self.simclr_weight > 0 or self.simsiam_weight > 0


class PretrainStageSpec(Spec):
    """Everything one pretraining variant reads from ``params.yaml``.

    Attributes:
        backbone: architecture and image size (``backbone``).
        compute: placement (``compute``).
        model: initialisation, noise and head (``pretrain.model``).
        sampler: batches (``pretrain.sampler``).
        engine: optimisation (``pretrain.engine``).
        views: augmentations (``pretrain.views``).
        variant: this variant's objectives (``pretrain.variants.<name>``).
    """

    stage: ClassVar[str] = "pretrain"
    """The entry of :data:`retailnb.config.stages.STAGES` that says where each field comes from."""

    backbone: BackboneSpec
    compute: ComputeSpec
    model: ContrastiveModelSpec
    sampler: SamplerSpec
    engine: EngineSpec
    views: PretrainViewsSpec
    variant: ObjectivesSpec

    def with_seed(self, seed: int) -> PretrainStageSpec:
        """The run of training seed ``seed`` (an entry of ``evaluate.seeds``): the engine's seed plus it."""
        return self.model_copy(update={"engine": self.engine.model_copy(update={"seed": self.engine.seed + seed})})

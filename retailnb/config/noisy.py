"""The noisy-student stage's parameters (``noisy``)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from retailnb.config.base import BatchSize, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability, Spec
from retailnb.config.compute import BackboneSpec, ComputeSpec, EngineSpec

RANDAUGMENT_MAX = 30
"""torchvision's RandAugment has 31 magnitude bins: 0 to 30."""


class PseudolabelSpec(Spec):
    """How teacher probabilities become pseudolabels (``noisy.pseudo``).

    Attributes:
        threshold: minimum teacher confidence (largest class probability) for an image to be kept; an
            image whose confidence equals the threshold is kept.
        soft: train on soft targets (teacher probabilities sharpened by ``temperature``) instead of
            one-hot targets of the teacher's argmax.
        temperature: sharpening temperature of soft targets; 1 keeps the teacher's probabilities,
            smaller values push them towards one-hot. Ignored for hard targets.
        balance: cap over-represented classes and fill under-represented ones (``max_per_class``,
            ``min_per_class``); false keeps every image that passes the threshold, once.
        max_per_class: most images a class keeps (its most confident ones); null derives the cap as the
            median kept count over the classes that kept any image, rounded up.
        min_per_class: classes that kept fewer images (but at least one) have their most confident
            images duplicated up to this count; 0 turns duplication off.
    """

    threshold: Probability
    soft: bool
    temperature: PositiveFloat
    balance: bool
    max_per_class: PositiveInt | None
    min_per_class: NonNegativeInt

    @model_validator(mode="after")
    def _min_below_max(self) -> PseudolabelSpec:
        if self.max_per_class is not None and self.min_per_class > self.max_per_class:
            raise ValueError(f"min_per_class ({self.min_per_class}) must not exceed max_per_class "
                             f"({self.max_per_class})")
        return self


class StudentSpec(Spec):
    """The student network and its model noise (``noisy.student``).

    Attributes:
        architecture: timm name of the student; empty for the teacher's (``backbone.architecture``).
        init: ``teacher`` (start from the teacher's backbone) or ``scratch``.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth.
    """

    architecture: str
    init: Literal["teacher", "scratch"]
    drop_rate: Probability
    drop_path_rate: Probability


class RandAugmentSpec(Spec):
    """The student's input noise (``noisy.randaugment``).

    Attributes:
        magnitude: strength, 0 to 30.
        ops: random operations per image.
    """

    magnitude: Annotated[int, Field(ge=0, le=RANDAUGMENT_MAX)]
    ops: NonNegativeInt


class StudentSupConSpec(Spec):
    """Optional SupCon on the student's features, positives sharing a (pseudo)label (``noisy.supcon``).

    Attributes:
        weight: its weight beside cross-entropy; 0 switches it off.
        temperature: its softmax temperature.
        images_per_class: images sharing a (pseudo)label placed together in a batch (its positives).
        batch_fraction: share of each batch given to such groups.
    """

    weight: NonNegativeFloat
    temperature: PositiveFloat
    images_per_class: Annotated[int, Field(ge=2)]
    batch_fraction: Probability


class NoisySpec(Spec):
    """The ``noisy`` section.

    Attributes:
        teacher_variant: the pretraining variant whose backbone is round 1's teacher.
        rounds: teacher-student rounds.
        teacher_classifier: round 1's classifier on frozen features: ``logreg`` or ``linear``.
        student: the student network and its noise.
        randaugment: the student's input noise.
        supcon: optional SupCon on the student's features.
        pseudo: pseudolabel selection.
        batch_size: images per batch and process.
        engine: optimisation of each student.
    """

    teacher_variant: str
    rounds: PositiveInt
    teacher_classifier: Literal["logreg", "linear"]
    student: StudentSpec
    randaugment: RandAugmentSpec
    supcon: StudentSupConSpec
    pseudo: PseudolabelSpec
    batch_size: BatchSize
    engine: EngineSpec


class NoisyStageSpec(Spec):
    """Everything the noisy-student stage reads: ``backbone``, ``compute`` and ``noisy``."""

    stage: ClassVar[str] = "noisy"
    """The entry of :data:`retailnb.config.stages.STAGES` that says where each field comes from."""

    backbone: BackboneSpec
    compute: ComputeSpec
    noisy: NoisySpec

    @property
    def student_architecture(self) -> str:
        """The student's timm architecture."""
        return self.noisy.student.architecture or self.backbone.architecture

    def with_seed(self, seed: int) -> NoisyStageSpec:
        """The run of training seed ``seed`` (an entry of ``evaluate.seeds``): the engine's seed plus it."""
        engine = self.noisy.engine.model_copy(update={"seed": self.noisy.engine.seed + seed})
        return self.model_copy(update={"noisy": self.noisy.model_copy(update={"engine": engine})})

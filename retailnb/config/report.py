"""The report stage's parameters."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from retailnb.config.base import Spec, TrainingSeeds
from retailnb.config.pretrain import ObjectivesSpec


class ReportSpec(Spec):
    """The report (``report``).

    Attributes:
        confidence: level of the t-intervals over training seeds (0.95: 95% intervals); the report calls
            one result better than another only when their intervals do not overlap.
    """

    confidence: Annotated[float, Field(gt=0.5, lt=1.0)]


class ReportStageSpec(Spec):
    """Everything the report reads.

    Attributes:
        report: the report's settings (``report``).
        seeds: the training seeds whose runs it aggregates (``evaluate.seeds``); runs of other seeds left on
            disk by an earlier setting are not read.
        variants: the pretraining variants (``pretrain.variants``) whose records it reads; records of a
            variant no longer in ``params.yaml``, left on disk, are not read.
    """

    stage: ClassVar[str] = "report"
    """The entry of :data:`retailnb.config.stages.STAGES` that says where each field comes from."""

    report: ReportSpec
    seeds: TrainingSeeds
    variants: dict[str, ObjectivesSpec]

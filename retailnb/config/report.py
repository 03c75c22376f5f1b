"""The report stage's parameters."""

from __future__ import annotations

from retailnb.config.base import NonNegativeFloat, Spec


class ReportSpec(Spec):
    """The report (``report``).

    Attributes:
        tolerance: smallest accuracy difference called an improvement (a larger recorded standard
            deviation replaces it).
    """

    tolerance: NonNegativeFloat


class ReportStage(Spec):
    """Everything the report reads: ``report``."""

    report: ReportSpec

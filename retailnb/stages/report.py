"""The report stage: the results table of every target and the headline metrics, from the stages' records."""

from __future__ import annotations

from dataclasses import dataclass

from retailnb.atomic import atomic_write_text
from retailnb.records import (
    DataRecord,
    EvaluateRecord,
    HeadlineRecord,
    NoisyRecord,
    PretrainRecord,
)
from retailnb.report import headline, read_optional, read_records, results_markdown


@dataclass(frozen=True)
class ReportPaths:
    """Where the stage reads (the other stages' records) and writes (the table and the headline metrics)."""

    data: str
    pretrain: str
    noisy: str
    evaluate: str
    table: str
    headline: str


@dataclass(frozen=True)
class ReportInputs:
    """Every record the report reads (None or empty where a stage has not run), and what it wrote."""

    data: DataRecord | None
    pretrain: dict[str, PretrainRecord]
    noisy: NoisyRecord | None
    evaluations: dict[str, EvaluateRecord]
    table: str
    headline: HeadlineRecord


def run(paths: ReportPaths) -> ReportInputs:
    """Read the records, write ``results.md`` and ``metrics/headline.json`` (atomically).

    Raises:
        FileNotFoundError: no evaluation record: the evaluate stage has not run.
    """
    evaluations = read_records(EvaluateRecord, paths.evaluate)
    if not evaluations:
        raise FileNotFoundError(f"{paths.evaluate}: no evaluation metrics; run the evaluate stage first "
                                "(dvc repro evaluate)")
    noisy = read_optional(NoisyRecord, paths.noisy)
    table = results_markdown(evaluations)
    summary = headline(evaluations, noisy)
    atomic_write_text(paths.table, table)
    summary.write(paths.headline)
    return ReportInputs(data=read_optional(DataRecord, paths.data), pretrain=read_records(PretrainRecord, paths.pretrain),
                        noisy=noisy, evaluations=evaluations, table=table, headline=summary)

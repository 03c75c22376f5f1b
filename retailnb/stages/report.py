"""The report stage: every target's results over the training seeds, as a table, a summary and headline metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retailnb.util.atomic import atomic_write_text
from retailnb.config.report import ReportStageSpec
from retailnb.results.records import DataRecord, HeadlineRecord, SummaryRecord, read_record
from retailnb.results.markdown import results_markdown
from retailnb.results.summary import SeedRecords, headline, read_seeds, summarize


@dataclass(frozen=True)
class ReportPaths:
    """Where the stage reads (the other stages' records) and writes.

    Attributes:
        data: the data stage's record.
        seeds: the folder of per-seed records (``<seed>/pretrain/``, ``<seed>/noisy.json``,
            ``<seed>/evaluate/``).
        table: the results tables (Markdown).
        summary: every result's interval over the seeds (JSON).
        headline: the headline metrics (``dvc metrics show``).
    """

    data: str
    seeds: str
    table: str
    summary: str
    headline: str


@dataclass(frozen=True)
class ReportInputs:
    """Every record the report read, and what it wrote."""

    data: DataRecord | None
    seeds: dict[int, SeedRecords]
    summary: SummaryRecord
    table: str
    headline: HeadlineRecord


def run(spec: ReportStageSpec, paths: ReportPaths) -> ReportInputs:
    """Read the records of every seed of ``evaluate.seeds``; write the table, the summary and the headline
    (each atomically).

    Raises:
        FileNotFoundError: a seed's evaluation has not run.
        ValueError: the seeds' runs are not repetitions of one setup.
    """
    seeds = read_seeds(paths.seeds, spec.seeds, variants=set(spec.variants))
    summary = summarize(seeds, spec.report.confidence)
    table = results_markdown(summary.targets, summary.confidence)
    top = headline(summary)
    atomic_write_text(paths.table, table)
    summary.write(paths.summary)
    top.write(paths.headline)
    data = read_record(DataRecord, paths.data) if Path(paths.data).is_file() else None
    return ReportInputs(data=data, seeds=seeds, summary=summary, table=table, headline=top)

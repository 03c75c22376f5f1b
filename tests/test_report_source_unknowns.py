"""The rejection table's second unknown set, the source's unlabelled-only products: two columns and a sentence
when a record measured them, the table exactly as before when not, and nothing more in the headline."""

from __future__ import annotations

from typing import Any

from shared_fixtures import REPO
from test_report import SEEDS, leaf_count, record, table_rows, with_store_cells

from retailnb.records import EvaluateRecord, read_record
from retailnb.report import rejection_heading, rejection_table_markdown, results_markdown
from retailnb.summary import SeedRecords, headline, summarize, summarize_target

BEFORE = ["method", "AUROC, max. softmax probability", "AUROC, energy", "AUROC, nearest prototype",
          "known accuracy", "unknown rejected", "known accepted"]
"""The rejection table's header without the source products."""


def with_source_cells(seed: int) -> dict[str, Any]:
    """:func:`with_store_cells` plus the source products' cells of every score (the prototype's: AUROC 0.8 and
    0.7 of them rejected for a pretrained backbone) and their number in the rejection setup."""
    metrics = with_store_cells(seed)
    j = {0: -0.01, 1: 0.0, 2: 0.01}[seed]
    for name, row in metrics["methods"].items():
        pretrained = name != "random_init"
        for score, auroc in (("msp", 0.65), ("energy", 0.6), ("prototype", 0.8 if pretrained else 0.55)):
            row[f"reject_{score}_source_auroc"] = auroc + j
            row[f"reject_{score}_source_unknown_rejection"] = (0.7 if score == "prototype" else 0.2) + j
    metrics["rejection"] = {**metrics["rejection"], "n_source_unknown": 30}
    return metrics


def test_the_source_columns_follow_the_best_score_and_the_heading_counts_the_products() -> None:
    summary = summarize_target("prepared", {s: record(with_source_cells(s)) for s in SEEDS}, 0.95)
    rows = table_rows(rejection_table_markdown(summary))
    assert rows[0] == [*BEFORE, "AUROC, source products", "source products rejected"]
    main = next(r for r in rows if r[0] == "`simclr_supcon` (main)")
    assert main[-2:] == ["0.800 ± 0.025", "0.700 ± 0.025"]  # the prototype score's, the best one
    assert next(r for r in rows if r[0] == "`random_init`")[-2] == "0.550 ± 0.025"
    heading = rejection_heading(summary)
    assert "Unknown-product rejection: 10 of the 40 products held out" in heading
    assert "the source's 30 unlabelled-only products" in heading and "at the same threshold" in heading
    assert "source products" in results_markdown({"prepared": summary}, 0.95)


def test_without_source_cells_the_table_and_heading_are_as_before() -> None:
    summary = summarize_target("prepared", {s: record(with_store_cells(s)) for s in SEEDS}, 0.95)
    assert table_rows(rejection_table_markdown(summary))[0] == BEFORE
    heading = rejection_heading(summary)
    assert "unlabelled-only" not in heading and heading.endswith("held-out photos rejected, known photos accepted.\n")
    # a setup that counted source products but cells that lack them (a column only when measured)
    counted = summarize_target("prepared", {s: record(with_store_cells(s), rejection={
        "n_known": 30, "n_unknown": 10, "recall": 0.95, "n_source_unknown": 0}) for s in SEEDS}, 0.95)
    assert table_rows(rejection_table_markdown(counted))[0] == BEFORE and rejection_heading(counted) == heading


def test_the_committed_records_read_without_source_products() -> None:
    """The repository's committed evaluation records predate the source products: they read as before."""
    records = {s: read_record(EvaluateRecord, REPO / "metrics" / "seeds" / str(s) / "evaluate" / "prepared.json")
               for s in SEEDS}
    assert all(r.rejection is not None and r.rejection.n_source_unknown == 0 for r in records.values())
    summary = summarize_target("prepared", records, 0.95)
    assert table_rows(rejection_table_markdown(summary))[0] == BEFORE
    assert "unlabelled-only" not in rejection_heading(summary)


def test_the_headline_does_not_grow_with_the_source_products() -> None:
    def leaves(cells: Any) -> int:
        seeds = {s: SeedRecords(pretrain={}, noisy=None, evaluations={"prepared": record(cells(s))}) for s in SEEDS}
        return leaf_count(headline(summarize(seeds, 0.95)).model_dump())

    assert leaves(with_source_cells) == leaves(with_store_cells) <= 30

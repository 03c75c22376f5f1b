"""The rejection table's second unknown set, the source's unlabelled-only products: two columns and a sentence
when a record measured them, the table exactly as before when not, and nothing more in the headline."""

from __future__ import annotations

import json
from typing import Any

from shared_fixtures import REPO
from test_report import SEEDS, leaf_count, record, table_rows, with_store_cells

from retailnb.results.records import EvaluateRecord
from retailnb.results.markdown import rejection_heading, rejection_table_markdown, results_markdown
from retailnb.results.summary import SeedRecords, headline, summarize, summarize_target

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


def without_source(metrics: dict[str, Any]) -> dict[str, Any]:
    """An evaluation record's JSON as the stage wrote it before the source products: no source cells and no
    ``n_source_unknown`` in its rejection setup."""
    methods = {name: {k: v for k, v in row.items() if "_source_" not in k} for name, row in metrics["methods"].items()}
    rejection = {k: v for k, v in metrics["rejection"].items() if k != "n_source_unknown"}
    return {**metrics, "methods": methods, "rejection": rejection}


def test_records_written_before_the_source_products_read_as_before() -> None:
    """The committed records measure the source products; the same records without them (as older runs
    wrote them) still validate, count no source product, and give the table and heading of before."""
    committed = {s: json.loads((REPO / "metrics" / "seeds" / str(s) / "evaluate" / "prepared.json").read_text())
                 for s in SEEDS}
    assert all(c["rejection"]["n_source_unknown"] > 0 for c in committed.values())
    records = {s: EvaluateRecord.model_validate(without_source(c)) for s, c in committed.items()}
    assert all(r.rejection is not None and r.rejection.n_source_unknown == 0 for r in records.values())
    summary = summarize_target("prepared", records, 0.95)
    # the committed records measure every score: one AUROC column each, then the threshold's columns
    from retailnb.config.score_names import SCORES
    from retailnb.results.markdown import SCORE_NAMES

    header = [BEFORE[0], *(f"AUROC, {SCORE_NAMES[score]}" for score in SCORES), *BEFORE[4:]]
    assert table_rows(rejection_table_markdown(summary))[0] == header
    assert "unlabelled-only" not in rejection_heading(summary)
    now = summarize_target("prepared", {s: EvaluateRecord.model_validate(c) for s, c in committed.items()}, 0.95)
    assert table_rows(rejection_table_markdown(now))[0] == [*header, "AUROC, source products",
                                                             "source products rejected"]


def test_the_headline_does_not_grow_with_the_source_products() -> None:
    def leaves(cells: Any) -> int:
        seeds = {s: SeedRecords(pretrain={}, noisy=None, evaluations={"prepared": record(cells(s))}) for s in SEEDS}
        return leaf_count(headline(summarize(seeds, 0.95)).model_dump())

    assert leaves(with_source_cells) == leaves(with_store_cells) <= 10

"""Known answers for the intervals, the summary over seeds, the report's table and verdicts, and a papermill
run of the report notebook on fake per-seed metrics."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from shared_fixtures import REPO

from retailnb.config.pretrain import ObjectivesSpec
from retailnb.config.report import ReportSpec, ReportStageSpec
from retailnb.results.intervals import order, t_interval
from retailnb.results.records import (
    DataRecord,
    EvaluateRecord,
    NoisyRecord,
    PretrainRecord,
    ProbeScores,
    RoundRecord,
    SummaryRecord,
    TrainSummary,
    read_record,
)
from retailnb.results.markdown import (
    best_rejection_score,
    combination_pairs,
    compare,
    answer_sentences,
    comparisons,
    data_sentence,
    fmt,
    method_table_markdown,
    monitor_table_markdown,
    noisy_table_markdown,
    rejection_table_markdown,
    results_markdown,
    shot_keys,
    verdict_table_markdown,
    verdicts,
)
from retailnb.stages import report as stage
from retailnb.results.summary import SeedRecords, headline, read_seed, summarize, summarize_target

NOTEBOOK = REPO / "notebooks" / "05_report.ipynb"
SEEDS = (0, 1, 2)


def method(p1: float, p5: float, p10: float | None, p_all: float, knn: float, finetuned: float = 0.8) -> dict[str, Any]:
    row: dict[str, Any] = {"probe_1": p1, "probe_1_std": 0.05, "probe_5": p5, "probe_5_std": 0.03}
    if p10 is not None:
        row.update(probe_10=p10, probe_10_std=0.02)
    row.update(probe_all=p_all, probe_all_std=0.0, knn_all=knn, ratio_to_finetune=p_all / finetuned)
    return row


def finetuned(accuracy: float, lr: float, best_epoch: int) -> dict[str, Any]:
    """A finetuning baseline's record: a two-point grid whose ``lr`` won on validation."""
    grid = [{"lr": lr, "val_accuracy": 0.7, "best_epoch": best_epoch, "epochs": best_epoch + 5},
            {"lr": lr * 10, "val_accuracy": 0.6, "best_epoch": 2, "epochs": 7}]
    return {"accuracy": accuracy, "lr": lr, "best_epoch": best_epoch, "val_accuracy": 0.7,
            "grid": grid}


JITTER = {0: -0.01, 1: 0.0, 2: 0.01}
"""Each seed's offset from the base values: a spread of 0.01 (sd), so a t-interval over 3 seeds is ±0.0248."""


def evaluate_metrics(seed: int = 1) -> dict[str, Any]:
    """One seed's evaluation. With :data:`JITTER` over 3 seeds: pretraining beats random weights, the combination
    beats SimCLR alone but not SupCon alone (0.72 against 0.715), round 1 beats round 0 with all images and round 2
    does not (0.725)."""
    j = JITTER.get(seed, 0.5)  # another seed: far off, so reading it by mistake would show
    return {
        "methods": {
            "random_init": method(0.10 + j, 0.15, 0.18, 0.20 + j, 0.12),
            "simclr": method(0.30 + j, 0.45, 0.50, 0.60 + j, 0.40),
            "supcon": method(0.35 + j, 0.50, 0.60, 0.715 + j, 0.50),
            "simclr_supcon": method(0.40 + j, 0.55, 0.62, 0.72 + j, 0.55),
            "noisy_round_1": method(0.45 + j, 0.60, 0.66, 0.78 + j, 0.60),
            "noisy_round_2": method(0.40 + j, 0.55, 0.62, 0.725 + j, 0.55),
        },
        "finetune": {"pretrained": finetuned(0.8 + j, 0.001 if seed != 2 else 0.003, 12 + seed),
                     "random_init": finetuned(0.4 + j, 0.003, 20)},
        "main_variant": "simclr_supcon",
        "n_classes": 25,
    }


def record(metrics: dict[str, Any], **fields: Any) -> EvaluateRecord:
    """The :class:`EvaluateRecord` of ``metrics`` (as built by :func:`evaluate_metrics`, maybe edited)."""
    base = {"target": "prepared", "target_source": "prepared", "n_train": 10, "n_test": 20, "n_overlap_dropped": 0}
    return EvaluateRecord(**{**base, **metrics, **fields})


def per_seed(seeds: tuple[int, ...] = SEEDS, **fields: Any) -> dict[int, EvaluateRecord]:
    return {s: record(evaluate_metrics(s), **fields) for s in seeds}


def pretrain_record(variant: str, simclr: float, supcon: float, simsiam: float = 0.0) -> PretrainRecord:
    scores = {"pretrained": ProbeScores(knn_accuracy=0.5, probe_accuracy=0.6, probe_c=1.0),
              "random_init": ProbeScores(knn_accuracy=0.1, probe_accuracy=0.2, probe_c=1.0)}
    objectives = {"simclr": simclr, "supcon": supcon, "simsiam": simsiam}
    return PretrainRecord(variant=variant, objectives=objectives, monitor=scores,
                          train=TrainSummary(final_loss=1.0), history={"loss": [2.0, 1.0]})


PRETRAIN = {"simclr": pretrain_record("simclr", 1.0, 0.0), "supcon": pretrain_record("supcon", 0.0, 1.0),
            "simclr_supcon": pretrain_record("simclr_supcon", 1.0, 0.5)}
"""The three variants of params.yaml, with the combination weighted otherwise (weights do not decide pairs)."""

NOISY = NoisyRecord(
    rounds=[
        RoundRecord(round=0, probe_accuracy=0.72, knn_accuracy=0.55, probe_c=1.0),
        RoundRecord(round=1, probe_accuracy=0.78, knn_accuracy=0.60, probe_c=1.0, precision=0.83, coverage=0.61),
        RoundRecord(round=2, probe_accuracy=0.725, knn_accuracy=0.55, probe_c=1.0, precision=0.8, coverage=0.7),
    ],
    best_round=1,
)


def table_rows(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in markdown.strip().splitlines()]


def test_t_interval_known_answer() -> None:
    cell = t_interval([0.1, 0.2, 0.3], 0.95)
    # sd 0.1, t(0.975, df=2) = 4.302653: half-width 4.302653 * 0.1 / sqrt(3) = 0.248414
    assert cell.mean == pytest.approx(0.2) and cell.half_width == pytest.approx(0.248414, abs=1e-6)
    assert (cell.n, cell.values) == (3, [0.1, 0.2, 0.3])
    assert t_interval([0.1, 0.2, 0.3], 0.9).half_width == pytest.approx(2.919986 * 0.1 / 3 ** 0.5, abs=1e-6)
    single = t_interval([0.4])
    assert (single.mean, single.low, single.high, single.half_width) == (0.4, None, None, None)
    with pytest.raises(ValueError):
        t_interval([])


def test_order_claims_a_difference_only_when_the_intervals_separate() -> None:
    low, high = t_interval([0.20, 0.21, 0.22]), t_interval([0.30, 0.31, 0.32])
    overlapping = t_interval([0.18, 0.25, 0.30])
    assert order(high, low) == "higher" and order(low, high) == "lower"
    assert order(overlapping, low) == "no difference measured" == order(low, overlapping)
    assert order(t_interval([0.9]), t_interval([0.1])) == "no difference measured"  # one seed: no interval


def test_compare_wording_for_separated_overlapping_and_single_seed_intervals() -> None:
    low, high = t_interval([0.20, 0.21, 0.22]), t_interval([0.30, 0.31, 0.32])
    overlapping = t_interval([0.18, 0.25, 0.30])
    assert compare(("`main`", high), ("random weights", low), "probe accuracy with all images") == (
        "`main` beats random weights on probe accuracy with all images: 0.310 [0.285, 0.335] for `main` against "
        "0.210 [0.185, 0.235] for random weights (95% intervals over 3 training seeds; the intervals do not overlap)."
        " Paired by seed, `main` minus random weights is +0.100 [+0.100, +0.100].")
    assert compare(("`main`", low), ("random weights", high), "x").startswith("Random weights beats `main` on x:")
    assert compare(("`main`", overlapping), ("random weights", low), "x").startswith(
        "No difference measured between `main` and random weights on x: 0.243 [")
    assert "the intervals overlap). Paired by seed, `main` minus random weights is +0.033 [" in compare(
        ("`main`", overlapping), ("random weights", low), "x")
    one = compare(("`main`", t_interval([0.9])), ("random weights", t_interval([0.1])), "x")
    assert one == ("No difference measured between `main` and random weights on x: 0.900 for `main` against 0.100 "
                   "for random weights (one training seed: no interval, so no difference can be measured).")


def test_summary_turns_each_cell_into_an_interval_over_the_seeds() -> None:
    summary = summarize_target("prepared", per_seed(), 0.95)
    cell = summary.methods["simclr_supcon"]["probe_all"]
    assert cell.values == pytest.approx([0.71, 0.72, 0.73]) and cell.mean == pytest.approx(0.72)
    assert cell.half_width == pytest.approx(4.302653 * 0.01 / 3 ** 0.5, abs=1e-6)
    assert "probe_all_std" not in summary.methods["simclr_supcon"]  # the draws' spread is replaced by the seeds'
    tuned = summary.finetune["pretrained"]
    assert tuned.lrs == [0.001, 0.001, 0.003] and tuned.best_epochs == [12, 13, 14]
    assert summary.probe_to_finetune is not None
    assert summary.probe_to_finetune.values == pytest.approx([0.71 / 0.79, 0.72 / 0.8, 0.73 / 0.81])
    assert summary.noisy_gain is not None and summary.noisy_gain.values == pytest.approx([0.005] * 3)  # last round


def test_summary_refuses_seeds_that_are_not_repetitions_of_one_setup(tmp_path: Path) -> None:
    runs = per_seed()
    runs[2] = record(evaluate_metrics(2), n_test=21)
    with pytest.raises(ValueError, match="training seed 2 evaluated another setup"):
        summarize_target("prepared", runs, 0.95)
    seeds = {s: SeedRecords(pretrain={}, noisy=None, evaluations={"prepared": r}) for s, r in per_seed().items()}
    seeds[1] = SeedRecords(pretrain={}, noisy=None, evaluations={})
    with pytest.raises(ValueError, match="different targets"):
        summarize(seeds, 0.95)
    with pytest.raises(FileNotFoundError, match=r"training seed 3; run its stages first \(dvc repro evaluate@<target>-3\)"):
        read_seed(tmp_path, 3)


def test_method_table_gives_mean_and_half_width_and_each_seeds_choice() -> None:
    rows = table_rows(method_table_markdown(summarize_target("prepared", per_seed(), 0.95)))
    assert rows[0] == ["method", "1-shot", "5-shot", "10-shot", "all images", "kNN (all images)", "ratio to finetuned"]
    main = next(r for r in rows if r[0] == "`simclr_supcon` (main)")
    assert main[4] == "0.720 ± 0.025" and main[6] == f"{0.72 / 0.8:.2f}"
    assert main[2] == "0.550 ± 0.000"  # identical in every seed: a zero-width interval
    tuned = next(r for r in rows if r[0].startswith("finetuned from `simclr_supcon`"))
    assert tuned[0] == "finetuned from `simclr_supcon` (lr 0.001/0.001/0.003, epoch 12/13/14)"
    assert tuned[1:4] == ["–"] * 3 and tuned[4] == "0.800 ± 0.025" and tuned[-1] == "1.00"
    scratch = rows[-1]
    assert scratch[0] == "finetuned from random weights (lr 0.003, epoch 20)"
    assert shot_keys(summarize_target("prepared", per_seed(), 0.95).methods) == [
        "probe_1", "probe_5", "probe_10", "probe_all"]


def test_verdicts_follow_the_intervals() -> None:
    summary = summarize_target("prepared", per_seed(), 0.95)
    lines = verdicts(summary, PRETRAIN, [NOISY] * 3)
    text = "\n".join(lines)
    assert lines[0].startswith("With all training images, a logistic regression on the frozen features of the main "
                               "backbone (`simclr_supcon`) reaches 90% (interval")
    assert "Finetuning the main backbone beats the frozen-feature probe of `simclr_supcon` on test accuracy" in text
    assert "Finetuning from `simclr_supcon` beats finetuning from random weights on test accuracy" in text
    assert "`simclr_supcon` beats random weights on probe accuracy with all images: 0.720 [" in text
    assert "`simclr_supcon` beats random weights on probe accuracy with 1 image per product" in text
    assert "SimCLR + SupCon beats SimCLR alone on probe accuracy with all images" in text
    # 0.72 against 0.715 with ±0.025: the intervals overlap
    assert "No difference measured between SimCLR + SupCon and SupCon alone on probe accuracy with all images" in text
    assert ("Noisy-student round 1 beats round 0 (the contrastive backbone alone) on probe accuracy with all images"
            in text)
    assert ("No difference measured between noisy-student round 2 and round 0 (the contrastive backbone alone) on "
            "probe accuracy with all images") in text
    assert text.count("Its pseudolabels: precision 0.83, coverage 0.61 (means over seeds).") == 1
    # one seed: nothing is claimed, whatever the means
    single = verdicts(summarize_target("prepared", per_seed((0,)), 0.95), PRETRAIN)
    assert not any(" beats " in line for line in single)
    assert sum(line.startswith("No difference measured") for line in single) >= 6


def test_side_tables_and_data_sentence() -> None:
    summary = summarize_target("prepared", per_seed(), 0.95)
    noisy = table_rows(noisy_table_markdown([NOISY, NOISY], summary))
    assert [r[0] for r in noisy[2:]] == ["0 (`simclr_supcon`, contrastive only)", "1", "2"]
    assert noisy[0] == ["round", "probe, all images", "pseudolabel precision", "pseudolabel coverage"]
    # one value per quantity: round 0 is the main backbone's row of the results table, each round its own row
    assert noisy[2][1] == fmt(summary.methods["simclr_supcon"]["probe_all"])
    assert noisy[4][1] == fmt(summary.methods["noisy_round_2"]["probe_all"])
    assert noisy[2][2] == "–" and noisy[3][2] == "0.830 ± 0.000"
    monitor = table_rows(monitor_table_markdown([PRETRAIN]))
    assert monitor[0][:2] == ["variant", "objectives"]
    assert monitor[2] == ["`simclr`", "SimCLR", "0.500", "0.100", "0.600", "0.200"]
    assert monitor[4][:2] == ["`simclr_supcon`", "SimCLR + SupCon"]
    sentence = data_sentence(data_record({"labelled": 360, "unlabelled": 1000, "probe_train": 300, "probe_test": 375},
                                         {"labelled": 30, "probe_train": 25, "probe_test": 25}, 0))
    assert "360 labelled (30 products)" in sentence and "375 test (25 products)" in sentence
    assert sentence.endswith("of a target catalogue that pretraining never saw.")
    seen = data_sentence(data_record({}, {"probe_test": 81}, 81))
    assert seen.endswith("(pretraining saw 81 of the 81 target products).")
    held = data_sentence(data_record({}, {"probe_test": 81}, 81, unseen=900))
    assert held.endswith("(pretraining saw 81 of the 81 target products; 900 training images stayed out of training, "
                         "for the unknown-product thresholds).")


def data_record(images: dict[str, int], classes: dict[str, int], seen: int, unseen: int = 0) -> DataRecord:
    return DataRecord(images=images, classes=classes, domains={}, unique_images=sum(images.values()),
                      probe_train_min_per_class=1, target_classes_in_source=seen, probe_train_unseen=unseen)


def test_combinations_come_from_the_records_objectives_not_the_variant_names() -> None:
    assert combination_pairs(PRETRAIN) == [("simclr_supcon", "simclr"), ("simclr_supcon", "supcon")]
    renamed = {"both": PRETRAIN["simclr_supcon"], "ntxent": PRETRAIN["simclr"], "sup": PRETRAIN["supcon"]}
    assert combination_pairs(renamed) == [("both", "ntxent"), ("both", "sup")]
    assert combination_pairs({"simclr": PRETRAIN["simclr"], "supcon": PRETRAIN["supcon"]}) == []
    assert combination_pairs({"simclr_supcon": PRETRAIN["simclr_supcon"]}) == []
    runs = {}
    for s in SEEDS:
        evaluate = evaluate_metrics(s)
        methods = evaluate["methods"]
        methods["both"], methods["ntxent"] = methods.pop("simclr_supcon"), methods.pop("simclr")
        runs[s] = record(evaluate, main_variant="both")
    lines = verdicts(summarize_target("prepared", runs, 0.95), renamed)
    assert any(line.startswith("SimCLR + SupCon beats SimCLR alone on probe accuracy with all images") for line in lines)
    assert not any("SupCon alone" in line for line in lines)  # "sup" has no row in the table


def test_a_simsiam_variant_reads_as_simsiam_in_the_ablation() -> None:
    """The commented-out ``simsiam`` variant of params.yaml: its row is labelled SimSiam, and a variant that
    adds SimSiam to SimCLR is judged against each alone."""
    with_simsiam = {**PRETRAIN, "simsiam": pretrain_record("simsiam", 0.0, 0.0, 1.0),
                    "simclr_simsiam": pretrain_record("simclr_simsiam", 1.0, 0.0, 1.0)}
    monitor = table_rows(monitor_table_markdown([with_simsiam]))
    labels = {row[0]: row[1] for row in monitor[2:]}
    assert labels == {"`simclr`": "SimCLR", "`supcon`": "SupCon", "`simclr_supcon`": "SimCLR + SupCon",
                      "`simsiam`": "SimSiam", "`simclr_simsiam`": "SimCLR + SimSiam"}
    assert combination_pairs(with_simsiam)[-2:] == [("simclr_simsiam", "simclr"), ("simclr_simsiam", "simsiam")]
    runs = {}
    for s in SEEDS:
        evaluate = evaluate_metrics(s)
        evaluate["methods"]["simclr_simsiam"] = evaluate["methods"].pop("simclr_supcon")
        evaluate["methods"]["simsiam"] = evaluate["methods"]["simclr"]
        runs[s] = record(evaluate, main_variant="simclr_simsiam")
    lines = verdicts(summarize_target("prepared", runs, 0.95), with_simsiam)
    assert any("SimCLR + SimSiam" in line and "SimSiam alone" in line for line in lines), lines


def test_results_markdown_has_a_headed_table_per_target() -> None:
    targets = {"prepared": summarize_target("prepared", per_seed(), 0.95),
               "shop": summarize_target("shop", per_seed(target="shop", target_source="imagefolder", n_classes=3),
                                        0.95)}
    text = results_markdown(targets, 0.95)
    headings = [line for line in text.splitlines() if line.startswith("### ")]
    assert headings == ["### Target `prepared`, prepared: 25 products, 10 training and 20 test images, 3 training seeds",
                        "### Target `shop`, imagefolder: 3 products, 10 training and 20 test images, 3 training seeds"]
    assert text.count("| method |") == 2 and text.count("finetuned from random weights") == 2
    assert "± the half-width of its 95% t-interval" in text


def leaf_count(node: Any) -> int:
    """Numbers in a nested mapping, as ``dvc metrics show`` counts them (None counts too)."""
    return sum(leaf_count(v) for v in node.values()) if isinstance(node, dict) else 1


def test_the_headline_is_the_first_targets_few_figures_rounded() -> None:
    seeds = {s: SeedRecords(pretrain=PRETRAIN, noisy=NOISY, evaluations={"prepared": r}) for s, r in per_seed().items()}
    summary = summarize(seeds, 0.95)
    top = headline(summary)
    assert top.main.all == 0.72 and top.main.ci == round(4.302653 * 0.01 / 3 ** 0.5, 3)
    assert top.student is not None and top.student.all == round(summary.targets["prepared"].methods["noisy_round_2"]["probe_all"].mean, 3)
    assert top.finetune == 0.8 and top.seeds == 3
    assert top.ratio == round(summary.targets["prepared"].probe_to_finetune.mean, 3)  # type: ignore[union-attr]
    assert leaf_count(top.model_dump()) == 8


def write_fake_metrics(root: Path, seeds: tuple[int, ...] = SEEDS) -> None:
    for s in seeds:
        folder = root / "metrics" / "seeds" / str(s)
        for target in ("prepared", "grocery_fine"):
            record(evaluate_metrics(s), target=target, target_source=target).write(
                folder / "evaluate" / f"{target}.json")
        NOISY.write(folder / "noisy.json")
        for variant, pretrain in PRETRAIN.items():
            pretrain.write(folder / "pretrain" / f"{variant}.json")
    data_record({"labelled": 36}, {"labelled": 3}, 0).write(root / "metrics" / "data.json")


VARIANTS = {name: ObjectivesSpec(simclr_weight=1.0, supcon_weight=0.0, simsiam_weight=0.0) for name in PRETRAIN}
"""The pretraining variants of the fake records (the report reads only their names from params)."""


def test_report_stage_reads_only_the_listed_seeds(tmp_path: Path) -> None:
    write_fake_metrics(tmp_path, (0, 1, 2, 7))
    paths = stage.ReportPaths(data=str(tmp_path / "metrics" / "data.json"), seeds=str(tmp_path / "metrics" / "seeds"),
                              table=str(tmp_path / "results.md"), summary=str(tmp_path / "summary.json"),
                              headline=str(tmp_path / "headline.json"))
    spec = ReportStageSpec(report=ReportSpec(confidence=0.95), seeds=[0, 1, 2], variants=VARIANTS)
    inputs = stage.run(spec, paths)
    assert list(inputs.seeds) == [0, 1, 2]  # seed 7, left on disk by an earlier setting, is not read
    assert read_record(SummaryRecord, tmp_path / "summary.json") == inputs.summary
    with pytest.raises(FileNotFoundError, match="training seed 5"):
        stage.run(ReportStageSpec(report=ReportSpec(confidence=0.95), seeds=[0, 5], variants=VARIANTS), paths)
    # report.confidence changes the intervals it says it changes: 90% is narrower than 95%
    narrow = stage.run(ReportStageSpec(report=ReportSpec(confidence=0.9), seeds=[0, 1, 2], variants=VARIANTS), paths)
    cell95 = inputs.summary.targets["prepared"].methods["simclr_supcon"]["probe_all"]
    cell90 = narrow.summary.targets["prepared"].methods["simclr_supcon"]["probe_all"]
    assert cell90.confidence == 0.9 and cell90.half_width < cell95.half_width  # type: ignore[operator]
    assert read_record(SummaryRecord, tmp_path / "summary.json").confidence == 0.9


@pytest.mark.pipeline
def test_report_notebook_smoke(tmp_path: Path) -> None:
    import nbformat
    import papermill as pm

    write_fake_metrics(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")  # the report's confidence and evaluate.seeds
    figure = tmp_path / "reports" / "figures" / "seeds" / "0" / "04_evaluate_prepared" / "shots.png"
    figure.parent.mkdir(parents=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots(figsize=(1, 1))
    fig.savefig(figure)
    plt.close(fig)
    out = tmp_path / "reports" / "05_report.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(out), kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    table = (tmp_path / "reports" / "results.md").read_text()
    written = read_record(SummaryRecord, tmp_path / "metrics" / "summary.json")
    assert set(written.targets) == {"prepared", "grocery_fine"} and written.seeds == list(SEEDS)
    for name in evaluate_metrics()["methods"]:
        assert f"| `{name}`" in table
    outputs = [o for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    text = "\n".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    # the answer first: a headline figure per target, then the three sentences; then the tables
    assert text.index("A logistic regression on the frozen features") < text.index("| measure | A | B |")
    assert ", 90% (" in text and "| noisy-student round 2: " in text and "no difference measured |" in text
    headlines = [tmp_path / "reports" / "figures" / "05_report" / f"headline_{t}.png" for t in ("prepared", "grocery_fine")]
    assert all(p.is_file() for p in headlines)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # two headlines, and the one seed figure


def with_store_cells(seed: int) -> dict[str, Any]:
    """:func:`evaluate_metrics` plus a catalogue-only probe and rejection cells: the prototype score separates
    known from held-out products best (AUROC 0.9 pretrained, 0.6 random), msp less (0.7), energy barely."""
    metrics = evaluate_metrics(seed)
    j = JITTER[seed]
    for name, row in metrics["methods"].items():
        pretrained = name != "random_init"
        row["probe_catalogue"] = (0.3 if pretrained else 0.05) + j
        for score, auroc in (("msp", 0.7), ("energy", 0.55), ("prototype", 0.9 if pretrained else 0.6)):
            row.update({f"reject_{score}_auroc": auroc + j, f"reject_{score}_known_accuracy": 0.5 + j,
                        f"reject_{score}_unknown_rejection": 0.4 + j, f"reject_{score}_known_acceptance": 0.93 + j})
    metrics["rejection"] = {"n_known": 30, "n_unknown": 10, "recall": 0.95}
    return metrics


def test_the_catalogue_column_and_the_rejection_table_follow_the_cells() -> None:
    summary = summarize_target("prepared", {s: record(with_store_cells(s)) for s in SEEDS}, 0.95)
    rows = table_rows(method_table_markdown(summary))
    assert rows[0][5] == "catalogue only"
    main = next(r for r in rows if r[0] == "`simclr_supcon` (main)")
    assert main[5] == "0.300 ± 0.025"
    assert next(r for r in rows if r[0].startswith("finetuned from `simclr_supcon`"))[5] == "–"
    assert best_rejection_score(summary) == "prototype"
    rejection = table_rows(rejection_table_markdown(summary))
    assert rejection[0] == ["method", "AUROC, max. softmax probability", "AUROC, energy", "AUROC, nearest prototype",
                            "known accuracy", "unknown rejected", "known accepted"]
    main = next(r for r in rejection if r[0] == "`simclr_supcon` (main)")
    assert main[1:] == ["0.700 ± 0.025", "0.550 ± 0.025", "0.900 ± 0.025", "0.500 ± 0.025", "0.400 ± 0.025",
                        "0.930 ± 0.025"]
    text = "\n".join(verdicts(summary, PRETRAIN, [NOISY] * 3))
    assert ("`simclr_supcon` beats random weights on unknown-product rejection (AUROC of the nearest prototype score)"
            in text)
    assert ("No difference measured between noisy-student round 2 and `simclr_supcon` on unknown-product rejection"
            in text)
    assert ("`simclr_supcon` beats random weights on probe accuracy enrolled from the catalogue packshots alone"
            in text)
    markdown = results_markdown({"prepared": summary}, 0.95)
    assert "Unknown-product rejection: 10 of the 40 products held out" in markdown
    assert "for a known-product recall of 95%" in markdown
    # without the cells (an older run): no column, no table
    plain = summarize_target("prepared", per_seed(), 0.95)
    assert "catalogue only" not in method_table_markdown(plain) and rejection_table_markdown(plain) == ""
    assert "Unknown-product rejection" not in results_markdown({"prepared": plain}, 0.95)


def read_fake_store_seeds() -> dict[int, SeedRecords]:
    return {s: SeedRecords(pretrain={}, noisy=None, evaluations={"prepared": record(with_store_cells(s))})
            for s in SEEDS}


def test_the_verdicts_table_has_one_row_per_comparison_with_the_paired_difference() -> None:
    summary = summarize_target("prepared", per_seed(), 0.95)
    found = comparisons(summary, PRETRAIN, [NOISY] * 3)
    rows = table_rows(verdict_table_markdown(found))
    assert rows[0] == ["measure", "A", "B", "A − B, paired by seed", "verdict"]
    assert len(rows) == 2 + len(found)
    assert len(found) == len(verdicts(summary, PRETRAIN, [NOISY] * 3)) - 1  # the sentences add the ratio first
    for row, c in zip(rows[2:], found):
        assert row[1] == f"{c.a_label}: {fmt(c.a)}" and row[2] == f"{c.b_label}: {fmt(c.b)}"
        assert row[4] in (f"{c.a_label} higher", f"{c.b_label} higher", "no difference measured")
        assert row[3].startswith(("+", "-")) and "[" in row[3]  # three seeds: a paired interval


def test_the_answer_is_three_sentences_computed_from_the_intervals() -> None:
    summary = summarize_target("prepared", per_seed(), 0.95)
    first, noisy, random = answer_sentences(summary)
    assert first.startswith("A logistic regression on the frozen features of the main backbone (`simclr_supcon`) "
                            "reaches 0.720 ± 0.025 with all training images, 90%")
    assert "finetuning the whole network (0.800 ± 0.025)" in first
    assert noisy.startswith("The noisy student's round 2 reaches") and "paired by seed" in noisy
    assert random.startswith("The same probe on random weights reaches")
    single = answer_sentences(summarize_target("prepared", per_seed((0,)), 0.95))
    assert all("no difference measured" in s and "overlap" not in s for s in single)  # one seed: no interval


def test_the_headline_figure_draws_every_row_with_its_interval() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from retailnb.plots.headline import headline_figure, headline_rows

    summary = summarize_target("prepared", per_seed(), 0.95)
    rows = headline_rows(summary)
    assert [label for label, _, _ in rows] == [
        "probe: random weights", "probe: simclr_supcon (main)", "probe: noisy student, round 1",
        "probe: noisy student, round 2", "finetuned from simclr_supcon", "finetuned from random weights"]
    fig = headline_figure(summary)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [label for label, _, _ in rows]
    assert "mean over 3 training seeds, 95% interval" in ax.get_title(loc="left")


def test_the_report_names_every_rejection_score() -> None:
    from retailnb.config.score_names import SCORES
    from retailnb.results.markdown import SCORE_NAMES

    assert set(SCORE_NAMES) == set(SCORES)


@pytest.mark.parametrize("acceptance, holds", [(0.94, True), (0.96, True), (0.90, False), (0.99, False)])
def test_the_rejection_table_says_whether_the_thresholds_hold_their_recall_on_test(acceptance: float,
                                                                                  holds: bool) -> None:
    """Thresholds are chosen on the enrolled images alone; the known test photos they accept are checked
    against the recall (within 2 points) in a sentence under the table."""
    def cells(seed: int) -> dict[str, Any]:
        metrics = with_store_cells(seed)
        for row in metrics["methods"].values():
            row["reject_prototype_known_acceptance"] = acceptance
        return metrics

    text = rejection_table_markdown(summarize_target("prepared", {s: record(cells(s)) for s in SEEDS}, 0.95))
    if holds:
        assert "Calibration holds: with every method the nearest prototype threshold accepts" in text
    else:
        assert "Calibration misses by more than 2 points of the 95%" in text
        assert f"`simclr_supcon` {acceptance:.1%}" in text

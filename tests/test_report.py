"""Known answers for the report's table and verdicts, and a papermill run of the report notebook on fake metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from shared_fixtures import REPO

from retailnb.records import (
    DataRecord,
    EvaluateRecord,
    HeadlineRecord,
    NoisyRecord,
    PretrainRecord,
    ProbeScores,
    RoundRecord,
    TrainSummary,
)
from retailnb.report import (
    combination_pairs,
    headline,
    data_sentence,
    method_table_markdown,
    monitor_table_markdown,
    noisy_table_markdown,
    read_records,
    results_markdown,
    shot_keys,
    target_headline,
    verdicts,
)

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_report.ipynb"


def method(p1: float, p5: float, p10: float | None, p_all: float, knn: float, finetuned: float = 0.8) -> dict[str, Any]:
    row: dict[str, Any] = {"probe_1": p1, "probe_1_std": 0.05, "probe_5": p5, "probe_5_std": 0.03}
    if p10 is not None:
        row.update(probe_10=p10, probe_10_std=0.02)
    row.update(probe_all=p_all, probe_all_std=0.0, knn_all=knn, ratio_to_finetune=p_all / finetuned,
               probe_all_seconds=0.05)
    return row


def finetuned(accuracy: float, lr: float, best_epoch: int, seconds: float) -> dict[str, Any]:
    """A finetuning baseline's record: a two-point grid whose ``lr`` won on validation."""
    grid = [{"lr": lr, "val_accuracy": 0.7, "best_epoch": best_epoch, "epochs": best_epoch + 5},
            {"lr": lr * 10, "val_accuracy": 0.6, "best_epoch": 2, "epochs": 7}]
    return {"accuracy": accuracy, "seconds": seconds, "lr": lr, "best_epoch": best_epoch, "val_accuracy": 0.7,
            "grid": grid}


def evaluate_metrics() -> dict[str, Any]:
    """Pretraining helps, the combination beats SimCLR but not SupCon; round 1 helps, round 2 does not."""
    return {
        "methods": {
            "random_init": method(0.10, 0.15, 0.18, 0.20, 0.12),
            "simclr": method(0.30, 0.45, 0.50, 0.60, 0.40),
            "supcon": method(0.35, 0.50, 0.60, 0.715, 0.50),
            "simclr_supcon": method(0.40, 0.55, 0.62, 0.72, 0.55),
            "noisy_round_1": method(0.45, 0.60, 0.66, 0.78, 0.60),
            "noisy_round_2": method(0.40, 0.55, 0.62, 0.725, 0.55),
        },
        "finetune": {"pretrained": finetuned(0.8, 0.001, 12, 95.0), "random_init": finetuned(0.4, 0.003, 20, 140.0)},
        "main_variant": "simclr_supcon",
        "n_classes": 25,
    }


def record(metrics: dict[str, Any], **fields: Any) -> EvaluateRecord:
    """The :class:`EvaluateRecord` of ``metrics`` (as built by :func:`evaluate_metrics`, maybe edited)."""
    base = {"target": "prepared", "target_source": "prepared", "n_train": 10, "n_test": 20,
            "n_overlap_dropped": 0}
    return EvaluateRecord(**{**base, **metrics, **fields})


def pretrain_record(variant: str, simclr: float, supcon: float) -> PretrainRecord:
    scores = {"pretrained": ProbeScores(knn_accuracy=0.5, probe_accuracy=0.6, probe_c=1.0),
              "random_init": ProbeScores(knn_accuracy=0.1, probe_accuracy=0.2, probe_c=1.0)}
    return PretrainRecord(variant=variant, objectives={"simclr": simclr, "supcon": supcon}, monitor=scores,
                          train=TrainSummary(images_per_second=100.0, final_loss=1.0), history={"loss": [2.0, 1.0]})


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

TOL = 0.01
"""The tolerance these known-answer tests judge with: their own input, so a new ``report.tolerance`` in
params.yaml does not change what they check."""


def table_rows(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in markdown.strip().splitlines()]


def test_method_table_has_one_row_per_method_plus_both_finetuning_baselines() -> None:
    rows = table_rows(method_table_markdown(record(evaluate_metrics())))
    assert rows[0] == ["method", "1-shot", "5-shot", "10-shot", "all images", "kNN (all images)", "ratio to finetuned",
                       "fit time (s)"]
    assert rows[1] == [":---", *["---:"] * 7]
    body = {r[0]: r[1:] for r in rows[2:]}
    from_main, from_random = "finetuned from `simclr_supcon` (lr 0.001, epoch 12)", \
        "finetuned from random weights (lr 0.003, epoch 20)"
    assert list(body) == ["`random_init`", "`simclr`", "`supcon`", "`simclr_supcon` (main)", "`noisy_round_1`",
                          "`noisy_round_2`", from_main, from_random]
    assert body["`simclr_supcon` (main)"] == ["0.400 ± 0.050", "0.550 ± 0.030", "0.620 ± 0.020", "0.720", "0.550",
                                              "0.90", "0.05"]
    assert body[from_main] == ["–", "–", "–", "0.800", "–", "1.00", "95"]
    assert body[from_random] == ["–", "–", "–", "0.400", "–", "0.50", "140"]


def test_method_table_handles_missing_shot_counts() -> None:
    evaluate = evaluate_metrics()
    for row in evaluate["methods"].values():  # a run without 10-shot
        row.pop("probe_10"), row.pop("probe_10_std")
    evaluate["methods"]["simclr"].pop("probe_5")  # and one method missing a 5-shot result
    rows = table_rows(method_table_markdown(record(evaluate)))
    assert "10-shot" not in rows[0] and len(rows[0]) == 7
    simclr = next(r for r in rows if r[0] == "`simclr`")
    assert simclr[2] == "–"


def test_shot_keys_order_numbers_then_all() -> None:
    assert shot_keys({"a": {"probe_all": 1, "probe_10": 1, "probe_1": 1, "probe_10_std": 0, "knn_all": 1},
                      "b": {"probe_5": 1}}) == ["probe_1", "probe_5", "probe_10", "probe_all"]


def test_verdicts_known_answers() -> None:
    lines = verdicts(record(evaluate_metrics()), NOISY, PRETRAIN, tol=TOL)
    assert "reaches 90% of the accuracy of finetuning" in lines[0] and "(0.720 against 0.800)" in lines[0]
    assert lines[0].endswith("; finetuning from random weights reaches 0.400.")
    assert lines[1].startswith("Pretraining helped:") and "(+0.520)" in lines[1]
    assert lines[2].startswith("Combining SimCLR and SupCon (against SimCLR alone) helped:")
    assert lines[3].startswith("Combining SimCLR and SupCon (against SupCon alone) did not help:")
    assert "within the tolerance" in lines[3]
    assert lines[4].startswith("Noisy-student round 1 helped: probe accuracy with all images 0.780 for round 1 against 0.720")
    assert "precision 0.83, coverage 0.61" in lines[4]
    assert lines[5].startswith("Noisy-student round 2 did not help:") and "(+0.005, within" in lines[5]
    assert lines[6] == "The best noisy-student round by probe accuracy is round 1."
    assert len(lines) == 7


def test_verdicts_call_a_drop_a_drop_and_respect_the_tolerance() -> None:
    evaluate = evaluate_metrics()
    evaluate["methods"]["noisy_round_2"]["probe_all"] = 0.60
    line = verdicts(record(evaluate), None, PRETRAIN, tol=TOL)[5]
    assert line.startswith("Noisy-student round 2 did not help:") and "a drop beyond the tolerance" in line
    # a larger tolerance turns round 1's +0.06 into "did not help"
    assert verdicts(record(evaluate_metrics()), None, PRETRAIN, tol=0.1)[4].startswith("Noisy-student round 1 did not help")


def test_verdicts_use_noisy_json_when_evaluate_has_no_rounds_and_skip_missing_rows() -> None:
    evaluate = evaluate_metrics()
    for name in ("noisy_round_1", "noisy_round_2", "simclr", "supcon"):
        del evaluate["methods"][name]
    lines = verdicts(record(evaluate), NOISY, PRETRAIN, tol=TOL)
    assert [line.split(":")[0] for line in lines[1:4]] == [
        "Pretraining helped", "Noisy-student round 1 helped", "Noisy-student round 2 did not help"]
    assert len(verdicts(record(evaluate), None, PRETRAIN, tol=TOL)) == 2


def test_verdicts_fall_back_to_the_most_shots_both_rows_have() -> None:
    evaluate = evaluate_metrics()
    for row in evaluate["methods"].values():
        del row["probe_all"]
    line = verdicts(record(evaluate), None, PRETRAIN, tol=TOL)[1]
    assert "probe accuracy with 10 images per product" in line and "(+0.440" in line
    assert "No all-image probe" in verdicts(record(evaluate), None, PRETRAIN, tol=TOL)[0]


def data_record(images: dict[str, int], classes: dict[str, int], seen: int) -> DataRecord:
    return DataRecord(images=images, classes=classes, domains={}, unique_images=sum(images.values()),
                      probe_train_min_per_class=1, target_classes_in_source=seen)


def test_side_tables_and_data_sentence() -> None:
    noisy = table_rows(noisy_table_markdown(NOISY))
    assert [r[0] for r in noisy[2:]] == ["0 (contrastive only)", "1 (best)", "2"]
    assert noisy[2][3] == "–" and noisy[3][3] == "0.830"
    monitor = table_rows(monitor_table_markdown(PRETRAIN))
    assert monitor[0][:2] == ["variant", "objectives"]
    assert monitor[2] == ["`simclr`", "SimCLR", "0.500", "0.100", "0.600", "0.200"]
    assert monitor[4][:2] == ["`simclr_supcon`", "SimCLR + SupCon"]
    sentence = data_sentence(data_record({"labelled": 360, "unlabelled": 1000, "probe_train": 300, "probe_test": 375},
                                         {"labelled": 30, "probe_train": 25, "probe_test": 25}, 0))
    assert "360 labelled (30 products)" in sentence and "375 test (25 products)" in sentence
    assert sentence.endswith("of a target catalogue that pretraining never saw.")
    seen = data_sentence(data_record({}, {"probe_test": 81}, 81))
    assert seen.endswith("(pretraining saw 81 of the 81 target products).")


def test_combinations_come_from_the_records_objectives_not_the_variant_names() -> None:
    assert combination_pairs(PRETRAIN) == [("simclr_supcon", "simclr"), ("simclr_supcon", "supcon")]
    renamed = {"both": PRETRAIN["simclr_supcon"], "ntxent": PRETRAIN["simclr"], "sup": PRETRAIN["supcon"]}
    assert combination_pairs(renamed) == [("both", "ntxent"), ("both", "sup")]
    # without a combined variant, or without the single-objective ones, there is nothing to compare
    assert combination_pairs({"simclr": PRETRAIN["simclr"], "supcon": PRETRAIN["supcon"]}) == []
    assert combination_pairs({"simclr_supcon": PRETRAIN["simclr_supcon"]}) == []
    evaluate = evaluate_metrics()
    methods = evaluate["methods"]
    methods["both"], methods["ntxent"] = methods.pop("simclr_supcon"), methods.pop("simclr")
    lines = verdicts(record(evaluate, main_variant="both"), None, renamed, tol=TOL)
    assert lines[2].startswith("Combining SimCLR and SupCon (against SimCLR alone) helped: probe accuracy with all "
                               "images 0.720 for SimCLR + SupCon against 0.600 for SimCLR alone")
    assert len([line for line in lines if line.startswith("Combining")]) == 1  # "sup" has no row in the table


def write_fake_metrics(root: Path) -> None:
    (root / "metrics" / "pretrain").mkdir(parents=True)
    for target in ("prepared", "grocery_fine"):
        record(evaluate_metrics(), target=target, target_source=target).write(
            root / "metrics" / "evaluate" / f"{target}.json")
    NOISY.write(root / "metrics" / "noisy.json")
    data_record({"labelled": 36}, {"labelled": 3}, 0).write(root / "metrics" / "data.json")
    for variant, pretrain in PRETRAIN.items():
        pretrain.write(root / "metrics" / "pretrain" / f"{variant}.json")


def test_read_records_reads_a_folder_or_a_file_and_validates(tmp_path: Path) -> None:
    write_fake_metrics(tmp_path)
    pretrain = read_records(PretrainRecord, tmp_path / "metrics" / "pretrain")
    assert list(pretrain) == ["simclr", "simclr_supcon", "supcon"] and pretrain["simclr"] == PRETRAIN["simclr"]
    assert list(read_records(NoisyRecord, tmp_path / "metrics" / "noisy.json")) == ["noisy"]
    assert read_records(NoisyRecord, tmp_path / "absent") == {}
    assert list(read_records(EvaluateRecord, tmp_path / "metrics" / "evaluate")) == ["grocery_fine", "prepared"]
    (tmp_path / "metrics" / "pretrain" / "old.json").write_text(json.dumps({"monitor": {}, "train": {}}))
    with pytest.raises(ValidationError, match="objectives"):
        read_records(PretrainRecord, tmp_path / "metrics" / "pretrain")


def test_results_markdown_has_a_headed_table_per_target() -> None:
    evaluations = {"prepared": record(evaluate_metrics()),
                   "shop": record(evaluate_metrics(), target="shop", target_source="imagefolder", n_classes=3)}
    text = results_markdown(evaluations)
    headings = [line for line in text.splitlines() if line.startswith("### ")]
    assert headings == ["### Target `prepared`, prepared: 25 products, 10 training and 20 test images",
                        "### Target `shop`, imagefolder: 3 products, 10 training and 20 test images"]
    assert text.count("| method |") == 2 and text.count("finetuned from random weights") == 2


@pytest.mark.slow
def test_report_notebook_smoke(tmp_path: Path) -> None:
    import nbformat
    import papermill as pm

    write_fake_metrics(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")  # the report's tolerance
    figure = tmp_path / "reports" / "figures" / "04_evaluate_prepared" / "shots.png"
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
    written = read_records(HeadlineRecord, tmp_path / "metrics" / "headline.json")["headline"]
    assert set(written.targets) == {"prepared", "grocery_fine"}
    for name in evaluate_metrics()["methods"]:
        assert f"| `{name}`" in table
    outputs = [o for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    text = "\n".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "reaches 90% of the accuracy of finetuning" in text and "Noisy-student round 2 did not help" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1  # only the figure that exists


def test_headline_keeps_the_few_figures_to_compare_runs_by() -> None:
    summary = headline({"prepared": record(evaluate_metrics())}, NOISY).targets["prepared"]
    assert list(summary.probe) == ["random_init", "simclr_supcon", "noisy_round_1", "noisy_round_2"]
    assert summary.probe["simclr_supcon"] == {"1": 0.40, "10": 0.62, "all": 0.72}
    assert summary.finetuned == {"pretrained": 0.8, "random_init": 0.4}
    assert summary.probe_to_finetune == pytest.approx(0.72 / 0.8)
    assert summary.noisy_gain == pytest.approx(0.78 - 0.72)  # NOISY's best round is 1
    values = leaf_count(summary.model_dump())
    assert values == 4 * 3 + 2 + 2 <= 30
    # a run without 10-shot keeps the shot counts it has; without the noisy stage there is no gain
    evaluate = evaluate_metrics()
    for row in evaluate["methods"].values():
        row.pop("probe_10"), row.pop("probe_10_std")
    bare = target_headline(record(evaluate), None)
    assert bare.probe["random_init"] == {"1": 0.10, "all": 0.20} and bare.noisy_gain is None
    round_zero = NOISY.model_copy(update={"best_round": 0})
    assert target_headline(record(evaluate_metrics()), round_zero).noisy_gain == 0.0


def leaf_count(node: Any) -> int:
    """Numbers in a nested mapping, as ``dvc metrics show`` counts them (None counts too)."""
    return sum(leaf_count(v) for v in node.values()) if isinstance(node, dict) else 1

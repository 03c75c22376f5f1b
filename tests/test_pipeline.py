"""The tiny pipeline, run once per test session through `dvc repro` (see pipeline_fixture.py).

Every stage runs exactly as a user's run does (papermill, the params file, its foreach key and paths), and
each test asserts on what a stage recorded. This file is one unit of the parallel run (``--dist loadfile``):
its tests share the session's pipeline on one worker while the other worker takes the unit tests.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_fixture import (
    SOFT_EXPERIMENT,
    TINY,
    TINY_SEEDS,
    TINY_VARIANTS,
    TinyPipeline,
    copy_repo,
    dvc,
    make_shop,
    write_params,
)
from shared_fixtures import REPO, TINY_DATA, jupyterlab_open_and_autosave, with_overrides
from spec_paths import leaves, spec_leaves

from retailnb.config.params_file import read_params
from retailnb.config.evaluate import EvaluateStageSpec
from retailnb.config.report import ReportStageSpec
from retailnb.config.stages import STAGES, spec_from_params
from retailnb.results.records import EvaluateRecord, SummaryRecord, read_record
from retailnb.results.markdown import results_markdown
from retailnb.stages import evaluate
from retailnb.results.summary import read_seeds, summarize_target

TINY_PARAMS_REJECTION = read_params(REPO / "params.yaml")["evaluate"]["rejection"]
"""The rejection protocol of params.yaml, which the tiny pipeline keeps."""


def read(root: Path, path: str) -> Any:
    return json.loads((root / path).read_text())


def test_data_stage(pipeline: Path) -> None:
    summary = read(pipeline, "metrics/data.json")
    fams, skus = TINY_DATA["n_target_families"], TINY_DATA["skus_per_family"]
    assert summary["classes"]["probe_test"] == fams * skus
    assert summary["target_classes_in_source"] == 0  # synthetic target families are disjoint from the source
    assert summary["images"]["probe_test"] == fams * skus * TINY_DATA["probe_test_per_sku"]
    assert all(summary["images"][role] > 0 for role in ("labelled", "unlabelled", "monitor_train", "probe_train"))
    assert (pipeline / "reports" / "figures" / "01_data" / "catalogue_vs_shelf.png").stat().st_size > 1000
    # every synthetic product has the same number of images in each role: a table says it, no one-bar figure
    assert not (pipeline / "reports" / "figures" / "01_data" / "class_counts.png").exists()
    assert "images per class" in (pipeline / "reports" / "01_data.html").read_text()


def test_pretrain_stage_trains_every_variant_at_every_seed(pipeline: Path) -> None:
    final_losses = {}
    for variant, seed in ((v, s) for v in TINY_VARIANTS for s in TINY_SEEDS):
        record = read(pipeline, f"metrics/seeds/{seed}/pretrain/{variant}.json")
        weights = read_params(pipeline / "params.yaml")["pretrain"]["variants"][variant]
        assert record["objectives"] == {k.removesuffix("_weight"): v for k, v in weights.items()}
        assert set(record["objectives"]) == {"simclr", "supcon", "simsiam"}
        losses = record["history"]["loss"]
        assert len(losses) == TINY["pretrain.engine.epochs"] and all(0 < v < 100 for v in losses), (variant, losses)
        assert set(record["train"]) == {"final_loss"}  # no timing in a versioned record
        assert (pipeline / "models" / "seeds" / str(seed) / "pretrain" / variant / "backbone.pt").is_file()
        assert (pipeline / "dvclive" / "seeds" / str(seed) / "pretrain" / variant / "metrics.json").is_file()
        tsv = pipeline / "dvclive" / "seeds" / str(seed) / "pretrain" / variant / "plots/metrics/train/loss.tsv"
        steps = [int(line.split("\t")[0]) for line in tsv.read_text().splitlines()[1:]]
        assert steps == list(range(1, TINY["pretrain.engine.epochs"] + 1))  # epochs from 1, as the notebooks count
        for name in ("curves.png", "retrievals.png"):
            assert (pipeline / "reports" / "figures" / "seeds" / str(seed) / f"02_pretrain_{variant}" / name).stat().st_size > 1000
        final_losses[variant, seed] = losses[-1]
        used = read(pipeline, f"models/seeds/{seed}/pretrain/{variant}/backbone.json")["spec"]
        base = read_params(pipeline / "params.yaml")["pretrain"]["engine"]["seed"]
        assert used["engine"]["seed"] == base + seed  # the engine's seed plus the training seed
    for variant in TINY_VARIANTS:  # each seed is another training run, not a copy
        assert final_losses[variant, TINY_SEEDS[0]] != final_losses[variant, TINY_SEEDS[1]]


def test_pretrain_stage_received_every_value_with_its_yaml_type(pipeline: Path) -> None:
    """Through the real stage command: the spec the run recorded equals params.yaml, type for type."""
    params = read_params(pipeline / "params.yaml")
    for variant in params["pretrain"]["variants"]:
        used = read(pipeline, f"models/seeds/0/pretrain/{variant}/backbone.json")["spec"]
        expected = spec_leaves("pretrain", variant, params)
        got = {}
        for field, path in STAGES["pretrain"].key_paths(variant).items():
            got.update(leaves(used[field], path))
        assert got.keys() == expected.keys()
        for path, value in expected.items():
            assert got[path] == value and type(got[path]) is type(value), (path, got[path], value)


def test_noisy_stage(pipeline: Path) -> None:
    record = read(pipeline, "metrics/seeds/0/noisy.json")
    rounds = record["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2] and record["best_round"] in (0, 1, 2)
    for row in rounds[1:]:
        # params.yaml says soft: false, so every pseudolabel target is one-hot
        assert row["target_confidence"] == 1.0
        assert 0.0 < row["coverage"] <= 1.0 and row["n_selected"] > 0
        assert (pipeline / "models" / "seeds" / "0" / "noisy" / f"round_{row['round']}" / "pseudolabels.csv").is_file()
    accuracy = read(pipeline, "metrics/seeds/0/noisy_rounds.json")
    assert [r["round"] for r in accuracy] == [0, 1, 2]
    quality = read(pipeline, "metrics/seeds/0/noisy_pseudolabels.json")
    assert [r["round"] for r in quality] == [1, 2] and quality[0]["coverage"] == rounds[1]["coverage"]
    # dvc plots show renders a file only when all its rows have the same fields, its x and y among them
    plotted = [entry for entry in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
               if next(iter(entry)).startswith("metrics/seeds/0/noisy")]
    assert len(plotted) == 2
    for entry in plotted:
        (file, plot), = entry.items()
        assert all(set(row) == {plot["x"], *plot["y"]} for row in read(pipeline, file)), file
    for name in ("threshold.png", "rounds.png"):
        assert (pipeline / "reports" / "figures" / "seeds" / "0" / "03_noisy_student" / name).stat().st_size > 1000
    other = read(pipeline, "metrics/seeds/1/noisy.json")["rounds"]
    assert other[1]["train_loss"] != rounds[1]["train_loss"]  # seed 1's students are other training runs


def test_evaluate_stage(pipeline: Path) -> None:
    record = read(pipeline, "metrics/seeds/0/evaluate/prepared.json")
    n_classes = TINY_DATA["n_target_families"] * TINY_DATA["skus_per_family"]
    assert set(record["methods"]) == {"random_init", *TINY_VARIANTS, "noisy_round_1", "noisy_round_2"}
    for name, row in record["methods"].items():
        assert {"probe_1", "probe_2", "probe_all", "knn_all", "ratio_to_finetune"} <= set(row)
        assert 0.0 <= row["probe_all"] <= 1.0
    # the synthetic products differ by colour: the best frozen features beat chance
    assert max(row["probe_all"] for row in record["methods"].values()) > 1 / n_classes
    assert set(record["finetune"]) == {"pretrained", "random_init"}
    for tuned in record["finetune"].values():  # the grid of params.yaml, each run within the epoch cap
        assert [run["lr"] for run in tuned["grid"]] == TINY["evaluate.finetune.lrs"] and "seconds" not in tuned
        assert all(1 <= run["best_epoch"] <= run["epochs"] <= TINY["evaluate.finetune.engine.max_epochs"]
                   for run in tuned["grid"])
        assert tuned["val_accuracy"] == max(run["val_accuracy"] for run in tuned["grid"])
    assert record["finetune"]["pretrained"]["accuracy"] > 1 / n_classes
    assert record["n_test"] == n_classes * TINY_DATA["probe_test_per_sku"]
    # a store's questions: the catalogue-only probe and unknown-product rejection, for every backbone
    rejection = TINY_PARAMS_REJECTION
    assert rejection["source_unknowns"] is True  # and the source's unlabelled-only products are measured too
    assert record["rejection"] == {"n_known": n_classes - round(rejection["unknown_fraction"] * n_classes),
                                   "n_unknown": round(rejection["unknown_fraction"] * n_classes),
                                   "recall": rejection["recall"],
                                   "n_source_unknown": len(unlabelled_only_products(pipeline))}
    assert record["rejection"]["n_source_unknown"] > 0
    for row in record["methods"].values():
        assert 0.0 <= row["probe_catalogue"] <= 1.0
        assert {f"reject_{score}_{m}" for score in ("msp", "energy", "prototype")
                for m in ("auroc", "known_accuracy", "unknown_rejection", "known_acceptance", "source_auroc",
                          "source_unknown_rejection")} <= set(row)
        assert all(0.0 <= row[f"reject_{score}_source_unknown_rejection"] <= 1.0 for score in ("msp", "prototype"))
    shots = read(pipeline, "metrics/seeds/0/evaluate/prepared/shots.json")
    assert {p["method"] for p in shots} == {*record["methods"], "finetuned (end to end)"}
    assert [p["shots"] for p in shots if p["method"] == "random_init"] == ["1", "2", "all"]
    assert len(read(pipeline, "metrics/seeds/0/evaluate/prepared/confusion.json")) == record["n_test"]
    assert len(list((pipeline / "features" / "seeds" / "0" / "prepared").glob("*.npz"))) == len(record["methods"])
    assert len(list((pipeline / "features" / "seeds" / "0" / "prepared" / "source_unknown").glob("*.npz"))) == len(
        record["methods"])  # the source products' features, cached per backbone beside the target's
    for name in ("shots.png", "embedding_map.png", "shelf_to_catalogue.png", "confusions.png"):
        assert (pipeline / "reports" / "figures" / "seeds" / "0" / "04_evaluate_prepared" / name).stat().st_size > 1000
    # seed 1 repeats the training of every row: its finetuned and random-init results are other runs
    other = read(pipeline, "metrics/seeds/1/evaluate/prepared.json")
    assert other["methods"]["random_init"] != record["methods"]["random_init"]
    assert other["finetune"]["random_init"]["grid"] != record["finetune"]["random_init"]["grid"]


def seed0_paths(pipeline: Path, out: Path, target: str) -> evaluate.EvaluatePaths:
    """The evaluate stage's paths for the tiny pipeline's seed-0 backbones, writing under ``out``."""
    models = pipeline / "models" / "seeds" / "0"
    return evaluate.EvaluatePaths(
        manifest=str(pipeline / "data" / "prepared" / "manifest.csv"), pretrain_dir=str(models / "pretrain"),
        noisy_dir=str(models / "noisy"), features_dir=str(out / "features"), metrics=str(out / f"{target}.json"),
        plots_dir=str(out / "plots"))


def unlabelled_only_products(pipeline: Path) -> set[str]:
    """The products of the tiny data's manifest with unlabelled rows and no labelled one, read plainly."""
    with (pipeline / "data" / "prepared" / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    labelled = {r["class_name"] for r in rows if r["role"] == "labelled"}
    return {r["class_name"] for r in rows if r["role"] == "unlabelled"} - labelled


def test_the_rejection_settings_change_what_they_say(pipeline: Path, tmp_path: Path) -> None:
    """evaluate.rejection through the stage: more products held out, a lower recall target rejects more, and
    without source_unknowns no source products are measured."""
    params = read_params(pipeline / "params.yaml")
    params["evaluate"]["rejection"] = {"unknown_fraction": 0.5, "recall": 0.5, "folds": 2, "knn_k": 1,
                                       "source_unknowns": False}
    spec = spec_from_params(EvaluateStageSpec, params, "prepared")
    out = tmp_path / "out"
    shutil.copytree(pipeline / "features" / "seeds" / "0" / "prepared", out / "features")  # cached features, runs
    paths = seed0_paths(pipeline, out, "prepared")
    record = evaluate.run(spec, "prepared", paths).record
    before = read(pipeline, "metrics/seeds/0/evaluate/prepared.json")
    n_classes = TINY_DATA["n_target_families"] * TINY_DATA["skus_per_family"]
    assert record.rejection is not None and record.rejection.n_unknown == n_classes // 2 != before["rejection"]["n_unknown"]
    assert record.rejection.recall == 0.5
    # a threshold for half the enrolled photos accepts far fewer known test photos than one for 95% of them
    accepted = lambda methods: sum(r["reject_prototype_known_acceptance"] for r in methods.values()) / len(methods)  # noqa: E731
    assert accepted(record.methods) < accepted(before["methods"]) - 0.1
    assert record.rejection.n_source_unknown == 0 != before["rejection"]["n_source_unknown"]
    assert not any("source" in key for row in record.methods.values() for key in row)
    assert all("reject_prototype_source_auroc" in row for row in before["methods"].values())


def test_a_rerun_reads_the_cached_source_features_and_measures_them_alike(pipeline: Path, tmp_path: Path) -> None:
    """evaluate.rejection.source_unknowns on, the stage run again on the dvc run's cache: the same second unknown
    set (the data's unlabelled-only products), the same source cells for every backbone."""
    spec = spec_from_params(EvaluateStageSpec, read_params(pipeline / "params.yaml"), "prepared")
    assert spec.rejection.source_unknowns
    out = tmp_path / "out"
    shutil.copytree(pipeline / "features" / "seeds" / "0" / "prepared", out / "features")
    cached = sorted((out / "features" / "source_unknown").glob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    record = evaluate.run(spec, "prepared", seed0_paths(pipeline, out, "prepared")).record
    before = read(pipeline, "metrics/seeds/0/evaluate/prepared.json")
    assert record.rejection is not None and record.rejection.n_source_unknown == len(unlabelled_only_products(pipeline))
    assert [p.stat().st_mtime_ns for p in cached] == stamps and len(cached) == len(record.methods)  # read, not rewritten
    source = lambda methods: {name: {k: v for k, v in row.items() if "_source_" in k}  # noqa: E731
                              for name, row in methods.items()}
    assert source(record.methods) == source(before["methods"]) and all(source(record.methods).values())


def test_a_second_target_read_by_the_image_folder_adapter(pipeline: Path, tmp_path: Path) -> None:
    """Another entry of evaluate.targets, evaluated by the stage function on the pipeline's backbones."""
    params = read_params(pipeline / "params.yaml")
    shop = make_shop(tmp_path / "shop")
    params["evaluate"]["targets"]["shop"] = {"source": "imagefolder", "root": str(shop), "labels": "fine",
                                          "kinds": "all"}
    spec = spec_from_params(EvaluateStageSpec, params, "shop")
    out = tmp_path / "out"
    paths = seed0_paths(pipeline, out, "shop")
    record = evaluate.run(spec, "shop", paths).record
    assert (record.target, record.target_source) == ("shop", "imagefolder")
    assert (record.n_classes, record.n_train, record.n_test) == (3, 9, 6)
    # three products of clearly different brightness: the all-image probe of random weights gets them right
    assert record.methods["random_init"]["probe_all"] >= 5 / 6
    assert read(out, "shop.json") == record.model_dump()
    prepared = read_record(EvaluateRecord, pipeline / "metrics" / "seeds" / "0" / "evaluate" / "prepared.json")
    table = results_markdown({name: summarize_target(name, {0: r}, 0.95) for name, r in
                              (("prepared", prepared), ("shop", record))}, 0.95)
    assert "### Target `shop`, imagefolder: 3 products, 9 training and 6 test images, 1 training seed" in table


def test_report_summarises_every_seed_with_intervals(pipeline: Path) -> None:
    table = (pipeline / "reports" / "results.md").read_text()
    assert "simclr_supcon" in table and "random_init" in table
    assert "### Target `prepared`" in table and f"{len(TINY_SEEDS)} training seeds" in table
    summary = read_record(SummaryRecord, pipeline / "metrics" / "summary.json")
    assert summary.seeds == list(TINY_SEEDS)
    prepared = summary.targets["prepared"]
    per_seed = [read(pipeline, f"metrics/seeds/{s}/evaluate/prepared.json") for s in TINY_SEEDS]
    cell = prepared.methods["random_init"]["probe_all"]
    assert cell.values == [r["methods"]["random_init"]["probe_all"] for r in per_seed] and cell.n == len(TINY_SEEDS)
    assert cell.low is not None and cell.high is not None and cell.low <= cell.mean <= cell.high
    assert prepared.finetune["pretrained"].lrs == [r["finetune"]["pretrained"]["lr"] for r in per_seed]
    # the variants' objectives reach the report: the combined variant is judged against SimCLR alone
    report = (pipeline / "reports" / "05_report.html").read_text()
    assert ">SimCLR + SupCon: " in report and ">SimCLR alone: " in report  # a row of the verdict table
    assert "SupCon alone" not in report  # the tiny pipeline has no SupCon-only variant
    assert "training seeds" in report
    assert "catalogue only" in table and "Unknown-product rejection" in table and "AUROC" in report


def test_new_products_stage(pipeline: Path) -> None:
    record = read(pipeline, "metrics/new_products.json")
    n_products = TINY_DATA["n_target_families"] * TINY_DATA["skus_per_family"]
    assert [r["shots"] for r in record["enrolment"]] == [0, *TINY["new_products.shots"]]
    assert len(record["held_out"]) == record["n_new"] == TINY["new_products.n_new"]
    assert record["n_old"] == n_products - TINY["new_products.n_new"]
    new_test_images = TINY["new_products.n_new"] * TINY_DATA["probe_test_per_sku"]
    assert all(0.0 <= r["old_accuracy"] <= 1.0 and r["n_new"] == new_test_images for r in record["enrolment"])
    assert record["enrolment"][0]["new_accuracy"] == 0.0  # before enrolment no new product can be predicted
    assert (pipeline / "models" / "bundle" / "catalogue.bundle").is_file()
    assert (pipeline / "reports" / "figures" / "06_new_products" / "enrolment.png").stat().st_size > 1000


def test_soft_and_balance_reach_the_noisy_stage_through_dvc_exp_run(tiny_pipeline: TinyPipeline) -> None:
    """`dvc exp run -S noisy.pseudo.soft=true` trains on soft targets; balance: false keeps every image once."""
    run = tiny_pipeline.soft_run
    assert run.returncode == 0, f"dvc exp run {' '.join(SOFT_EXPERIMENT)} failed:\n{run.stdout}\n{run.stderr}"
    rounds = read(tiny_pipeline.soft, "metrics/seeds/0/noisy.json")["rounds"]
    for row in rounds[1:]:
        assert row["target_confidence"] < 1.0  # soft targets: the teacher's probabilities
        # threshold 0 and no balancing: every unlabelled image exactly once
        assert row["coverage"] == 1.0 and row["n_rows"] == row["n_selected"]
    default = read(tiny_pipeline.root, "metrics/seeds/0/noisy.json")["rounds"]
    assert all(row["target_confidence"] == 1.0 for row in default[1:])


def test_dvc_metrics_show_prints_only_the_headline_figures_in_120_columns(pipeline: Path) -> None:
    """One declared metrics file, short keys that fit a terminal, equal to the summary it comes from."""
    shown = json.loads(dvc(pipeline, "metrics", "show", "--json").stdout)
    (files,) = [entry["data"] for entry in shown.values()]
    assert list(files) == ["metrics/headline.json"]
    headline = files["metrics/headline.json"]["data"]
    summary = read(pipeline, "metrics/summary.json")["targets"]["prepared"]
    main = summary["methods"]["simclr_supcon"]["probe_all"]
    assert headline["main"] == {"all": round(main["mean"], 3), "ci": round((main["high"] - main["low"]) / 2, 3)}
    assert headline["student"]["all"] == round(summary["methods"]["noisy_round_2"]["probe_all"]["mean"], 3)
    assert headline["random"] == round(summary["methods"]["random_init"]["probe_all"]["mean"], 3)
    assert headline["finetune"] == round(summary["finetune"]["pretrained"]["accuracy"]["mean"], 3)
    assert headline["ratio"] == round(summary["probe_to_finetune"]["mean"], 3)
    assert headline["seeds"] == len(TINY_SEEDS)
    table = dvc(pipeline, "metrics", "show").stdout.splitlines()
    assert "main.all" in table[0] and "student.ci" in table[0]
    assert max(len(line) for line in table) <= 120, "\n".join(table)


def test_every_stage_wrote_its_executed_notebook_and_html_report(pipeline: Path) -> None:
    per_seed = [f"seeds/{s}/{name}" for s in TINY_SEEDS for name in
                (*(f"02_pretrain_{v}" for v in TINY_VARIANTS), "03_noisy_student", "04_evaluate_prepared")]
    names = ["01_data", *per_seed, "05_report", "06_new_products"]
    for name in names:
        assert (pipeline / "reports" / f"{name}.ipynb").is_file(), name
        html = (pipeline / "reports" / f"{name}.html").read_text()
        assert html.startswith("<!DOCTYPE html>"), name
        # the report shows narrative, tables and figures: no code (papermill's injected cell neither), no
        # log lines, and every figure described
        assert "# Parameters" not in html and "load_stage(" not in html and "epoch 1/" not in html, name
        assert "No description has been provided" not in html, name
    report = (pipeline / "reports" / "05_report.html").read_text()
    assert report.index("Main result") < report.index("<h2 id=\"Data\"")  # the headline table first
    assert (pipeline / "reports" / "seeds/0/02_pretrain_simclr.html").read_text().count("<img") >= 2


TEXT_OUTPUTS = {".json", ".csv", ".md", ".ipynb", ".html", ".yaml", ".tsv", ".txt", ".lock"}


def test_no_output_holds_an_absolute_path(pipeline: Path) -> None:
    """Outputs (and dvc.lock) are right in any clone: no path into the checkout or the environment that wrote them."""
    import sys

    roots = {str(pipeline.resolve()), str(pipeline.resolve().parent), sys.prefix, str(Path.home())}
    tracked = [pipeline / "dvc.lock", *(p for folder in ("data", "models", "metrics", "reports", "dvclive", "features")
                                        for p in (pipeline / folder).rglob("*"))]
    offending = [f"{p.relative_to(pipeline)} holds {root}" for p in tracked if p.is_file() and p.suffix in TEXT_OUTPUTS
                 for root in roots if root in p.read_text(errors="replace")]
    assert not offending, offending[:10]
    assert len(tracked) > 50


def test_opening_reports_in_jupyterlab_leaves_dvc_status_clean(pipeline: Path, tmp_path: Path) -> None:
    import nbformat

    root = copy_repo(pipeline, tmp_path / "repo")
    reports = [root / "reports" / name for name in ("05_report.ipynb", "seeds/0/04_evaluate_prepared.ipynb")]
    before = [p.read_bytes() for p in reports]
    assert not any(jupyterlab_open_and_autosave(p) for p in reports)
    assert [p.read_bytes() for p in reports] == before
    assert "up to date" in dvc(root, "status").stdout
    # the check has teeth: a report with papermill's kernelspec (display name "Python 3") is rewritten
    nb = nbformat.read(reports[0], as_version=4)
    nb.metadata["kernelspec"]["display_name"] = "Python 3"
    nbformat.write(nb, reports[0])
    assert jupyterlab_open_and_autosave(reports[0])
    assert "05_report.ipynb" in dvc(root, "status").stdout


def test_results_travel_through_a_dvc_remote_to_a_fresh_clone(pipeline: Path, tmp_path: Path) -> None:
    """The README's sharing route: commit dvc.lock and metrics, dvc push; a colleague clones and dvc pulls."""
    import subprocess

    root = copy_repo(pipeline, tmp_path / "repo")
    dvc(root, "remote", "add", "-d", "shared", str(tmp_path / "remote"))
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "results"]):
        subprocess.run(cmd, cwd=root, check=True)
    dvc(root, "push")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    assert not (clone / "models").exists() and (clone / "metrics/headline.json").is_file()  # metrics ride in git
    dvc(clone, "pull")
    assert "up to date" in dvc(clone, "status").stdout
    for path in ("models/bundle", "reports/05_report.html", "reports/seeds/1/04_evaluate_prepared.ipynb",
                 "models/seeds/1/noisy", "data/prepared/manifest.csv", "dvclive/seeds/0/pretrain/simclr/metrics.json"):
        assert (clone / path).exists(), path
    assert (clone / "reports/05_report.html").read_bytes() == (root / "reports/05_report.html").read_bytes()
    assert "Running stage" not in dvc(clone, "repro", "--dry").stdout  # nothing to recompute


def test_changing_one_variant_reruns_only_that_variant(pipeline: Path, tmp_path: Path) -> None:
    root = copy_repo(pipeline, tmp_path / "repo")
    params = read_params(root / "params.yaml")
    write_params(root, with_overrides(params, {"pretrain.variants.simclr.simclr_weight": 0.5}))
    status = json.loads(dvc(root, "status", "--json").stdout)
    # of the training stages only that variant's pretraining; the evaluations and the report read the list
    # of variants (pretrain.variants) too, and rerun after it anyway, their backbone having changed
    # the params check reruns on any change (cheap, and its output stays the same line)
    assert {s for s in status if not s.startswith(("evaluate@", "report", "check"))} == {
        f"pretrain@simclr-{s}" for s in TINY_SEEDS}, status


def test_one_seed_reruns_alone_and_the_report_reads_only_the_listed_seeds(pipeline: Path, tmp_path: Path) -> None:
    """A single seed's stage can be rerun by name; a seed dropped from evaluate.seeds is no longer summarised."""
    root = copy_repo(pipeline, tmp_path / "repo")
    status = json.loads(dvc(root, "status", "--json").stdout)
    assert not status, status
    dvc(root, "repro", "--force", "--single-item", f"evaluate@prepared-{TINY_SEEDS[1]}")
    status = json.loads(dvc(root, "status", "--json").stdout)
    assert set(status) <= {"report"}, status  # only the summary downstream of it (if the metrics changed)
    write_params(root, with_overrides(read_params(root / "params.yaml"), {"evaluate.seeds": [TINY_SEEDS[0]]}))
    dvc(root, "repro", "report")
    summary = read(root, "metrics/summary.json")
    assert summary["seeds"] == [TINY_SEEDS[0]]
    assert summary["targets"]["prepared"]["methods"]["random_init"]["probe_all"]["low"] is None


def test_changing_the_evaluation_code_reruns_only_the_evaluation(pipeline: Path, tmp_path: Path) -> None:
    """Each stage depends on its own parameter module: evaluation code changes leave pretraining alone."""
    root = copy_repo(pipeline, tmp_path / "repo")
    for module in ("config/evaluate.py", "evaluation/compare.py"):
        with (root / "retailnb" / module).open("a") as fh:
            fh.write("\n# changed\n")
    status = json.loads(dvc(root, "status", "--json").stdout)
    assert set(status) - {"check"} == {f"evaluate@prepared-{s}" for s in TINY_SEEDS}, status


def test_a_removed_variants_leftovers_are_not_read(pipeline: Path, tmp_path: Path) -> None:
    """DVC leaves the outputs of a variant removed from params.yaml on disk: neither its backbone (evaluate)
    nor its pretraining record (report) may come back into the results."""
    copy = tmp_path / "pipeline"
    for part in ("models/seeds/0", "metrics/seeds/0", "features/seeds/0/prepared", "data/prepared"):
        shutil.copytree(pipeline / part, copy / part)
    main = TINY_VARIANTS[0]
    shutil.copytree(copy / "models/seeds/0/pretrain" / main, copy / "models/seeds/0/pretrain/removed")
    shutil.copy(copy / "metrics/seeds/0/pretrain" / f"{main}.json", copy / "metrics/seeds/0/pretrain/removed.json")
    params = read_params(pipeline / "params.yaml")
    spec = spec_from_params(EvaluateStageSpec, params, "prepared")
    paths = evaluate.EvaluatePaths(
        manifest=str(copy / "data/prepared/manifest.csv"), pretrain_dir=str(copy / "models/seeds/0/pretrain"),
        noisy_dir=str(copy / "models/seeds/0/noisy"), features_dir=str(copy / "features/seeds/0/prepared"),
        metrics=str(tmp_path / "prepared.json"), plots_dir=str(tmp_path / "plots"))
    record = evaluate.run(spec, "prepared", paths).record
    assert "removed" not in record.methods and set(TINY_VARIANTS) <= set(record.methods)
    # with the variant listed, its leftover backbone is a row again: the list is what decides
    listed = spec.model_copy(update={"variants": {**spec.variants, "removed": spec.variants[main]}})
    assert "removed" in evaluate.run(listed, "prepared", paths).record.methods
    report_spec = spec_from_params(ReportStageSpec, params)
    assert set(read_seeds(copy / "metrics/seeds", [0], variants=set(report_spec.variants))[0].pretrain) == set(TINY_VARIANTS)
    assert "removed" in read_seeds(copy / "metrics/seeds", [0])[0].pretrain
    # a listed variant whose pretraining has not run is named
    shutil.rmtree(copy / "models/seeds/0/pretrain" / main)
    with pytest.raises(FileNotFoundError, match=f"pretraining variant '{main}'"):
        evaluate.run(spec, "prepared", paths)


def test_every_notebook_runs_by_hand_from_the_notebooks_folder_with_its_defaults(pipeline: Path, tmp_path: Path) -> None:
    """As JupyterLab runs them: the kernel starts in ``notebooks/``, no parameter is injected, nothing is edited.

    Each notebook finds the repository root and its params.yaml, and its defaults name the seed-0 stage's
    inputs and outputs, which the tiny pipeline has (its main variant, seed 0 and target ``prepared``).
    """
    import papermill

    root = copy_repo(pipeline, tmp_path / "repo")
    # what the hand runs write must come from them
    shutil.rmtree(root / "reports/figures/seeds/0/04_evaluate_prepared")
    (root / "reports/results.md").unlink()
    shutil.rmtree(root / "models/bundle")
    for notebook in sorted((root / "notebooks").glob("*.ipynb")):
        papermill.execute_notebook(str(notebook), str(tmp_path / notebook.name), cwd=str(root / "notebooks"),
                                   kernel_name="python3", progress_bar=False)
    assert (root / "reports/figures/seeds/0/04_evaluate_prepared").is_dir()
    assert (root / "reports/results.md").is_file() and (root / "models/bundle").is_dir()
    assert not [p for p in (root / "notebooks").iterdir() if p.is_dir() and p.name != ".ipynb_checkpoints"], \
        "a hand run wrote into notebooks/"


def test_the_readmes_experiment_comparison_fits_120_columns(pipeline: Path, tmp_path: Path) -> None:
    """Two real experiments (each reruns the report with another interval level) and the baseline, compared
    with the README's command: no line wider than 120 characters, the changed headline figures shown."""
    import re
    import subprocess

    (command,) = re.findall(r"^(dvc exp show [^\n]*)$", (REPO / "README.md").read_text(), flags=re.M)
    root = copy_repo(pipeline, tmp_path / "repo")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, capture_output=True)
    subprocess.run(["git", "commit", "-qm", "the tiny pipeline's results"], cwd=root, check=True)
    for level in ("0.9", "0.8"):
        dvc(root, "exp", "run", "-S", f"report.confidence={level}")
    shown = subprocess.run(command, shell=True, cwd=root, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert "main.ci" in shown.stdout and "report.confidence" in shown.stdout and len(lines) >= 6
    assert max(len(line.rstrip()) for line in lines) <= 120, shown.stdout


def test_a_bad_value_never_costs_the_previous_outputs(pipeline: Path, tmp_path: Path) -> None:
    """The params check runs before any stage: ``dvc repro data`` with a typo stops there, naming the key, and
    data/prepared and metrics/data.json (not in DVC's cache) are still as the last run left them."""
    import subprocess
    import sys

    root = copy_repo(pipeline, tmp_path / "repo")
    before = {p: (root / p).read_bytes() for p in ("metrics/data.json", "data/prepared/manifest.csv")}
    write_params(root, with_overrides(read_params(root / "params.yaml"), {"data.synthetic.difficulty": 2}))
    run = subprocess.run([sys.executable, "-m", "dvc", "repro", "data"], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode != 0
    assert "data.synthetic.difficulty: Input should be less than or equal to 1" in run.stdout + run.stderr
    assert "Running stage 'data'" not in run.stdout + run.stderr
    assert {p: (root / p).read_bytes() for p in before} == before


def test_rerunning_stages_writes_the_same_bytes(pipeline: Path, tmp_path: Path) -> None:
    """No clock in any versioned output: forced reruns of the data, report and new-products stages leave
    dvc.lock and every record as they were (so a fresh clone's ``dvc repro`` of the committed baseline
    leaves ``git status`` clean; benchmarks/bench_pipeline.py checks that on the default run)."""
    root = copy_repo(pipeline, tmp_path / "repo")
    tracked = ["dvc.lock", "metrics/data.json", "metrics/summary.json", "metrics/headline.json",
               "metrics/new_products.json"]
    before = {p: (root / p).read_bytes() for p in tracked}
    dvc(root, "repro", "--force", "--single-item", "data", "report", "new_products")
    after = {p: (root / p).read_bytes() for p in tracked}
    assert [p for p in tracked if after[p] != before[p]] == []
    assert "enrolling" in (root / "reports" / "06_new_products.log").read_text()  # the timings: in the log


def test_a_stage_killed_midway_leaves_a_repository_the_next_repro_completes(pipeline: Path, tmp_path: Path) -> None:
    """kill -9 of ``dvc repro`` (and its notebook kernel) while a stage runs: the next ``dvc repro`` runs the
    stage again and ends with every output in place and ``dvc status`` clean."""
    import signal
    import subprocess
    import sys
    import time

    root = copy_repo(pipeline, tmp_path / "repo")
    run = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "new_products"],
                           cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert run.stdout is not None
    for line in run.stdout:  # dvc names the stage as it starts it
        if b"Running stage 'new_products'" in line:
            break
    time.sleep(4)  # the stage's kernel is starting or running (torch alone takes longer to import)
    os.killpg(run.pid, signal.SIGKILL)
    assert run.wait(timeout=60) == -signal.SIGKILL, "dvc repro ended before the kill reached it"
    dvc(root, "repro")
    assert not json.loads(dvc(root, "status", "--json").stdout)
    assert (root / "models" / "bundle" / "catalogue.bundle").is_file()
    assert json.loads((root / "metrics" / "new_products.json").read_text())["enrolment"]

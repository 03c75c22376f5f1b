"""Unknown-product rejection on the synthetic default and on real photos: every known-ness score, per
backbone and dataset, with intervals over training seeds, in one command.

Three datasets, each with a share of its products (``evaluate.rejection.unknown_fraction``) held out as
unknown, the rest enrolled; each score's threshold is chosen from the enrolled training images alone at
``evaluate.rejection.recall`` (:func:`retailnb.evaluation.rejection.evaluate_rejection`, exactly as the
pipeline's evaluation measures it):

* ``synthetic``: the default pipeline's target catalogue, with the backbones of a ``dvc repro`` of this
  repository (``--pipeline``: its ``data/prepared`` and ``models/seeds/<seed>``). Second unknown set: the
  source's unlabelled-only products. Negatives (what a store knows it does not sell): the source's
  labelled images, which pretraining saw.
* ``grocery_disjoint``: the Grocery Store Dataset's class-disjoint split (``common.grocery_halves``). Per
  seed the pipeline's main pretraining and its noisy student run here on the even half, as the pipeline runs
  them (cached in ``--work``); the odd half is the target, whose products pretraining never saw. Second
  unknown set: the even half's test photos (the pretraining half's products). Negatives: the even half's
  train photos and catalogue images.
* ``grocery_all``: all 81 Grocery products as the target of the synthetic pipeline's backbones (no second
  set, no negatives: the backbones saw no real product).

Per score (``reject_*``; ``+neg``: with the negatives, for the scores that use them; ``background``, where
there are negatives: a probe over the enrolled products plus one class of the negatives) and backbone (``main``:
the noisy student's teacher; ``student``: the last noisy round), it prints AUROC of the held-out products,
and apart for the held-out products of a kind (brand family; Grocery: coarse class such as "Yoghurt") that
has an enrolled product (``sibling_auroc``: another variant of something the store sells) and of a kind
that has none (``new_group_auroc``: each over the seeds whose split holds such products), the share of them
rejected at the threshold, the share of known test images accepted (the calibration
check: it should be the recall), known accuracy with rejection on (a rejected known image counts as an
error) and its drop from the probe's accuracy, and AUROC on the second unknown set: each mean with its
t-interval over the seeds.

Then the trade-off a store chooses with ``--recall``: the bundle's default score (and ``+neg``), and
``background`` where there are negatives, with the threshold at each of ``--recalls``, and what that threshold does on test: held-out products rejected, known
images accepted, known accuracy lost, second set rejected.

Usage:
    python benchmarks/bench_rejection.py [--pipeline .] [--grocery ../shared/data/GroceryStoreDataset]
        [--seeds 0 1 2] [--grocery-seeds 0 1] [--work DIR] [--datasets synthetic grocery_disjoint grocery_all]
        [--recalls 0.9 0.95 0.97 0.99] [--out benchmarks/results/rejection]
    python benchmarks/bench_rejection.py --render --out benchmarks/results/rejection   # .md from .json
    python benchmarks/bench_rejection.py --smoke   # checks the script runs (tiny synthetic data)

The parameters are those of ``--pipeline``'s ``params.yaml`` (the backbones' architecture and size, the
rejection protocol). Without the Grocery Store Dataset its datasets are skipped with a line saying so;
without a pipeline run (``dvc repro``) the pipeline's datasets stop with one line naming the missing file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common import GROCERY, PARAMS, REPO, add_smoke, grocery_halves, has_grocery, interval_text, smoke_params
from retailnb.bundle.choices import DEFAULT_REJECTION_SCORE
from retailnb.config.params_file import read_params
from retailnb.util.hashing import file_sha256

DATASETS = ("synthetic", "grocery_disjoint", "grocery_all")
MEASURES = ("auroc", "sibling_auroc", "new_group_auroc", "unknown_rejection", "known_acceptance", "known_accuracy",
            "accuracy_drop", "source_auroc")
"""The columns of the table, in order (``source_auroc`` where the dataset has a second unknown set)."""
RECALLS = (0.9, 0.95, 0.97, 0.99)
"""The known-product recalls of the trade-off tables (``--recalls``)."""
TRADEOFF_MEASURES = ("unknown_rejection", "known_acceptance", "accuracy_drop", "source_unknown_rejection")
"""The columns of the trade-off tables: what a score's threshold does at each recall."""
TRADEOFF_SCORES = (DEFAULT_REJECTION_SCORE, "background")
"""The scores of the trade-off tables: the bundle's default (and ``+neg``), and ``background`` where there are
negatives (what a bundle with negatives offers)."""


# --- features -------------------------------------------------------------------------------------


def features_of(backbone_path: Path, architecture: str, images: Any) -> np.ndarray:
    """(N, D) float32 frozen features of ``images`` under the backbone saved at ``backbone_path``."""
    from retailnb.models.backbone import create_backbone
    from retailnb.models.inference import extract_features

    model = create_backbone(architecture, weights=str(backbone_path))
    return np.asarray(extract_features(model, images, precision="fp32"))


def decoded(manifest: Any, rows: Sequence[Any], size: int) -> np.ndarray:
    """The images of ``manifest``'s ``rows`` decoded at ``size`` (the probes' decoding)."""
    from retailnb.data.images import decode_images

    return np.asarray(decode_images(manifest.paths(rows), size))


def pipeline_backbones(pipeline: Path, params: dict[str, Any], seed: int) -> dict[str, Path]:
    """The main backbone and the last noisy round's of a pipeline run for ``seed``."""
    seed_dir = pipeline / "models" / "seeds" / str(seed)
    main = seed_dir / "pretrain" / params["noisy"]["teacher_variant"] / "backbone.pt"
    student = seed_dir / "noisy" / f"round_{params['noisy']['rounds']}" / "backbone.pt"
    for path in (main, student):
        if not path.is_file():
            sys.exit(f"error: {path} is missing: run `dvc repro` in {pipeline} first (or give --pipeline)")
    return {"main": main, "student": student}


def grocery_backbones(params: dict[str, Any], seed: int, source: Path, target: Path, work: Path) -> dict[str, Path]:
    """Pretrain the main variant and run the noisy student on the Grocery even half, once per work folder,
    training seed, specs and code: their folder's key holds both stages' specs and the package's
    :func:`~retailnb.train.engine.code_digest`, so an edit of ``retailnb/`` trains afresh in a reused ``--work``."""
    from bench_transfer import run_noisy
    from common import Side, run_retailnb
    from retailnb.config.noisy import NoisyStageSpec
    from retailnb.config.pretrain import PretrainStageSpec
    from retailnb.config.stages import spec_from_params
    from retailnb.train.engine import code_digest

    pretrain = spec_from_params(PretrainStageSpec, params, params["noisy"]["teacher_variant"]).with_seed(seed)
    noisy = spec_from_params(NoisyStageSpec, params).with_seed(seed)
    identity = f"{pretrain.model_dump_json()}|{noisy.model_dump_json()}|{code_digest()}"
    out = work / f"seed{seed}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"
    main = out / "pretrain" / "backbone.pt"
    if not main.is_file():
        start = time.perf_counter()
        run_retailnb(params, seed, source, target, out / "pretrain")
        print(f"  seed {seed}: pretrained on the even half in {time.perf_counter() - start:.0f} s", flush=True)
    student = out / "noisy" / f"round_{params['noisy']['rounds']}" / "backbone.pt"
    if not student.is_file():
        start = time.perf_counter()
        run_noisy(params, seed, source, target, Side(0.0, 0.0, 0.0, 0, 0.0), main, out / "noisy")
        print(f"  seed {seed}: noisy student in {time.perf_counter() - start:.0f} s", flush=True)
    return {"main": main, "student": student}


# --- measuring ------------------------------------------------------------------------------------


def probe_c(f_train: np.ndarray, y_train: np.ndarray, seed: int) -> float:
    """The regularisation the probe's cross-validation picks on all the training images' features."""
    from retailnb.evaluation.probe import fit_logistic_probe

    return float(fit_logistic_probe(f_train, y_train, seed=seed).named_steps["logisticregression"].C)


def measure(f: dict[str, np.ndarray], y_train: np.ndarray, y_test: np.ndarray, groups: list[str],
            params: dict[str, Any], seed: int, *, c: float, recall: float,
            scores: Sequence[str] | None = None, more_recalls: Sequence[float] = (),
            calibrate: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """``scores`` (default: every score; and ``+neg`` with ``f['negatives']`` for those that use them) on one
    backbone's features, thresholds at ``recall``, the probe at ``c``: a row per score, the held-out products
    also measured apart by ``groups`` (each class's kind or brand family); each row's ``at_recall`` holds the
    threshold's measures at each of ``more_recalls`` (the same fits). ``calibrate``: the training images the
    thresholds come from (``evaluate_rejection``'s; None: all, out of fold)."""
    from retailnb.config.score_names import BACKGROUND_SCORES, NEGATIVE_SCORES, SCORES
    from retailnb.evaluation.rejection import evaluate_rejection, logistic_fit

    spec = params["evaluate"]["rejection"]
    chosen = tuple(scores or (*SCORES, *BACKGROUND_SCORES))
    kwargs = dict(fit=logistic_fit(c, seed=seed), unknown_fraction=float(spec["unknown_fraction"]),
                  recall=recall, seed=seed, folds=int(spec["folds"]),
                  f_source_unknown=f.get("source"), groups=groups, more_recalls=more_recalls, calibrate=calibrate)
    plain = evaluate_rejection(f["train"], y_train, f["test"], y_test, scores=tuple(s for s in chosen if s in SCORES),
                               **kwargs)
    rows = {score: dict(plain[score]) for score in plain if isinstance(plain[score], dict)}
    negative_scores = tuple(score for score in (*NEGATIVE_SCORES, *BACKGROUND_SCORES) if score in chosen)
    if f.get("negatives") is not None and negative_scores:
        negative = evaluate_rejection(f["train"], y_train, f["test"], y_test, f_negatives=f["negatives"],
                                      scores=negative_scores, **kwargs)
        # with the negatives: "+neg" for the scores that also run without them; background needs them
        rows.update({score if score in BACKGROUND_SCORES else f"{score}+neg": dict(negative[score])
                     for score in negative_scores})
    for row in rows.values():
        for cells in (row, *row.get("at_recall", {}).values()):
            cells["accuracy_drop"] = cells["closed_accuracy"] - cells["known_accuracy"]
    return rows


def synthetic_extra(manifest: Any, size: int) -> dict[str, np.ndarray]:
    """The synthetic manifest's second unknown set (``source``: the source's unlabelled-only products) and
    ``negatives`` (the source's labelled photos), decoded at ``size``."""
    from retailnb.evaluation.compare import source_unknown_records

    return {"source": decoded(manifest, source_unknown_records(manifest), size),
            "negatives": decoded(manifest, manifest.select("labelled"), size)}


def dataset_features(name: str, args: argparse.Namespace, params: dict[str, Any], seed: int,
                     cache: dict[str, Any]) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray, np.ndarray, list[str]]:
    """Per backbone, the features of the dataset's train/test images (and second unknown set, negatives);
    the labels; and each class's group (the manifest's ``group``: Grocery's coarse kind, a synthetic brand family)."""
    from retailnb.data.manifest import read_manifest
    from retailnb.evaluation.quickprobe import load_probe_data

    size, arch = params["backbone"]["image_size"], params["backbone"]["architecture"]
    if name == "grocery_disjoint":
        source, target = cache.setdefault("halves", grocery_halves(args.grocery, args.work))
        backbones = grocery_backbones(params, seed, source, target, args.work)
        data = cache.setdefault("odd", load_probe_data(read_manifest(target), size, "probe_train", "probe_test"))
        even = cache.setdefault("even", load_probe_data(read_manifest(source), size, "probe_train", "probe_test"))
        extra = {"source": even.x_test, "negatives": even.x_train}
    else:
        backbones = pipeline_backbones(args.pipeline, params, seed)
        if name == "synthetic":
            manifest = read_manifest(args.pipeline / "data" / "prepared" / "manifest.csv")
            data = cache.setdefault("synthetic", load_probe_data(manifest, size, "probe_train", "probe_test"))
            extra = cache.setdefault("synthetic_extra", synthetic_extra(manifest, size))
        else:
            if "all" not in cache:
                from retailnb.data.prepare import prepare_dataset

                out = args.work / "grocery_all"
                if not (out / "manifest.csv").is_file():
                    prepare_dataset("grocery_store", out, root=args.grocery, labels="fine", kinds="all",
                                    on_error="skip")
                cache["all"] = load_probe_data(read_manifest(out / "manifest.csv"), size, "probe_train", "probe_test")
            data, extra = cache["all"], {}
    features = {}
    for backbone, path in backbones.items():  # cached under the weights' content: a retrained backbone is new
        saved = args.work / "features" / f"{name}_seed{seed}_{backbone}_{file_sha256(path)[:12]}.npz"
        if saved.is_file():
            with np.load(saved) as f:
                features[backbone] = {k: f[k] for k in f.files}
            continue
        images = {"train": data.x_train, "test": data.x_test, **extra}
        features[backbone] = {k: features_of(path, arch, v) for k, v in images.items()}
        saved.parent.mkdir(parents=True, exist_ok=True)
        np.savez(saved, **features[backbone])
    group_of = {row.class_name: row.group for row in data.train}
    return features, np.asarray(data.y_train), np.asarray(data.y_test), [group_of[c] for c in data.classes]


# --- summary --------------------------------------------------------------------------------------


def section(heading: str, keys: list[str], rows: list[tuple[list[str], dict[str, list[float]]]],
            measures: Sequence[str]) -> list[str]:
    """One markdown table under ``### heading``: the ``keys`` columns that name each row, then each of
    ``measures`` some row has (mean and t-interval over the seeds; ``-`` where a row lacks it)."""
    shown = [m for m in measures if any(m in values for _, values in rows)]
    lines = [f"### {heading}", "", "| " + " | ".join([*keys, *shown]) + " |", "|" + "---|" * (len(keys) + len(shown))]
    for names, values in rows:
        cells = [interval_text(values[m]) if m in values else "-" for m in shown]
        lines.append("| " + " | ".join([*names, *cells]) + " |")
    return [*lines, ""]


def table(results: dict[str, Any]) -> list[str]:
    """The markdown tables of ``results`` (dataset -> backbone -> score -> measure -> per-seed values)."""
    lines = []
    for dataset, backbones in results["datasets"].items():
        rows = [([backbone, score], values) for backbone, scores in backbones.items()
                for score, values in scores.items()]
        lines += section(dataset, ["backbone", "score"], rows, MEASURES)
    return lines


def tradeoff_table(results: dict[str, Any]) -> list[str]:
    """The markdown tables of ``results['tradeoff']`` (dataset -> backbone -> score -> recall -> measure ->
    per-seed values): what the default score's threshold costs and rejects at each known-product recall."""
    lines = []
    for dataset, backbones in results.get("tradeoff", {}).items():
        rows = [([backbone, score, recall], values) for backbone, scores in backbones.items()
                for score, recalls in scores.items() for recall, values in recalls.items()]
        scores = ", ".join(results["tradeoff_scores"])
        heading = f"{dataset}: the threshold's recall against what it costs ({scores})"
        lines += section(heading, ["backbone", "score", "recall"], rows, TRADEOFF_MEASURES)
    return lines


def summary(results: dict[str, Any]) -> list[str]:
    """The heading line (seeds and protocol, from ``results`` itself) and the tables of ``results``."""
    protocol = results["params"]
    return [f"Unknown-product rejection; seeds {results['seeds']} (grocery_disjoint: {results['grocery_seeds']}); "
            f"held out {protocol['unknown_fraction']} of the products, thresholds at recall {protocol['recall']}",
            "", *table(results), *tradeoff_table(results)]


def render(out: Path) -> None:
    """Rewrite ``OUT.md`` from ``OUT.json`` (a committed result's table, without rerunning anything)."""
    saved = out.with_suffix(".json")
    if not saved.is_file():
        sys.exit(f"--render: no results at {saved}")
    out.with_suffix(".md").write_text("\n".join(summary(json.loads(saved.read_text()))) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=REPO, help="a repository where `dvc repro` ran")
    parser.add_argument("--grocery", type=Path, default=GROCERY, help="the Grocery Store Dataset's folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: evaluate.seeds")
    parser.add_argument("--grocery-seeds", type=int, nargs="+", default=None,
                        help="seeds of grocery_disjoint, each pretraining and running the noisy student here "
                             "(about 5 min each alone on 2 CPU cores); default: --seeds")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--recalls", type=float, nargs="+", default=list(RECALLS),
                        help="known-product recalls of the trade-off tables (the bundle's default score at each)")
    parser.add_argument("--work", type=Path, default=None,
                        help="cache of the Grocery runs and of every backbone's features (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--render", action="store_true", help="only rewrite OUT.md from OUT.json (needs --out)")
    add_smoke(parser, "tiny pipeline and data, one seed, synthetic only")
    args = parser.parse_args(argv)
    if not all(0.0 < recall <= 1.0 for recall in args.recalls):
        parser.error(f"--recalls must be known-product recalls in (0, 1], got {args.recalls}")
    if args.render:
        if args.out is None:
            parser.error("--render needs --out (the results to render: OUT.json)")
        render(args.out)
        return
    params = read_params(args.pipeline / "params.yaml" if (args.pipeline / "params.yaml").is_file() else PARAMS)
    if args.smoke:
        params = smoke_params(params)
        args.datasets, args.seeds = ["synthetic"], [0]
        args.pipeline = smoke_pipeline(params, Path(tempfile.mkdtemp(prefix="retailnb-rejection-smoke-")))
    args.work = args.work or Path(tempfile.mkdtemp(prefix="retailnb-rejection-"))
    args.work.mkdir(parents=True, exist_ok=True)
    seeds = args.seeds or list(params["evaluate"]["seeds"])
    spec = params["evaluate"]["rejection"]
    results: dict[str, Any] = {"seeds": seeds, "grocery_seeds": args.grocery_seeds or seeds, "params": spec,
                               "datasets": {}, "recalls": args.recalls, "tradeoff_scores": TRADEOFF_SCORES,
                               "tradeoff": {}}
    for dataset in args.datasets:
        if dataset.startswith("grocery") and not has_grocery(args.grocery):
            print(f"{dataset}: skipped, no Grocery Store Dataset at {args.grocery}")
            continue
        cache: dict[str, Any] = {}
        per: dict[str, dict[str, dict[str, list[float]]]] = {}
        costs: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {}
        for seed in (args.grocery_seeds or seeds) if dataset == "grocery_disjoint" else seeds:
            start = time.perf_counter()
            features, y_train, y_test, groups = dataset_features(dataset, args, params, seed, cache)
            for backbone, f in features.items():
                c = probe_c(f["train"], y_train, seed)
                rows = measure(f, y_train, y_test, groups, params, seed, c=c, recall=float(spec["recall"]),
                               more_recalls=args.recalls)
                for score, row in rows.items():
                    cell = per.setdefault(backbone, {}).setdefault(score, {})
                    for m in MEASURES:
                        if m in row:
                            cell.setdefault(m, []).append(float(row[m]))
                    if score.removesuffix("+neg") not in TRADEOFF_SCORES:
                        continue
                    for recall, at in row["at_recall"].items():
                        cell = costs.setdefault(backbone, {}).setdefault(score, {}).setdefault(recall, {})
                        for m in TRADEOFF_MEASURES:
                            if m in at:
                                cell.setdefault(m, []).append(float(at[m]))
            print(f"{dataset} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
        results["datasets"][dataset] = per
        results["tradeoff"][dataset] = costs
    lines = summary(results)
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def smoke_pipeline(params: dict[str, Any], work: Path) -> Path:
    """A tiny pipeline's data and backbones for seed 0 in ``work``, laid out as a ``dvc repro`` leaves them."""
    from bench_transfer import run_noisy
    from common import Side, run_retailnb, synthetic_manifest
    from retailnb.config.data import SyntheticSpec

    manifest = synthetic_manifest(SyntheticSpec.model_validate(params["data"]["synthetic"]), work / "data" / "prepared")
    seed_dir = work / "models" / "seeds" / "0"
    _, main = run_retailnb(params, 0, manifest, manifest, seed_dir / "pretrain" / params["noisy"]["teacher_variant"])
    run_noisy(params, 0, manifest, manifest, Side(0.0, 0.0, 0.0, 0, 0.0), main, seed_dir / "noisy")
    return work


if __name__ == "__main__":
    main()

"""The budget study of issue 31: how close the frozen-feature probe gets to finetuning as the budget grows.

The paper's claim is that a logistic regression on the pretrained features reaches "accuracy in order of
finetuning the entire Convnet backbone". This study measures that ratio (probe accuracy with all training
images / accuracy of finetuning the main pretrained backbone, as the report's ``ratio_to_finetune``)
against the compute spent, one lever at a time.

Each configuration of ``benchmarks/budget.yaml`` is a list of params.yaml overrides (``key.path=value``, as
``dvc exp run -S`` takes them). For every configuration and training seed it runs, as the pipeline's
stages do (the same functions and specs, ``with_seed``):

1. the data (the synthetic default generated from the configuration's ``data.synthetic``; or the Grocery
   Store Dataset's even coarse kinds as the source and its odd kinds as the target, ``--target grocery``);
2. pretraining of the main variant (``noisy.teacher_variant``), then every noisy-student round;
3. on the target's products (which pretraining never saw): the logistic-regression probe on the frozen
   features of the main backbone and of each round, with all training images, as the evaluate stage
   fits it; and the finetuning baseline from the main backbone (``evaluate.finetune``);
4. two probe-side levers on the same backbones, no training: features L2-normalised before the probe
   (``l2``), and each training image's features averaged with those of four light augmentations of it
   (``evaluate.finetune.views``; ``aug_mean``).

With the default configuration the probe and finetuning accuracies are those of the pipeline's evaluate
stage for that seed (the same computation), so its row can be checked against ``metrics/summary.json``.

Compute is reported two ways: the wall-clock minutes of pretraining plus the noisy student on this
machine (finetuning, the baseline, is timed apart), and the training images processed (epochs x images,
summed over pretraining and the rounds).

Results are appended to ``--out`` (JSON, one entry per configuration and seed; a rerun skips what is
there, so an interrupted study continues), and the table and figure of every configuration in it are
written beside it (``.md``, ``.png``): per configuration the ratio of the main backbone and of the last
round, with the accuracies, each as a mean and t-interval over the seeds. The work folder (``--work``)
caches each pretraining, noisy student and finetuning under a key of its spec, its data and the package's
code (:func:`retailnb.train.engine.code_digest`), so configurations share what they train alike and an edit of
``retailnb/`` trains afresh; the rows already in ``--out`` are kept as they are (give a new ``--out`` after a
change of what training computes).

Usage:
    python benchmarks/budget_study.py [--target synthetic|grocery] [--seeds 0 1 2] [--configs a b ...]
        [--root ../shared/data/GroceryStoreDataset] [--work DIR] [--out benchmarks/results/budget_<target>.json]
    python benchmarks/budget_study.py --render [--out ...]   # table and figure from the JSON alone
    python benchmarks/budget_study.py --smoke   # checks the script runs: tiny data, model and epochs

``--smoke`` applies each configuration's overrides over the smoke runs' tiny data, model and one epoch
(:func:`common.smoke_params`), one seed, the first configuration unless ``--configs`` names others, and
writes its results in the work folder (a new temporary one unless ``--work``), not in ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from common import (
    GROCERY,
    PARAMS,
    REPO,
    add_smoke,
    apply_smoke,
    grocery_halves,
    has_grocery,
    interval_text,
    smoke_params,
    synthetic_halves,
    target_data,
)
from retailnb.config.overrides import apply_overrides
from retailnb.config.params_file import read_params

AUGMENTATIONS = 4
"""Light augmentations averaged with each training image's features (the ``aug_mean`` lever)."""

TREND_ROUNDS = 4
"""The round table's trend: the ratio's mean gain per round over a configuration's last this many rounds."""

LEVERS = ("probe", "l2", "aug_mean")
"""The probes measured on every backbone: as the evaluate stage fits it, then the two probe-side levers."""

SMOKE = {"target": "synthetic", "seeds": [0]}
"""``--smoke``: the synthetic target, one seed; the configurations' overrides over :func:`common.smoke_params`
(the default configuration alone unless ``--configs`` names others)."""


def cpu_fingerprint() -> str:
    """This machine's CPU as far as floating point goes: model (family, model, stepping), torch's build and
    the vector instructions it uses. Runs on two fingerprints differ in the last digits from the first
    epoch on, so their rows cannot be paired seed by seed, nor share a pretraining."""
    import platform

    import torch

    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "cpu family", "model", "stepping") and key.strip() not in fields:
                    fields[key.strip()] = value.strip()
                if not line.strip() and fields:
                    break
    except OSError:
        pass
    model = (f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}, "
             f"stepping {fields.get('stepping', '?')})" if "model name" in fields else platform.processor() or
             platform.machine())
    return f"{model}; torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"


def load_configs(path: Path) -> dict[str, list[str]]:
    """Every configuration of the YAML file: its name and params.yaml overrides."""
    configs = yaml.safe_load(path.read_text())["configs"]
    return {name: [str(item) for item in items] for name, items in configs.items()}


def source_and_target(target: str, params: dict[str, Any], root: Path, work: Path) -> tuple[Path, Path]:
    """(source manifest, target manifest): the synthetic data of ``params`` (one folder per distinct
    ``data.synthetic``, so a configuration that changes it gets its own), or the Grocery halves."""
    return grocery_halves(root, work) if target == "grocery" else synthetic_halves(params, work)


def probe_all(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
              seed: int, knn_k: int) -> float:
    """Accuracy of the logistic-regression probe with all training images, as the evaluate stage fits it."""
    from retailnb.evaluation.fewshot import fewshot_eval

    rows = fewshot_eval(f_train, y_train, f_test, y_test, shots=[None], draws=1, seed=seed, knn_k=knn_k)
    return float(rows[0]["probe_accuracy"])


def augmented_mean(weights: str, architecture: str, x_train: Any, f_train: np.ndarray, views: Any, size: int,
                   seed: int) -> np.ndarray:
    """Each training image's features averaged with those of :data:`AUGMENTATIONS` light augmentations."""
    from retailnb.models.backbone import create_backbone
    from retailnb.models.backbone_info import read_backbone_info
    from retailnb.models.inference import extract_features
    from retailnb.transforms.batch_views import BatchViews

    info = read_backbone_info(weights)
    model = create_backbone(info.architecture if info is not None else architecture, weights=weights)
    torch.manual_seed(seed)
    transform = BatchViews(size, views)
    total = f_train.astype(np.float64)
    for _ in range(AUGMENTATIONS):
        total += extract_features(model, x_train, transform=transform)
    return (total / (AUGMENTATIONS + 1)).astype(np.float32)


def run_one(params: dict[str, Any], seed: int, source: Path, target: Path, run_dir: Path) -> dict[str, Any]:
    """Pretrain, run the noisy student and measure the probes and finetuning for one configuration and seed."""
    from retailnb.config.evaluate import EvaluateStageSpec
    from retailnb.config.noisy import NoisyStageSpec
    from retailnb.config.pretrain import PretrainStageSpec
    from retailnb.config.stages import spec_from_params
    from retailnb.evaluation.compare import backbones_features, collect_backbones
    from retailnb.evaluation.finetune import finetune
    from retailnb.evaluation.rejection import normalize
    from retailnb.stages import noisy
    from retailnb.stages.pretrain import PretrainPaths, train_here
    from retailnb.train.engine import code_digest

    variant = params["noisy"]["teacher_variant"]
    pretrain_spec = spec_from_params(PretrainStageSpec, params, variant).with_seed(seed)
    noisy_spec = spec_from_params(NoisyStageSpec, params).with_seed(seed)
    target_name = next(iter(params["evaluate"]["targets"]))
    evaluate_spec = spec_from_params(EvaluateStageSpec, params, target_name).with_seed(seed)
    # configurations that pretrain alike (e.g. more rounds, another student) share the pretraining and its
    # finetuning baseline: one folder per pretraining spec, source and code (an edit of the package trains
    # afresh, as the pipeline's own training states do), its minutes and images recorded there
    identity = f"{pretrain_spec.model_dump_json()}|{source.resolve()}|{code_digest()}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    pretrain_root = run_dir.parent.parent / "pretrain" / f"{variant}-{seed}-{key}"
    pretrain_dir = pretrain_root / variant
    done_file = pretrain_root / "pretrain_done.json"
    if not done_file.is_file():
        shutil.rmtree(pretrain_root, ignore_errors=True)  # an interrupted pretraining starts over: its minutes count
        start = time.perf_counter()
        fitted = train_here(pretrain_spec, PretrainPaths(manifest=str(source), out_dir=str(pretrain_dir), live_dir="",
                                                         metrics=""))
        done_file.write_text(json.dumps({"minutes": (time.perf_counter() - start) / 60, "images": fitted.images}))
    pretrain = json.loads(done_file.read_text())
    teacher = str(pretrain_dir / "backbone.pt")
    # configurations that also train the noisy student alike (e.g. another finetuning grid) share its rounds
    # too: one folder per noisy-student spec under the pretraining's, its minutes and images recorded there
    noisy_key = hashlib.sha256(noisy_spec.model_dump_json().encode()).hexdigest()[:12]
    noisy_root = pretrain_root / f"noisy-{noisy_key}"
    noisy_dir, noisy_done = noisy_root / "noisy", noisy_root / "noisy_done.json"
    if not noisy_done.is_file():
        shutil.rmtree(noisy_root, ignore_errors=True)  # an interrupted run's rounds start over: their minutes count
        started = time.perf_counter()
        record = noisy.run_here(noisy_spec, noisy.NoisyPaths(
            manifest=str(source), teacher_backbone=teacher, out_dir=str(noisy_dir),
            metrics=str(noisy_root / "noisy.json"), rounds_plot=str(noisy_root / "noisy_rounds.json"),
            pseudolabels_plot=str(noisy_root / "noisy_pseudolabels.json"))).record
        noisy_images = sum(r.images or 0 for r in record.rounds) * noisy_spec.noisy.engine.epochs  # images per epoch
        noisy_done.write_text(json.dumps({"minutes": (time.perf_counter() - started) / 60, "images": noisy_images}))
    rounds = json.loads(noisy_done.read_text())
    trained = time.perf_counter()

    size, architecture = evaluate_spec.backbone.image_size, evaluate_spec.backbone.architecture
    data = target_data(target, size)
    backbones = {name: weights for name, weights in collect_backbones(pretrain_root, noisy_dir,
                                                                        variants=[variant]).items()
                 if name != "random_init"}
    features, _ = backbones_features(backbones, data, architecture=architecture, seed=evaluate_spec.probe.seed,
                                     cache_dir=run_dir / "features")
    probe_seed, knn_k = evaluate_spec.probe.seed, evaluate_spec.probe.knn_k
    probes: dict[str, dict[str, float]] = {}
    for name, (f_train, f_test) in features.items():
        aug = augmented_mean(backbones[name], architecture, data.x_train, f_train, evaluate_spec.finetune.views,
                             size, probe_seed)
        probes[name] = {
            "probe": probe_all(f_train, data.y_train, f_test, data.y_test, probe_seed, knn_k),
            "l2": probe_all(normalize(f_train).astype(f_train.dtype), data.y_train,
                            normalize(f_test).astype(f_test.dtype), data.y_test, probe_seed, knn_k),
            "aug_mean": probe_all(aug, data.y_train, f_test, data.y_test, probe_seed, knn_k),
        }
    probed = time.perf_counter()
    tuned_key = hashlib.sha256(f"{evaluate_spec.finetune.model_dump_json()}|{target.resolve()}".encode()).hexdigest()
    tuned_file = pretrain_root / f"finetune-{tuned_key[:12]}.json"
    if not tuned_file.is_file():
        tuned = finetune(architecture, torch.load(teacher, map_location="cpu", weights_only=True), data.x_train,
                         data.y_train, data.x_test, data.y_test, spec=evaluate_spec.finetune,
                         compute=evaluate_spec.compute, state_dir=tuned_file.with_suffix(""), image_size=size)
        tuned_file.write_text(json.dumps({"accuracy": tuned.accuracy, "minutes": (time.perf_counter() - probed) / 60}))
    finetuned = json.loads(tuned_file.read_text())
    return {
        "pretrain_minutes": pretrain["minutes"], "noisy_minutes": rounds["minutes"],
        "probe_minutes": (probed - trained) / 60, "finetune_minutes": finetuned["minutes"],
        "pretrain_images": pretrain["images"], "noisy_images": rounds["images"],
        "finetune_accuracy": finetuned["accuracy"], "main": variant,
        "rounds": [name for name in probes if name.startswith("noisy_round_")], "probes": probes,
    }


# --- table and figure -----------------------------------------------------------------------------------


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% t-interval over seeds (low = high = mean with one seed)."""
    from retailnb.results.intervals import t_interval

    found = t_interval(values, 0.95)
    low = found.low if found.low is not None else found.mean
    high = found.high if found.high is not None else found.mean
    return found.mean, low, high


def ratios(row: dict[str, Any], backbone: str, lever: str = "probe") -> float:
    """A run's probe accuracy on ``backbone`` over its finetuning accuracy."""
    return float(row["probes"][backbone][lever]) / float(row["finetune_accuracy"])


def last_round(row: dict[str, Any]) -> str | None:
    return row["rounds"][-1] if row["rounds"] else None


def config_rows(results: list[dict[str, Any]], names: list[str]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Each configuration that has results, in ``names`` order, with its runs by seed."""
    out = []
    for name in names:
        runs = sorted((r for r in results if r["config"] == name), key=lambda r: r["seed"])
        if runs:
            out.append((name, runs))
    return out


def table(results: list[dict[str, Any]], names: list[str]) -> list[str]:
    """The Markdown table: per configuration its compute, finetuning, and the probe and ratio of the main
    backbone and the last round, then the main backbone's ratio with each probe-side lever, each mean [95% t-interval]."""
    header = ("| configuration | seeds | pretrain min | + noisy min | images (k) | finetune | main probe | main ratio "
              "| last round probe | last round ratio | main ratio, l2 | main ratio, aug_mean |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, runs in config_rows(results, names):
        pretrain, noisy = _mean([r["pretrain_minutes"] for r in runs]), _mean([r["noisy_minutes"] for r in runs])
        images = _mean([r["pretrain_images"] + r["noisy_images"] for r in runs]) / 1000
        main = runs[0]["main"]
        last = [last_round(r) for r in runs]
        cells = [name, str(len(runs)), f"{pretrain:.1f}", f"{noisy:.1f}", f"{images:.0f}",
                 interval_text([r["finetune_accuracy"] for r in runs]),
                 interval_text([r["probes"][main]["probe"] for r in runs]),
                 interval_text([ratios(r, main) for r in runs])]
        if all(last):
            cells += [interval_text([r["probes"][b]["probe"] for r, b in zip(runs, last, strict=True)]),
                      interval_text([ratios(r, b) for r, b in zip(runs, last, strict=True)])]  # type: ignore[arg-type]
        else:
            cells += ["–", "–"]
        cells += [interval_text([ratios(r, main, "l2") for r in runs]),
                  interval_text([ratios(r, main, "aug_mean") for r in runs])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def round_ratios(runs: list[dict[str, Any]], depth: int) -> list[list[float] | None]:
    """Per round 0 (the main backbone) to ``depth``, the ratio of each run, or None where a run has fewer rounds."""
    out: list[list[float] | None] = [[ratios(r, r["main"]) for r in runs]]
    for i in range(depth):
        out.append([ratios(r, r["rounds"][i]) for r in runs] if all(len(r["rounds"]) > i for r in runs) else None)
    return out


def round_table(results: list[dict[str, Any]], names: list[str]) -> list[str]:
    """The Markdown table of the ratio after each noisy-student round (round 0: the main backbone, the
    teacher of round 1), per configuration, each mean [95% t-interval]."""
    configs = config_rows(results, names)
    depth = max(len(r["rounds"]) for _, runs in configs for r in runs)
    header = ("| configuration | main | " + " | ".join(f"round {i}" for i in range(1, depth + 1))
              + f" | gain per round, last {TREND_ROUNDS} |")
    lines = [header, "|" + "---|" * (depth + 3)]
    for name, runs in configs:
        by_round = round_ratios(runs, depth)
        cells = [interval_text(values) if values is not None else "–" for values in by_round]
        have = [values for values in by_round if values is not None]  # the main backbone, then each of its rounds
        trend = "–"
        if len(have) > TREND_ROUNDS:
            start, end = have[-1 - TREND_ROUNDS], have[-1]
            trend = interval_text([(b - a) / TREND_ROUNDS for a, b in zip(start, end, strict=True)])
        lines.append(f"| {name} | " + " | ".join([*cells, trend]) + " |")
    return lines


def figure(results: list[dict[str, Any]], names: list[str], path: Path, title: str) -> None:
    """Ratio against training minutes, per configuration: the main backbone and the last noisy round, each
    with its 95% t-interval over seeds; the paper's claim taken as a ratio of 0.9."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.lines import Line2D

    fig, (ax, by_round) = plt.subplots(1, 2, figsize=(13, 5), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    shapes = (("main backbone", "o", lambda r: r["main"]), ("last noisy round", "s", last_round))
    labelled: list[tuple[float, float]] = []  # where each configuration's name went, so that none covers another
    for i, (name, runs) in enumerate(config_rows(results, names)):
        points = []
        for _, marker, pick in shapes:
            if not all(pick(r) for r in runs):
                continue
            # the main backbone costs its pretraining; a noisy round, the pretraining and the rounds
            x = _mean([r["pretrain_minutes"] + (r["noisy_minutes"] if marker == "s" else 0.0) for r in runs])
            mean, low, high = _interval([ratios(r, pick(r)) for r in runs])
            ax.errorbar(x, mean, yerr=[[mean - low], [high - mean]], fmt=marker, color=f"C{i}", capsize=3)
            points.append((x, mean))
        ax.plot(*zip(*points), color=f"C{i}", linewidth=0.8, alpha=0.6)
        near = sum(abs(x - points[-1][0]) < 0.8 and abs(y - points[-1][1]) < 0.03 for x, y in labelled)
        labelled.append(points[-1])
        ax.annotate(name, points[-1], textcoords="offset points", xytext=(6, 4 + 10 * near), fontsize=8, color=f"C{i}")
    ax.legend(handles=[Line2D([], [], marker=m, linestyle="", color="black", label=label) for label, m, _ in shapes],
              fontsize=8, loc="lower right")
    ax.axhline(0.9, color="grey", linestyle="--", linewidth=1)
    ax.annotate("0.9: the paper's claim, taken as a target", (0, 0.9), xycoords=("axes fraction", "data"),
                textcoords="offset points", xytext=(4, 3), fontsize=8, color="grey")
    ax.set_xlabel("training minutes per seed on this machine, 2 CPU cores\n(main backbone: pretraining; "
                  "last round: pretraining + noisy student)", fontsize=9)
    ax.set_ylabel("probe accuracy / finetuning accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    # the ratio after each round: configurations that differ only in their number of rounds share the first ones
    configs = config_rows(results, names)
    depth = max(len(r["rounds"]) for _, runs in configs for r in runs)
    for i, (name, runs) in enumerate(configs):
        points = [(k + 0.06 * (i - len(configs) / 2), _interval(values))
                  for k, values in enumerate(round_ratios(runs, depth)) if values is not None]
        xs, stats = [x for x, _ in points], [st for _, st in points]
        by_round.errorbar(xs, [m for m, _, _ in stats], yerr=[[m - lo for m, lo, _ in stats], [hi - m for m, _, hi in stats]],
                          fmt="-o", markersize=3, color=f"C{i}", capsize=2, linewidth=0.8, label=name)
    by_round.axhline(0.9, color="grey", linestyle="--", linewidth=1)
    by_round.set_xticks(range(depth + 1), ["main", *map(str, range(1, depth + 1))])
    by_round.set_xlabel("noisy-student round (main: the pretrained backbone, round 1's teacher)", fontsize=9)
    by_round.set_ylabel("probe accuracy / finetuning accuracy")
    by_round.set_title("The ratio after each round", fontsize=10)
    by_round.legend(fontsize=7, loc="lower right")
    by_round.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render(results: list[dict[str, Any]], names: list[str], out: Path, target: str) -> str:
    """Write ``out``'s ``.md`` table and ``.png`` figure; return the table."""
    studied = [name for name in names if any(r["config"] == name for r in results)]
    studied += sorted({r["config"] for r in results} - set(studied))
    seeds = sorted({r["seed"] for r in results})
    lines = [f"Budget study, target {target} (products pretraining never saw); seeds {seeds}; mean [95% "
             "t-interval] over training seeds; ratio = probe accuracy with all images / accuracy of finetuning "
             "the main backbone; the overrides of each configuration are in benchmarks/budget.yaml", "",
             *table(results, studied), "", "The ratio after each noisy-student round (main: the pretrained "
             "backbone, round 1's teacher; –: the configuration has fewer rounds), and its mean gain per round over "
             f"the last {TREND_ROUNDS} rounds, seed by seed:", "", *round_table(results, studied)]
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    figure(results, studied, out.with_suffix(".png"), f"Probe / finetune against training budget ({target})")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("synthetic", "grocery"), default="synthetic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="*", default=None, help="names from --configs-file (default: all)")
    parser.add_argument("--configs-file", type=Path, default=REPO / "benchmarks" / "budget.yaml")
    parser.add_argument("--root", type=Path, default=GROCERY)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default /tmp/retailnb-budget-study)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default benchmarks/results/budget_<target>.json)")
    parser.add_argument("--render", action="store_true", help="only write the table and figure from --out")
    add_smoke(parser, "the default configuration, one seed, one epoch of a tiny model on tiny synthetic data")
    args = apply_smoke(parser.parse_args(argv), SMOKE)
    if args.work is None:
        args.work = Path(tempfile.mkdtemp(prefix="retailnb-budget-smoke-")) if args.smoke else Path(
            "/tmp/retailnb-budget-study")
    configs = load_configs(args.configs_file)
    names = args.configs or list(configs)[: 1 if args.smoke else None]
    unknown = sorted(set(names) - set(configs))
    if unknown:
        parser.exit(2, f"budget_study: unknown configuration(s) {unknown}; {args.configs_file} has {sorted(configs)}\n")
    out = args.out or (args.work / "budget_smoke.json" if args.smoke else
                       REPO / "benchmarks" / "results" / f"budget_{args.target}.json")
    results: list[dict[str, Any]] = json.loads(out.read_text()) if out.is_file() else []
    if args.render:
        print(render(results, list(configs), out, args.target), end="")
        return
    if args.target == "grocery" and not has_grocery(args.root):
        parser.exit(2, f"budget_study: no Grocery Store Dataset at {args.root} (--root)\n")
    done = lambda name, seed: any(r["config"] == name and r["seed"] == seed  # noqa: E731
                                  and r["overrides"] == configs[name] for r in results)
    cpu = cpu_fingerprint()
    others = sorted({str(r.get("cpu", "not recorded")) for r in results} - {cpu})
    if others and any(not done(name, seed) for name in names for seed in args.seeds):
        parser.exit(2, f"budget_study: {out} holds runs made on another CPU ({' | '.join(others)}); this one is "
                       f"{cpu}. Runs on two CPUs differ from the first epoch and cannot be paired: give a new "
                       "--out and run the default there too, or run where the file was made\n")
    base = read_params(PARAMS)
    for name in names:
        params = apply_overrides(smoke_params(base) if args.smoke else base, configs[name])
        source, target = source_and_target(args.target, params, args.root, args.work)
        for seed in args.seeds:
            if done(name, seed):
                continue
            row = run_one(params, seed, source, target, args.work / "runs" / args.target / f"{name}-{seed}")
            results = [r for r in results if not (r["config"] == name and r["seed"] == seed)]
            results.append({"config": name, "seed": seed, "overrides": configs[name], "cpu": cpu, **row})
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2) + "\n")
            last = last_round(row)
            print(f"{name} seed {seed}: ratio {ratios(row, row['main']):.3f} (main), "
                  f"{ratios(row, last):.3f} ({last}) in {row['pretrain_minutes'] + row['noisy_minutes']:.1f} min"
                  if last else f"{name} seed {seed}: ratio {ratios(row, row['main']):.3f}", flush=True)
    print(render(results, list(configs), out, args.target), end="")


if __name__ == "__main__":
    main()

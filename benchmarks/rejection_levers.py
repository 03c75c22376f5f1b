"""What moves unknown-product rejection on real photos, beyond the score: one lever at a time.

``bench_rejection.py`` measures every known-ness score on fixed backbones; on the Grocery Store Dataset's
class-disjoint target no score reaches the AUROC the store needs, and the scores agree on why: the
backbone cannot tell a held-out product from its enrolled siblings. This study keeps that benchmark's
protocol (a quarter of the target's products held out, thresholds for 95% known recall from look-alike
folds, the pretraining half's photos as the second unknown set and as negatives) and changes one thing at a
time, on the features or on the training (:data:`LEVERS`):

* ``default``: the benchmark's Grocery backbones (:func:`bench_rejection.grocery_backbones`), features as a
  bundle takes them.
* ``flip``: each image's features averaged with its mirror image's (test-time augmentation).
* ``layers``: the last two stages' pooled features side by side, each of unit length: the earlier stage
  keeps more of the colour and print that tell siblings apart.
* ``colour``: the backbone's features of unit length beside a colour histogram of the image's centre
  (:func:`colour_histogram`, also of unit length): colour tells many siblings apart (apple, pepper and juice
  varieties), and the contrastive views teach the backbone to discount it.
* ``colour_only``: the colour histogram alone, no backbone: what a hand-made feature does under the same
  protocol (its ``main`` and ``student`` rows are the same).
* ``rounds_4``: four noisy-student rounds instead of two (the probe's closed-set accuracy rises with them).
* ``enrolled``: pretraining and the noisy student also see the enrolled products' training photos, with
  their labels, as a store that trains on its own catalogue would; the held-out products stay unseen.
* ``enrolled_split``: as ``enrolled``, but a third of each enrolled product's training photos (whole groups
  of look-alikes, :func:`known_share`) stay out of training, and the thresholds come from them: a
  threshold chosen on photos the backbone trained on accepts too few new photos.
* ``size_96``, ``size_128``: every stage at 96 or 128 px instead of 64 (a pack's print is a few pixels
  high at 64).

Per lever and backbone it measures the scores of :data:`SCORES` (``+neg``: with the negatives) and, per
lever, the paired difference from ``default`` over the seeds. Three training seeds by default; the
training levers train per seed (on 2 cores about 7 minutes a seed at 64 px, 12 at 96, 22 at 128), in
``--work`` folders keyed as the benchmark's, so a rerun reuses them. ``--out`` is rewritten after each
lever, so a long run's finished levers are kept::

    python benchmarks/rejection_levers.py --out benchmarks/results/rejection_levers \
        --levers default flip layers rounds_4 enrolled enrolled_split size_96 size_128   # the committed results
    python benchmarks/rejection_levers.py --levers default colour colour_only \
        --out benchmarks/results/rejection_colour                          # the committed colour results
    python benchmarks/rejection_levers.py --levers default flip layers      # the feature levers only
    python benchmarks/rejection_levers.py --render --out benchmarks/results/rejection_levers
    python benchmarks/rejection_levers.py --smoke   # checks the script runs: tiny synthetic data, one epoch

Needs the Grocery Store Dataset (``--grocery``); ``--smoke`` uses the synthetic data instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench_rejection import features_of, grocery_backbones, measure, probe_c
from common import (GROCERY, PARAMS, add_smoke, grocery_halves, has_grocery, interval_text, smoke_params,
                    synthetic_halves)
from retailnb.config.params_file import read_params
from retailnb.data.lookalikes import calibration_share

LEVERS = ("default", "flip", "layers", "colour", "colour_only", "rounds_4", "enrolled", "enrolled_split", "size_96",
          "size_128")
"""The levers, in the order they run and the tables list them (the feature levers first, then the training
levers by cost); ``default`` is the one the others are paired with."""
DEFAULT_LEVERS = LEVERS[:-1]
"""What a run measures unless ``--levers`` says otherwise: ``size_128`` alone trains for about an hour on 2 cores."""
COLOUR_LEVERS = ("colour", "colour_only")
"""The levers measured in a later run of their own (``benchmarks/results/rejection_colour``, each paired with
that run's ``default``); ``benchmarks/results/rejection_levers`` holds the others."""
COLOUR_BINS = (16, 4, 4)
"""Hue, saturation and value bins of :func:`colour_histogram` (256 in all)."""
TRAINING = {"rounds_4": ["noisy.rounds=4"], "enrolled": [], "enrolled_split": [],
            "size_96": ["backbone.image_size=96"], "size_128": ["backbone.image_size=128"]}
"""The levers that train their own backbones: the ``params.yaml`` overrides of each (``enrolled`` and
``enrolled_split`` change the pretraining data instead)."""
ENROLLED = ("enrolled", "enrolled_split")
"""The levers whose backbones also train on the enrolled products' photos."""
SCORES = ("prototype", "knn", "mahalanobis", "background")
"""The scores measured (``prototype`` and ``knn`` also with the negatives, ``background`` needs them)."""
MEASURES = ("auroc", "sibling_auroc", "new_group_auroc", "source_auroc", "closed_accuracy", "known_acceptance",
            "accuracy_drop")
"""The columns of the table."""
PAIRED = ("prototype", "prototype+neg", "background")
"""The scores of the paired table: the bundle's default, with the negatives, and the best on real photos."""
PAIRED_MEASURES = ("auroc", "source_auroc", "closed_accuracy")
"""The measures of the paired table."""
SMOKE_LEVERS = ("default", "flip", "layers", "colour", "colour_only", "enrolled", "enrolled_split")


# --- features -------------------------------------------------------------------------------------


def last_stages_features(backbone_path: Path, architecture: str, images: Any) -> np.ndarray:
    """(N, D3 + D4) the last two stages' globally pooled features of ``images``, each part of unit length."""
    import torch

    from retailnb.evaluation.rejection import normalize
    from retailnb.models.backbone import create_backbone
    from retailnb.models.inference import extract_features

    class LastStages(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            maps = self.model.forward_intermediates(x, indices=2, intermediates_only=True)
            return torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1)

    model = create_backbone(architecture, weights=str(backbone_path))
    width = model.feature_info[-2]["num_chs"]
    both = np.asarray(extract_features(LastStages(model), images, precision="fp32"))
    return np.concatenate([normalize(both[:, :width]), normalize(both[:, width:])], axis=1).astype(np.float32)


def colour_histogram(images: Any, bins: tuple[int, int, int] = COLOUR_BINS) -> np.ndarray:
    """(N, prod(bins)) float32: each image's joint hue-saturation-value histogram over its central half (each side's
    middle half, where the product is; the edges show shelf and neighbours), as square roots of the shares, so a
    row has unit length and the dot product of two rows is their Bhattacharyya coefficient."""
    from matplotlib.colors import rgb_to_hsv

    x = np.asarray(images)
    h, w = x.shape[1:3]
    centre = x[:, h // 4: h - h // 4, w // 4: w - w // 4].astype(np.float32) / 255
    out = np.empty((len(x), int(np.prod(bins))), dtype=np.float32)
    for i, image in enumerate(centre):
        counts, _ = np.histogramdd(rgb_to_hsv(image).reshape(-1, 3), bins=bins, range=[(0.0, 1.0)] * 3)
        out[i] = np.sqrt(counts.ravel() / counts.sum())
    return out


def lever_features(lever: str, backbone_path: Path, architecture: str, images: Any) -> np.ndarray:
    """(N, D) the features ``lever`` takes of ``images`` ((N, H, W, 3) uint8) under the saved backbone."""
    from retailnb.evaluation.rejection import normalize

    if lever == "colour_only":
        return colour_histogram(images)
    if lever == "colour":
        return np.concatenate([normalize(features_of(backbone_path, architecture, images)),
                               colour_histogram(images)], axis=1).astype(np.float32)
    if lever == "flip":
        mirrored = np.ascontiguousarray(np.asarray(images)[:, :, ::-1])
        both = features_of(backbone_path, architecture, images), features_of(backbone_path, architecture, mirrored)
        return (both[0] + both[1]) / 2
    if lever == "layers":
        return last_stages_features(backbone_path, architecture, images)
    return features_of(backbone_path, architecture, images)


# --- the target and the backbones -----------------------------------------------------------------


@dataclasses.dataclass
class Target:
    """The pretraining and target manifests, and the target's images at one size."""

    source: Path
    target: Path
    synthetic: bool

    def data(self, size: int) -> tuple[Any, dict[str, np.ndarray], list[str]]:
        """The target's probe data, the extra sets (``source``: second unknown set, ``negatives``) and each
        class's group, at ``size`` px."""
        from bench_rejection import synthetic_extra
        from retailnb.data.manifest import read_manifest
        from retailnb.evaluation.quickprobe import load_probe_data

        data = load_probe_data(read_manifest(self.target), size, "probe_train", "probe_test")
        if self.synthetic:
            extra = synthetic_extra(read_manifest(self.source), size)
        else:
            even = load_probe_data(read_manifest(self.source), size, "probe_train", "probe_test")
            extra = {"source": np.asarray(even.x_test), "negatives": np.asarray(even.x_train)}
        group_of = {row.class_name: row.group for row in data.train}
        return data, extra, [group_of[c] for c in data.classes]


def known_share(images: Any, labels: np.ndarray, known: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(N,) bool: the training photos of the ``known`` class indices kept out of the backbone's training for
    the thresholds, as ``data.calibration_folds`` keeps a store's photos out
    (:func:`retailnb.data.lookalikes.calibration_share` of the known products' photos); the others' are unmarked."""
    rows = np.flatnonzero(np.isin(labels, known))
    out = np.zeros(len(labels), dtype=bool)
    out[rows] = calibration_share(np.asarray(images)[rows], np.asarray(labels)[rows], folds, seed)
    return out


def enrolled_manifest(target: Target, known: Sequence[str], out: Path, held: Sequence[str] = ()) -> Path:
    """A pretraining manifest in ``out``: the source's rows and the ``known`` products' enrolment photos
    (the target's ``probe_train`` rows) as ``labelled`` rows, less those whose manifest path is in ``held``;
    nothing of the other target products."""
    from retailnb.data.manifest import read_manifest, write_manifest

    source, own = read_manifest(target.source), read_manifest(target.target)
    rows = [dataclasses.replace(r, path=str(source.resolve(r))) for r in source.records]
    rows += [dataclasses.replace(r, path=str(own.resolve(r)), role="labelled")
             for r in own.select("probe_train") if r.class_name in set(known) and r.path not in set(held)]
    out.mkdir(parents=True, exist_ok=True)
    return write_manifest(rows, out / "manifest.csv")


def lever_backbones(lever: str, params: dict[str, Any], seed: int, target: Target, known: Sequence[str],
                    work: Path, held: Sequence[str] = ()) -> dict[str, Path]:
    """The main backbone and noisy student ``lever`` measures (trained once per work folder, seed and code);
    the ``enrolled`` levers train on the ``known`` products' photos but those of ``held`` (manifest paths)."""
    if lever in ENROLLED:
        key = hashlib.sha256("|".join([*sorted(known), *sorted(held)]).encode()).hexdigest()[:12]
        manifest = enrolled_manifest(target, known, work / "enrolled" / f"seed{seed}-{key}", held)
        return grocery_backbones(params, seed, manifest, target.target, manifest.parent)
    return grocery_backbones(params, seed, target.source, target.target, work)


def lever_params(lever: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with ``lever``'s overrides (:data:`TRAINING`)."""
    from retailnb.config.overrides import apply_overrides

    return apply_overrides(params, TRAINING.get(lever, []))


# --- measuring ------------------------------------------------------------------------------------


def run_seed(lever: str, params: dict[str, Any], seed: int, target: Target, work: Path,
             cache: dict[int, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """``lever``'s rows for one seed: backbone -> score -> measure."""
    from retailnb.evaluation.rejection import split_known_unknown

    lever_spec = lever_params(lever, params)
    size, arch = lever_spec["backbone"]["image_size"], lever_spec["backbone"]["architecture"]
    if size not in cache:
        cache[size] = target.data(size)
    data, extra, groups = cache[size]
    y_train, y_test = np.asarray(data.y_train), np.asarray(data.y_test)
    spec = params["evaluate"]["rejection"]
    known_classes = split_known_unknown(y_train, float(spec["unknown_fraction"]), seed)[0]
    known = [data.classes[i] for i in known_classes]
    calibrate, held = None, []  # the photos kept out of training for the thresholds, and their manifest paths
    if lever == "enrolled_split":
        calibrate = known_share(data.x_train, y_train, known_classes, int(spec["folds"]), seed)
        held = [row.path for row, kept in zip(data.train, calibrate) if kept]
    rows = {}
    for backbone, path in lever_backbones(lever, lever_spec, seed, target, known, work, held).items():
        images = {"train": data.x_train, "test": data.x_test, **extra}
        f = {name: lever_features(lever, path, arch, x) for name, x in images.items()}
        rows[backbone] = measure(f, y_train, y_test, groups, params, seed, c=probe_c(f["train"], y_train, seed),
                                 recall=float(spec["recall"]), scores=SCORES, calibrate=calibrate)
    return rows


def paired(results: dict[str, Any], lever: str, backbone: str, score: str, measure_name: str) -> list[float] | None:
    """Per seed, ``lever`` minus ``default`` on one cell; None where either lacks it."""
    levers = results["levers"]
    try:
        a, b = levers[lever][backbone][score][measure_name], levers["default"][backbone][score][measure_name]
    except KeyError:
        return None
    return [x - y for x, y in zip(a, b)] if len(a) == len(b) else None


def summary(results: dict[str, Any], backbone: str = "student") -> list[str]:
    """The markdown of ``results``: per lever and score, each measure over the seeds; then the paired
    differences from ``default``."""
    levers = results["levers"]
    lines = [f"Rejection levers on the {results['target']} target; seeds {results['seeds']}; {backbone} backbone; "
             f"held out {results['params']['unknown_fraction']} of the products, thresholds at recall "
             f"{results['params']['recall']}", "",
             "| lever | score | " + " | ".join(MEASURES) + " |", "|" + "---|" * (2 + len(MEASURES))]
    for lever, backbones in levers.items():
        for score, cells in backbones.get(backbone, {}).items():
            lines.append(f"| {lever} | {score} | " + " | ".join(interval_text(cells[m]) if m in cells else "-"
                                                              for m in MEASURES) + " |")
    lines += ["", f"Paired with `default` (lever minus default, per seed; {backbone} backbone)", "",
              "| lever | score | " + " | ".join(PAIRED_MEASURES) + " |", "|" + "---|" * (2 + len(PAIRED_MEASURES))]
    for lever in levers:
        if lever == "default":
            continue
        for score in PAIRED:
            cells = [paired(results, lever, backbone, score, m) for m in PAIRED_MEASURES]
            if any(c is not None for c in cells):
                texts = [interval_text(c) if c else "-" for c in cells]
                lines.append(f"| {lever} | {score} | " + " | ".join(texts) + " |")
    return [*lines, ""]


def write(results: dict[str, Any], out: Path | None) -> None:
    lines = summary(results)
    print("\n".join(lines))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grocery", type=Path, default=GROCERY, help="the Grocery Store Dataset's folder")
    parser.add_argument("--levers", nargs="+", choices=LEVERS, default=list(DEFAULT_LEVERS),
                        help="the levers to measure (default: all but size_128; `default` is always measured)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: evaluate.seeds")
    parser.add_argument("--work", type=Path, default=None,
                        help="trained backbones, reused across runs (default: a new temporary folder)")
    parser.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--render", action="store_true", help="only rewrite OUT.md from OUT.json (needs --out)")
    add_smoke(parser, "levers default, flip, layers and enrolled on tiny synthetic data, one seed, one epoch")
    args = parser.parse_args(argv)
    if args.render:
        if args.out is None:
            parser.error("--render needs --out (the results to render: OUT.json)")
        saved = args.out.with_suffix(".json")
        if not saved.is_file():
            sys.exit(f"--render: no results at {saved}")
        args.out.with_suffix(".md").write_text("\n".join(summary(json.loads(saved.read_text()))) + "\n")
        return
    params = read_params(PARAMS)
    args.work = args.work or Path(tempfile.mkdtemp(prefix="retailnb-levers-" + ("smoke-" if args.smoke else "")))
    args.work.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        params, args.seeds = smoke_params(params), [0]
        args.levers = [lever for lever in SMOKE_LEVERS if lever in args.levers or lever == "default"]
        target = Target(*synthetic_halves(params, args.work), synthetic=True)
    elif not has_grocery(args.grocery):
        sys.exit(f"no Grocery Store Dataset at {args.grocery} (--grocery); --smoke runs on synthetic data")
    else:
        target = Target(*grocery_halves(args.grocery, args.work), synthetic=False)
    seeds = args.seeds or list(params["evaluate"]["seeds"])
    results: dict[str, Any] = {"target": "synthetic" if target.synthetic else "grocery_disjoint", "seeds": seeds,
                               "params": params["evaluate"]["rejection"], "levers": {}}
    cache: dict[int, Any] = {}
    for lever in ["default", *(lever for lever in LEVERS if lever in args.levers and lever != "default")]:
        per: dict[str, dict[str, dict[str, list[float]]]] = {}
        for seed in seeds:
            start = time.perf_counter()
            for backbone, scores in run_seed(lever, params, seed, target, args.work, cache).items():
                for score, row in scores.items():
                    cells = per.setdefault(backbone, {}).setdefault(score, {})
                    for m in MEASURES:
                        if m in row:
                            cells.setdefault(m, []).append(float(row[m]))
            print(f"{lever} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
        results["levers"][lever] = per
        write(results, args.out)


if __name__ == "__main__":
    main()

"""Features that transfer: retailnb's pretraining against the plain lightly loop, side by side.

Both sides pretrain on one half of the Grocery Store Dataset's class-disjoint split by coarse kind
(``data.kinds=even``: 35 products of 22 kinds, their train, val and test photos and iconic images) and are
scored by a logistic-regression probe on the frozen features of the *other* half (``odd``: 46 products
of 21 kinds that neither side ever saw; the probe trains on their train photos and iconic images and is
scored on their test photos). Per training seed, one after the other in one process:

1. ``retailnb``: the main pretraining variant of ``params.yaml`` (``noisy.teacher_variant``), with the
   ``-S key=value`` overrides given here, run exactly as the pipeline's pretrain stage runs it
   (:func:`common.run_retailnb`). Its training loop time (steps and data, not decoding) is the budget.
2. ``plain``: the 60-line lightly loop of issue 13 (:func:`reference_loop.reference_loop` with
   ``PLAIN_RECIPE``), trained for the same wall-clock budget (it stops at the first step past it):
   torchvision resnet18 without ``fc``, two views of
   ``RandomResizedCrop(64, scale=(0.2, 1))``, horizontal flip, ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` with
   p=0.8, ``RandomGrayscale(0.2)``, ImageNet normalisation; lightly's ``SimCLRProjectionHead(512, 512,
   128)`` and ``NTXentLoss(temperature=0.2)``; SGD lr 0.06, momentum 0.9, weight decay 5e-4, batch 128;
   images decoded once to 72 px.
3. ``--noisy``: retailnb's noisy student from (1)'s backbone on the same half, timed on its own, its last
   round probed on the target.

Random weights of each side's architecture (seeded) are probed too: a side's *gain* is its pretrained
probe accuracy minus that. The summary gives each row's mean and t-interval over the seeds, the paired
seed-by-seed differences retailnb minus plain (accuracy and gain) with theirs, the ratio of the gains, and
each side's training images per second.

Usage:
    python benchmarks/bench_transfer.py --root ../shared/data/GroceryStoreDataset [--seeds 0 1 2]
        [-S pretrain.engine.epochs=12 ...] [--noisy] [--work DIR] [--out FILE.json]
    python benchmarks/bench_transfer.py --smoke [--noisy]   # checks the script runs (tiny synthetic data)

The Grocery Store Dataset is not part of the repository; without it the script exits 2 naming the root.
``--smoke`` needs no dataset: one seed, one epoch of a tiny model on tiny synthetic data (its source roles
pretrain, its target catalogue is probed; ``common.SMOKE_PIPELINE``) and batches of 8 in the plain loop.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from common import (
    GROCERY,
    PARAMS,
    SOURCE_KINDS,
    TARGET_KINDS,
    Side,
    add_smoke,
    apply_smoke,
    grocery_halves,
    has_grocery,
    interval_text,
    paired_text,
    probe,
    run_retailnb,
    smoke_params,
    synthetic_halves,
    target_data,
)
from reference_loop import PLAIN_RECIPE, ReferenceViews, reference_loop, resnet18_simclr
from retailnb.config.noisy import NoisyStageSpec
from retailnb.config.overrides import apply_overrides
from retailnb.config.params_file import read_params
from retailnb.config.pretrain import PretrainStageSpec
from retailnb.config.stages import spec_from_params
from retailnb.data.images import decode_images
from retailnb.models.backbone import create_backbone
from retailnb.results.intervals import order, t_interval
from retailnb.train.contrastive import training_rows

PLAIN_SIZE, PLAIN_DECODE, PLAIN_BATCH = 64, 72, 128
"""The plain loop's crop side, the side its images are decoded to once, and its batch size."""

SMOKE = {"seeds": [0], "plain_batch": 8}
"""``--smoke``: one seed, and batches the tiny data fills (see :func:`common.smoke_params` for the rest)."""


def run_plain(params: dict[str, Any], seed: int, budget_s: float, source: Path, target: Path, *,
              workers: int = 0, batch: int = PLAIN_BATCH) -> Side:
    """Train the plain lightly loop until ``budget_s`` seconds of loop time are spent, on the images
    retailnb's main variant (of ``params``) pretrains on: every labelled and unlabelled image of the source."""
    spec = spec_from_params(PretrainStageSpec, params, params["noisy"]["teacher_variant"])
    paths, _, _ = training_rows(str(source), spec.variant)
    images = torch.from_numpy(decode_images(paths, PLAIN_DECODE)).permute(0, 3, 1, 2).contiguous()
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = resnet18_simclr()
    torch.manual_seed(seed)
    random_init = resnet18_simclr().backbone
    loader = DataLoader(ReferenceViews(images, PLAIN_SIZE), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=workers, generator=torch.Generator().manual_seed(seed))
    steps = reference_loop(model, loader, PLAIN_RECIPE)
    seconds, seen, n_steps = 0.0, 0, 0
    losses: list[float] = []
    while seconds < budget_s:
        step = next(steps)
        losses.append(float(step.out))
        seen, n_steps = seen + len(step.batch[0]), n_steps + 1
        seconds += step.seconds
    steps.close()
    data = target_data(target, PLAIN_SIZE)
    return Side(accuracy=probe(model.backbone, data), random_accuracy=probe(random_init, data), seconds=seconds,
                images=seen, epochs=n_steps / max(len(loader), 1), extra={"final_loss": float(np.mean(losses[-5:]))})


def run_noisy(params: dict[str, Any], seed: int, source: Path, target: Path, teacher: Side, teacher_path: Path,
              out_dir: Path) -> Side:
    """retailnb's noisy student on the source half from ``teacher``'s backbone; its last round probed on the
    target (random weights as the teacher's row, so the noisy row's gain is comparable with it)."""
    from retailnb.stages import noisy

    spec = spec_from_params(NoisyStageSpec, params).with_seed(seed)
    paths = noisy.NoisyPaths(manifest=str(source), teacher_backbone=str(teacher_path), out_dir=str(out_dir),
                             metrics=str(out_dir / "noisy.json"), rounds_plot=str(out_dir / "rounds.json"),
                             pseudolabels_plot=str(out_dir / "pseudolabels.json"))
    start = time.perf_counter()
    result = noisy.run(spec, paths)
    seconds = time.perf_counter() - start
    last = result.record.rounds[-1].round
    student = create_backbone(spec.backbone.architecture, weights=str(out_dir / f"round_{last}" / "backbone.pt"))
    data = target_data(target, spec.backbone.image_size)
    return Side(accuracy=probe(student, data), random_accuracy=teacher.random_accuracy, seconds=seconds,
                images=0, epochs=float(spec.noisy.engine.epochs * spec.noisy.rounds),
                extra={"rounds": [r.model_dump() for r in result.record.rounds]})


# --- summary --------------------------------------------------------------------------------------


def summary_lines(rows: dict[str, list[Side]]) -> list[str]:
    """The printed table: each side's accuracy, random-weights accuracy and gain over seeds, then the
    paired differences and the throughput."""
    lines = ["| side | probe accuracy | random weights | gain | loop s | img/s | epochs |", "|---|---|---|---|---|---|---|"]
    for name, sides in rows.items():
        speed = np.mean([s.images_per_second for s in sides])
        lines.append(
            f"| {name} | {interval_text([s.accuracy for s in sides])} | "
            f"{interval_text([s.random_accuracy for s in sides])} | {interval_text([s.gain for s in sides])} | "
            f"{np.mean([s.seconds for s in sides]):.0f} | {f'{speed:.0f}' if speed else '-'} | "
            f"{np.mean([s.epochs for s in sides]):.1f} |"
        )
    ours, plain = rows["retailnb"], rows["plain"]
    plain_gain = float(np.mean([s.gain for s in plain]))
    lines += [
        "",
        f"retailnb minus plain, accuracy, paired by seed: {paired_text([s.accuracy for s in ours], [s.accuracy for s in plain])}",
        f"retailnb minus plain, gain over random weights: {paired_text([s.gain for s in ours], [s.gain for s in plain])}",
        f"gain ratio retailnb / plain (mean gains): {np.mean([s.gain for s in ours]) / plain_gain:.2f}"
        if plain_gain > 0 else f"gain ratio: none, the plain loop gained nothing over its random weights ({plain_gain:+.3f})",
    ]
    if "noisy" in rows:
        noisy = rows["noisy"]
        lines.append(f"noisy last round minus its teacher (the retailnb row), paired by seed: "
                     f"{paired_text([s.accuracy for s in noisy], [s.accuracy for s in ours])}")
        verdict = order(t_interval([s.accuracy for s in noisy]), t_interval([s.accuracy for s in ours]))
        lines.append(f"noisy last round against its teacher, by their intervals: {verdict}")
    verdict = order(t_interval([s.accuracy for s in ours]), t_interval([s.accuracy for s in plain]))
    lines.append(f"retailnb against plain, by their intervals: {verdict}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=GROCERY, help="the Grocery Store Dataset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                        help="params.yaml override for retailnb's side, key.path=value (repeatable)")
    parser.add_argument("--noisy", action="store_true", help="also run and time retailnb's noisy student")
    parser.add_argument("--plain-workers", type=int, default=0, help="DataLoader workers of the plain loop")
    parser.add_argument("--plain-batch", type=int, default=PLAIN_BATCH, help="images per batch of the plain loop")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=None, help="write every seed's figures here as JSON")
    parser.add_argument("--summarize", type=Path, default=None, help="only print the summary of an --out file")
    add_smoke(parser, "one seed, one epoch of a tiny model on tiny synthetic data")
    args = apply_smoke(parser.parse_args(argv), SMOKE)
    if args.summarize:
        saved = json.loads(args.summarize.read_text())
        print(f"{args.summarize}: seeds {saved['seeds']}; overrides {saved['overrides'] or 'none'}")
        print("\n".join(summary_lines({k: [Side(**s) for s in v] for k, v in saved["rows"].items()})))
        return
    if not args.smoke and not has_grocery(args.root):
        parser.exit(2, f"bench_transfer: no Grocery Store Dataset at {args.root} (--root)\n")
    work = args.work or Path(tempfile.mkdtemp(prefix="retailnb-transfer-"))
    params = apply_overrides(read_params(PARAMS), args.overrides)
    if args.smoke:
        params = smoke_params(params)
        source, target = synthetic_halves(params, work)
    else:
        source, target = grocery_halves(args.root, work)
    rows: dict[str, list[Side]] = {"retailnb": [], "plain": []}
    if args.noisy:
        rows["noisy"] = []
    for seed in args.seeds:
        ours, teacher = run_retailnb(params, seed, source, target, work / f"seed{seed}" / "pretrain")
        rows["retailnb"].append(ours)
        print(f"seed {seed} retailnb: {ours.accuracy:.3f} (random {ours.random_accuracy:.3f}) "
              f"in {ours.seconds:.0f} s, {ours.images_per_second:.0f} img/s", flush=True)
        plain = run_plain(params, seed, ours.seconds, source, target, workers=args.plain_workers,
                          batch=args.plain_batch)
        rows["plain"].append(plain)
        print(f"seed {seed} plain: {plain.accuracy:.3f} (random {plain.random_accuracy:.3f}) "
              f"in {plain.seconds:.0f} s, {plain.images_per_second:.0f} img/s", flush=True)
        if args.noisy:
            student = run_noisy(params, seed, source, target, ours, teacher, work / f"seed{seed}" / "noisy")
            rows["noisy"].append(student)
            print(f"seed {seed} noisy student: {student.accuracy:.3f} (its teacher {ours.accuracy:.3f}) "
                  f"in {student.seconds:.0f} s", flush=True)
    heading = (f"Grocery transfer: pretrain on the {SOURCE_KINDS} coarse kinds, probe on the {TARGET_KINDS} ones; "
               f"seeds {args.seeds}; overrides {args.overrides or 'none'}")
    if args.smoke:
        heading = f"Smoke run (tiny synthetic data, not a measurement): seeds {args.seeds}"
    print(f"\n{heading}\n" + "\n".join(summary_lines(rows)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(heading + "\n\n" + "\n".join(summary_lines(rows)) + "\n")
        args.out.write_text(json.dumps({"seeds": args.seeds, "overrides": args.overrides,
                                        "rows": {k: [asdict(s) for s in v] for k, v in rows.items()}}, indent=2) + "\n")


if __name__ == "__main__":
    main()

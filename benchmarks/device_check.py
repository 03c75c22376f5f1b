"""The prepared GPU check: pretraining throughput against lightly's plain loop, every stage once, predict.

Run it on one GPU whenever one is available (``bash benchmarks/device_check.sh``; meant to fit in 6
minutes there, not yet timed on one), and on CPU with ``--smoke`` to check the script itself (tests/test_benchmarks.py does). It prints:

1. **Pretraining throughput** at ``--size`` px (224) with ``--backbone`` (resnet50), batch ``--batch``,
   in the precision the pipeline uses there (``compute.precision: auto``: bf16 mixed precision on CUDA):
   (a) lightly's plain SimCLR loop (:func:`reference_loop.reference_loop`: timm backbone,
   ``SimCLRProjectionHead``, ``NTXentLoss``, SGD, views image by image in ``--workers`` DataLoader workers,
   bf16 autocast) and (b) retailnb's engine with the
   main variant of ``params.yaml`` (SimCLR + SupCon, views drawn for the whole batch on the device with
   kornia, channels-last). Images are random uint8 tensors held in memory for both, so decoding is not
   timed. Images per second over the timed steps, after ``--warmup`` untimed ones (cuDNN autotuning).
2. **Every stage once** (unless ``--skip-pipeline``): the real ``dvc repro`` of a copy of the pipeline
   with one epoch per training stage, one training seed and one finetuning learning rate, on whatever
   device ``compute.accelerator: auto`` finds; seconds per stage.
3. **``retailnb predict --device``** with the bundle that run wrote, on its probe test images.

Usage:
    python benchmarks/device_check.py [--device cuda] [--backbone resnet50] [--size 224] [--batch 128]
        [--steps 20] [--warmup 3] [--workers N] [--skip-pipeline] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from common import (
    ONE_EPOCH,
    PARAMS,
    REPO,
    SMOKE_PIPELINE,
    add_smoke,
    apply_smoke,
    random_images,
    run_stamped,
    stage_seconds,
    synchronize,
    write_params,
)
from reference_loop import PLAIN_RECIPE, ReferenceViews, reference_loop, timm_simclr
from retailnb.config.overrides import set_key
from retailnb.config.params_file import read_params
from retailnb.config.pretrain import PretrainStageSpec
from retailnb.config.stages import spec_from_params
from retailnb.train.contrastive import ContrastiveObjective, build_model, training_dataset
from retailnb.train.engine import fit, make_fabric
from retailnb.train.sampler import EpochBatchSampler

SMOKE = {"backbone": "test_resnet", "size": 32, "batch": 8, "steps": 2, "warmup": 1, "workers": 0}
"""``--smoke``: a tiny model and batch, to check the script on CPU in seconds (the pipeline run, unless
``--skip-pipeline``, gets ``common.SMOKE_PIPELINE``: tiny data and model)."""


def plain_throughput(images: torch.Tensor, args: argparse.Namespace, device: torch.device) -> float:
    """(a) images/s of lightly's plain SimCLR loop over ``args.steps`` steps after ``args.warmup``."""
    torch.manual_seed(0)
    model = timm_simclr(args.backbone)
    loader = DataLoader(ReferenceViews(images, args.size), batch_size=args.batch, shuffle=True, drop_last=True,
                        num_workers=args.workers, pin_memory=device.type == "cuda",
                        persistent_workers=args.workers > 0)
    steps = reference_loop(model, loader, PLAIN_RECIPE, device=device, bf16=device.type == "cuda")
    start = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            synchronize(device)
            start = time.perf_counter()
        next(steps)
    synchronize(device)
    seconds = time.perf_counter() - start
    steps.close()
    return args.steps * args.batch / seconds


def retailnb_throughput(images: torch.Tensor, args: argparse.Namespace, device: torch.device) -> float:
    """(b) images/s of retailnb's engine (main variant, batch views, the pipeline's precision): the second
    epoch of two, each ``args.warmup + args.steps`` steps long, timed from the end of the first."""
    params = read_params(PARAMS)
    set_key(params, "backbone.architecture", args.backbone)
    set_key(params, "backbone.image_size", args.size)
    set_key(params, "pretrain.sampler.batch_size", args.batch)
    set_key(params, "compute.accelerator", device.type)
    set_key(params, "pretrain.engine.epochs", 2)
    spec = spec_from_params(PretrainStageSpec, params, params["noisy"]["teacher_variant"])
    labels = np.arange(len(images)) % max(2, len(images) // 16)  # SupCon needs classes with several images
    dataset, views = training_dataset(images, labels, spec.views, image_size=spec.backbone.image_size,
                                      n_views=spec.model.n_views)
    fabric = make_fabric(spec.compute)
    fabric.seed_everything(0, verbose=False)
    model = build_model(spec.backbone.architecture, spec.model, spec.variant)
    objective = ContrastiveObjective(spec.variant, spec.model, augment=views.to(fabric.device) if views else None)
    sampler = EpochBatchSampler(labels, batch_size=spec.sampler.batch_size, images_per_class=spec.sampler.images_per_class,
                                supcon_fraction=spec.sampler.supcon_fraction, seed=0)
    ends: list[float] = []

    def clock(epoch: int, _: nn.Module) -> bool:
        synchronize(fabric.device)
        ends.append(time.perf_counter())
        return False

    with tempfile.TemporaryDirectory() as tmp:
        fit(fabric, model, dataset, sampler, objective, spec.engine, spec.compute, state_path=Path(tmp) / "state.pt",
            on_epoch_end=clock, label="retailnb throughput")
    return len(sampler) * spec.sampler.batch_size / (ends[1] - ends[0])


def copy_pipeline(dest: Path, overrides: dict[str, Any]) -> Path:
    """A git + DVC repository with the project's pipeline and ``params.yaml`` plus ``overrides``."""
    dest.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, dest / name)
    for folder in ("notebooks", "retailnb"):
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = read_params(PARAMS)
    for key, value in overrides.items():
        set_key(params, key, value)
    write_params(dest / "params.yaml", params)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "check@retailnb"],
                ["git", "config", "user.name", "device check"], [sys.executable, "-m", "dvc", "init", "-q"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "device check"]):  # dvclive needs a commit
        subprocess.run(cmd, cwd=dest, check=True)
    return dest


def check_pipeline(device: torch.device, timeout: float, overrides: dict[str, Any]) -> Path:
    """Every stage once through ``dvc repro``; then ``retailnb predict --device`` with the bundle it wrote."""
    work = Path(tempfile.mkdtemp(prefix="retailnb-device-check-"))
    root = copy_pipeline(work / "repo", overrides)
    rc, log = run_stamped([sys.executable, "-m", "dvc", "repro"], root, timeout)
    print("\nstage seconds (one epoch each):")
    for name, seconds in stage_seconds(log):
        print(f"  {name:<40s} {seconds:6.1f}")
    if rc:
        raise SystemExit(f"dvc repro failed ({rc}); the log is above, the repository in {root}")
    shelf = sorted((root / "data" / "prepared").rglob("*.jpg"))[:256] or sorted((root / "data" / "prepared").rglob("*.png"))[:256]
    bundle = next((root / "models" / "bundle").glob("*.bundle"))
    start = time.perf_counter()
    predicted = subprocess.run([sys.executable, "-m", "retailnb", "predict", *map(str, shelf), "--bundle", str(bundle),
                                "--device", device.type, "--top-k", "1", "--format", "csv"],
                               cwd=root, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if predicted.returncode:
        raise SystemExit(f"retailnb predict --device {device.type} failed:\n{predicted.stderr}")
    rows = predicted.stdout.strip().splitlines()
    print(f"\nretailnb predict --device {device.type}: {len(rows) - 1} images in {seconds:.1f} s (with start-up); "
          f"stderr: {predicted.stderr.strip().splitlines()[-1] if predicted.stderr.strip() else '-'}")
    print("\n".join(rows[:4]))
    return root


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--backbone", default="resnet50", help="timm model name")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=128, help="images per batch (two views each)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per loop")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1),
                        help="DataLoader workers of the plain loop")
    parser.add_argument("--skip-pipeline", action="store_true", help="only the throughput comparison")
    parser.add_argument("--timeout", type=float, default=420, help="seconds allowed for the pipeline run")
    add_smoke(parser, "tiny model, size and batch (and tiny data in the pipeline run)")
    args = apply_smoke(parser.parse_args(argv), SMOKE)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    print(f"device {name}; torch {torch.__version__}; {args.backbone} at {args.size} px, batch {args.batch}, "
          f"{args.steps} timed steps after {args.warmup}")
    images = random_images(args.batch * (args.warmup + args.steps), args.size)
    plain = plain_throughput(images, args, device)
    ours = retailnb_throughput(images, args, device)
    precision = "bf16 mixed" if device.type == "cuda" else "fp32"
    print(f"\npretraining throughput ({precision}):")
    print(f"  {'(a) plain lightly loop, ' + str(args.workers) + ' workers':<40s} {plain:8.1f} img/s")
    print(f"  {'(b) retailnb engine, batch views':<40s} {ours:8.1f} img/s   ratio (b)/(a) {ours / plain:.2f}")
    if not args.skip_pipeline:
        check_pipeline(device, args.timeout, {**ONE_EPOCH, **(SMOKE_PIPELINE if args.smoke else {})})


if __name__ == "__main__":
    main()

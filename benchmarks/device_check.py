"""The prepared GPU check: pretraining throughput against lightly's plain loop, every stage once, predict.

Run it on one GPU whenever one is available (``bash benchmarks/device_check.sh``; meant to fit in 6
minutes there, not yet timed on one), and on CPU with ``--smoke`` to check the script itself (tests/test_benchmarks.py does). It prints:

1. **Pretraining throughput** at ``--size`` px (224) with ``--backbone`` (resnet50), batch ``--batch``,
   in the precision the pipeline uses there (``compute.precision: auto``: bf16 mixed precision on CUDA):
   (a) lightly's plain SimCLR loop (timm backbone, ``SimCLRProjectionHead``, ``NTXentLoss``, SGD, views
   image by image in ``--workers`` DataLoader workers, bf16 autocast) and (b) retailnb's engine with the
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
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import nn
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_transfer import PlainViews  # noqa: E402  (lightly's example recipe, image by image)

from retailnb.config.params_file import read_params  # noqa: E402
from retailnb.config.pretrain import PretrainStageSpec
from retailnb.config.stages import spec_from_params  # noqa: E402
from retailnb.train.contrastive import ContrastiveObjective, build_model  # noqa: E402
from retailnb.train.engine import fit, make_fabric  # noqa: E402
from retailnb.train.pretraining import training_dataset  # noqa: E402
from retailnb.train.sampler import EpochBatchSampler  # noqa: E402

ONE_EPOCH = {
    "pretrain.engine.epochs": 1,
    "pretrain.engine.warmup_epochs": 0.0,
    "noisy.rounds": 1,
    "noisy.engine.epochs": 1,
    "noisy.engine.warmup_epochs": 0.0,
    "evaluate.seeds": [0],
    "evaluate.finetune.lrs": [0.003],
    "evaluate.finetune.engine.max_epochs": 1,
    "evaluate.finetune.engine.warmup_epochs": 0.0,
}
"""params.yaml overrides of the pipeline check: every training stage runs one epoch, once."""

SMOKE = {"backbone": "test_resnet", "size": 32, "batch": 8, "steps": 2, "warmup": 1, "workers": 0}
"""``--smoke``: a tiny model and batch, to check the script on CPU in seconds."""

SMOKE_PIPELINE = {
    "backbone.architecture": "test_resnet",
    "backbone.image_size": 32,
    "pretrain.sampler.batch_size": 8,
    "pretrain.sampler.images_per_class": 2,
    "noisy.batch_size": 8,
    "evaluate.probe.shots": [1, "all"],
    "evaluate.finetune.batch_size": 8,
    "new_products.n_new": 2,
    "new_products.shots": [1],
    **{f"data.synthetic.{k}": v for k, v in dict(
        n_source_families=3, n_monitor_families=1, n_target_families=2, skus_per_family=3, catalogue_per_sku=1,
        labelled_shelf_per_sku=3, unlabelled_shelf_per_sku=3, monitor_train_per_sku=2, monitor_test_per_sku=2,
        probe_train_shelf_per_sku=2, probe_test_per_sku=3, image_size=32).items()},
}
"""``--smoke`` with the pipeline: tiny data and model on top of :data:`ONE_EPOCH`."""


def set_key(params: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``params["a"]["b"] = value`` for ``dotted = "a.b"``; the path must exist (a typo fails)."""
    *parents, last = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    if last not in node:
        raise KeyError(f"no key {dotted} in params.yaml")
    node[last] = value


def random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` uint8 images (N, 3, size, size): smooth random colour fields, cheap to make at any size."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8).float()
    return nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False).to(torch.uint8)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_throughput(images: torch.Tensor, args: argparse.Namespace, device: torch.device) -> float:
    """(a) images/s of lightly's plain SimCLR loop over ``args.steps`` steps after ``args.warmup``."""
    torch.manual_seed(0)
    backbone = timm.create_model(args.backbone, pretrained=False, num_classes=0)
    model = nn.Sequential(backbone, SimCLRProjectionHead(backbone.num_features, 512, 128)).to(device)
    criterion = NTXentLoss(temperature=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(PlainViews(images, args.size), batch_size=args.batch, shuffle=True, drop_last=True,
                        num_workers=args.workers, pin_memory=device.type == "cuda",
                        persistent_workers=args.workers > 0)
    use_bf16 = device.type == "cuda"
    batches = iter(loader)
    start = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            synchronize(device)
            start = time.perf_counter()
        x0, x1 = (x.to(device, non_blocking=True) for x in next(batches))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = criterion(model(x0), model(x1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    synchronize(device)
    return args.steps * args.batch / (time.perf_counter() - start)


def retailnb_throughput(images: torch.Tensor, args: argparse.Namespace, device: torch.device) -> float:
    """(b) images/s of retailnb's engine (main variant, batch views, the pipeline's precision): the second
    epoch of two, each ``args.warmup + args.steps`` steps long, timed from the end of the first."""
    params = read_params(REPO / "params.yaml")
    set_key(params, "backbone.architecture", args.backbone)
    set_key(params, "backbone.image_size", args.size)
    set_key(params, "pretrain.sampler.batch_size", args.batch)
    set_key(params, "compute.accelerator", device.type)
    set_key(params, "pretrain.engine.epochs", 2)
    spec = spec_from_params(PretrainStageSpec, params, params["noisy"]["teacher_variant"])
    labels = np.arange(len(images)) % max(2, len(images) // 16)  # SupCon needs classes with several images
    dataset, views = training_dataset(spec, images, labels)
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
    from ruamel.yaml import YAML

    dest.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, dest / name)
    for folder in ("notebooks", "retailnb"):
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = read_params(REPO / "params.yaml")
    for key, value in overrides.items():
        set_key(params, key, value)
    with (dest / "params.yaml").open("w") as fh:
        YAML().dump(params, fh)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "check@retailnb"],
                ["git", "config", "user.name", "device check"], [sys.executable, "-m", "dvc", "init", "-q"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "device check"]):  # dvclive needs a commit
        subprocess.run(cmd, cwd=dest, check=True)
    return dest


def stage_seconds(log: str) -> list[tuple[str, float]]:
    """(stage, seconds) from a ``dvc repro`` log whose lines were stamped by :func:`run_stamped`."""
    stamps = [(float(t), name) for t, name in re.findall(r"^\[(\d+\.\d+)\] Running stage '([^']+)'", log, re.M)]
    end = re.findall(r"^\[(\d+\.\d+)\]", log, re.M)
    times = [t for t, _ in stamps] + [float(end[-1]) if end else 0.0]
    return [(name, times[i + 1] - t) for i, (t, name) in enumerate(stamps)]


def run_stamped(cmd: Sequence[str], cwd: Path, timeout: float) -> tuple[int, str]:
    """Run ``cmd``; every output line is echoed and kept, prefixed with seconds since the start."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        stamped = f"[{time.perf_counter() - start:.1f}] {line.rstrip()}"
        print(stamped, flush=True)
        lines.append(stamped)
    lines.append(f"[{time.perf_counter() - start:.1f}] done")
    return proc.wait(timeout=timeout), "\n".join(lines)


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
    parser.add_argument("--smoke", action="store_true", help="tiny model, size and batch: check the script on CPU")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
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

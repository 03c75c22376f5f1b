"""Contrastive pretraining throughput: lightly's reference loop against our two view pipelines.

Three training loops on the same small synthetic dataset, timm backbone, image size, batch size
(``--batch`` images, each seen in 2 views) and number of steps, measured one after the other in one run:

(a) ``reference``: written the way lightly's own SimCLR example is. An ImageFolder-style dataset opens
    every JPEG from disk with PIL each time (torchvision's ``default_loader``), lightly's
    ``SimCLRTransform`` makes the two views image by image in a DataLoader with one worker per core,
    and the model is the timm backbone with lightly's ``SimCLRProjectionHead``, trained with
    ``NTXentLoss`` and SGD, one forward pass per view.
(b) ``per-sample``: our pipeline as it is. Images decoded once (``decode_images``), batches from
    ``EpochBatchSampler``, ``MultiViewDataset`` + ``retail_view_transform`` in one DataLoader worker,
    ``build_model`` + ``ContrastiveObjective`` (NT-Xent + SupCon) and ``build_optimizer`` (SGD).
(c) ``batched``: as (b), but the dataset yields uint8 images and labels only and
    :class:`~retailnb.transforms.batch_views.BatchViews` makes both views of the whole batch in the
    training step, in the main process (no workers).

Throughput is images per second over ``--steps`` steps after ``--warmup`` untimed ones. Where the time
goes, per step: ``wait`` is the main process waiting for the next batch, ``augment`` is the batched
augmentation in the step (c), ``model`` is forward, loss, backward and optimiser step, ``main cpu`` is
the CPU time the main process used (well below ``wait + augment + model`` when its threads were
starved of a core, by workers or by other processes; above it when its threads spin). For (a) and (b)
the workers' own time per batch is reported too (``worker decode`` / ``worker augment``: summed over
the batch's images, in one worker), which says how far the workers are from keeping up.

Caveats. The DataLoader workers of (a) and (b) prefetch during the warm-up steps, which flatters them
over a short run; the ratios (b)/(a) and (c)/(a) are therefore on the conservative side for (c). The
synthetic JPEGs are stored at ``--size`` pixels; real photos are larger, which makes (a)'s decoding
dearer and does not change (b) or (c). On a shared machine OpenMP threads spin-wait for busy cores:
compare ``--threads 1`` when the load average printed is high.

Usage:
    python benchmarks/bench_pretrain.py [--backbone mobilenetv3_small_100] [--size 64] [--batch 128]
        [--steps 15] [--warmup 2] [--threads N] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset
from torchvision.datasets.folder import default_loader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from retailnb.data.images import decode_images  # noqa: E402
from retailnb.data.synthetic import SyntheticConfig, generate  # noqa: E402
from retailnb.models.backbone import feature_dim  # noqa: E402
from retailnb.train.contrastive import ContrastiveConfig, ContrastiveObjective, build_model  # noqa: E402
from retailnb.train.datasets import MultiViewDataset, to_chw_uint8  # noqa: E402
from retailnb.train.engine import EngineConfig, build_optimizer  # noqa: E402
from retailnb.train.pretrain import PretrainSpec, ViewConfig, training_rows, view_transform  # noqa: E402
from retailnb.train.sampler import plan_epoch  # noqa: E402
from retailnb.transforms.batch_views import BatchViews  # noqa: E402

LR = 0.06
"""SGD learning rate of all three loops (lightly's SimCLR example uses 0.06)."""

StepFn = Callable[[Any], dict[str, float]]


@dataclass
class Timing:
    """Seconds spent per phase, summed over the timed steps of one loop."""

    name: str
    steps: int = 0
    images: int = 0
    wall: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, seconds: float) -> None:
        """Accumulate ``seconds`` into ``phase``."""
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    @property
    def images_per_second(self) -> float:
        """Training images (not views) per second of wall-clock time."""
        return self.images / self.wall if self.wall > 0 else 0.0

    def ms_per_step(self, phase: str) -> float:
        """Mean milliseconds per step spent in ``phase`` (NaN when never recorded)."""
        return 1000 * self.phases[phase] / self.steps if phase in self.phases else float("nan")


def small_dataset_config(size: int) -> SyntheticConfig:
    """About 800 source images (180 labelled in 15 SKUs, 600 unlabelled) at ``size`` px: 4 s to render."""
    return SyntheticConfig(
        n_source_families=6,
        n_monitor_families=0,
        n_target_families=1,
        skus_per_family=5,
        labelled_fraction=0.5,
        monitor_train_per_sku=0,
        monitor_test_per_sku=0,
        probe_train_shelf_per_sku=0,
        probe_test_per_sku=1,
        image_size=size,
        seed=0,
    )


def batch_views(spec: PretrainSpec) -> BatchViews:
    """The batched counterpart of ``retailnb.train.pretrain.view_transform``, from the same strengths."""
    v: ViewConfig = spec.views
    return BatchViews(
        spec.image_size,
        crop_scale=(v.crop_scale_min, 1.0),
        perspective=v.perspective,
        rotation=v.rotation,
        color_jitter=v.color_jitter,
        hue=v.hue,
        grayscale_p=v.grayscale_p,
        blur_p=v.blur_p,
        occlusion_p=v.occlusion_p,
        hflip_p=v.hflip_p,
    )


def planned_batches(labels: np.ndarray, spec: PretrainSpec, n: int) -> list[list[int]]:
    """The first ``n`` batches the pretraining sampler plans, over as many epochs as that takes."""
    batches: list[np.ndarray] = []
    epoch = 0
    while len(batches) < n:
        batches += plan_epoch(
            labels,
            batch_size=spec.batch_size,
            images_per_class=spec.images_per_class,
            supcon_fraction=spec.supcon_fraction,
            seed=spec.engine.seed,
            epoch=epoch,
        )
        epoch += 1
    return [b.tolist() for b in batches[:n]]


class JpegViewsDataset(Dataset[tuple[list[torch.Tensor], int, float, float]]):
    """lightly-example style: open the JPEG with PIL on every access, then make the views.

    Items are ``(views, 0, decode_seconds, augment_seconds)``; the two times only feed the report.
    """

    def __init__(self, paths: Sequence[Path], transform: Callable[[Any], Any]) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int, float, float]:
        start = time.perf_counter()
        image = default_loader(str(self.paths[index]))
        decoded = time.perf_counter()
        views = self.transform(image)
        return views, 0, decoded - start, time.perf_counter() - decoded


class TimedDataset(Dataset[tuple[Any, ...]]):
    """Wraps a dataset whose items are tuples and appends the seconds each item took to make."""

    def __init__(self, inner: Dataset[tuple[Any, ...]]) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        start = time.perf_counter()
        item = self.inner[index]
        return (*item, time.perf_counter() - start)


class SimCLR(nn.Module):
    """lightly's example model: backbone, flatten, SimCLR projection head."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(feature_dim(backbone), 512, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))


def measure(name: str, loader: DataLoader[Any], step: StepFn, warmup: int, steps: int, batch: int) -> Timing:
    """Run ``warmup + steps`` training steps from ``loader``; time the last ``steps``.

    ``step(batch)`` trains on one batch and returns extra phase seconds (e.g. ``augment``) to record.
    """
    timing = Timing(name)
    batches: Iterator[Any] = iter(loader)
    for i in range(warmup + steps):
        start, cpu = time.perf_counter(), time.process_time()
        data = next(batches)
        got = time.perf_counter()
        extra = step(data)
        done = time.perf_counter()
        cpu = time.process_time() - cpu
        if i < warmup:
            continue
        timing.steps += 1
        timing.images += batch
        timing.wall += done - start
        timing.add("wait", got - start)
        timing.add("step", done - got)
        timing.add("main cpu", cpu)
        for phase, seconds in extra.items():
            timing.add(phase, seconds)
    del batches  # shuts the workers down before the next loop starts
    timing.add("model", timing.phases["step"] - timing.phases.get("augment", 0.0))
    return timing


def sgd_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Backward and optimiser step, in lightly's example order."""
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def run_reference(paths: Sequence[Path], args: argparse.Namespace, n_workers: int) -> Timing:
    """(a) lightly's SimCLR example loop, reading JPEGs from disk every step."""
    torch.manual_seed(args.seed)
    transform = SimCLRTransform(input_size=args.size, min_scale=0.3, hf_prob=0.0)  # crop scale as ours, no flip
    dataset = JpegViewsDataset(paths, transform)
    n_batches = args.warmup + args.steps
    sampler = RandomSampler(dataset, num_samples=n_batches * args.batch)  # several passes when needed
    loader = DataLoader(dataset, batch_size=args.batch, sampler=sampler, drop_last=True, num_workers=n_workers)
    model = SimCLR(timm.create_model(args.backbone, pretrained=False, num_classes=0))
    criterion = NTXentLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    model.train()

    def step(batch: Any) -> dict[str, float]:
        (x0, x1), _, decode_s, augment_s = batch
        z0, z1 = model(x0), model(x1)
        sgd_step(optimizer, criterion(z0, z1))
        return {"worker decode": float(decode_s.sum()), "worker augment": float(augment_s.sum())}

    return measure(f"(a) reference, lightly, {n_workers} workers", loader, step, args.warmup, args.steps, args.batch)


def our_model(args: argparse.Namespace) -> tuple[nn.Module, ContrastiveObjective, torch.optim.Optimizer]:
    """Our model, objective (NT-Xent + SupCon) and SGD optimiser, seeded alike for (b) and (c)."""
    torch.manual_seed(args.seed)
    config = ContrastiveConfig(backbone=args.backbone)
    model = build_model(config)
    model.train()
    optimizer = build_optimizer(model, EngineConfig(optimizer="sgd", lr=LR))
    return model, ContrastiveObjective(config), optimizer


def run_per_sample(
    images: torch.Tensor, labels: np.ndarray, batches: list[list[int]], spec: PretrainSpec, args: argparse.Namespace
) -> Timing:
    """(b) our current pipeline: per-image views in one DataLoader worker."""
    model, objective, optimizer = our_model(args)
    dataset = TimedDataset(MultiViewDataset(images, labels, view_transform(spec), n_views=2))
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=1)

    def step(batch: Any) -> dict[str, float]:
        views, y, augment_s = batch
        sgd_step(optimizer, objective(model, (views, y))["loss"])
        return {"worker augment": float(augment_s.sum())}

    return measure("(b) ours, per-sample, 1 worker", loader, step, args.warmup, args.steps, args.batch)


def run_batched(
    images: torch.Tensor, labels: np.ndarray, batches: list[list[int]], spec: PretrainSpec, args: argparse.Namespace
) -> Timing:
    """(c) our pipeline with BatchViews: uint8 batches in, both views made in the training step."""
    model, objective, optimizer = our_model(args)
    views = batch_views(spec)
    dataset = TensorDataset(images, torch.as_tensor(labels))
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=0)

    def step(batch: Any) -> dict[str, float]:
        x, y = batch
        start = time.perf_counter()
        pair = [views(x), views(x)]
        augmented = time.perf_counter()
        sgd_step(optimizer, objective(model, (pair, y))["loss"])
        return {"augment": augmented - start}

    return measure("(c) ours, BatchViews in step", loader, step, args.warmup, args.steps, args.batch)


def report(rows: list[Timing], args: argparse.Namespace) -> None:
    """Print the table of throughput and time per phase, and the ratios to the reference."""
    phases = ["wait", "augment", "model", "main cpu", "worker decode", "worker augment"]
    print(f"\n{args.backbone}, {args.size}px, batch {args.batch} x 2 views, {args.steps} timed steps")
    header = f"{'pipeline':36s} {'img/s':>7s} {'ms/step':>8s}" + "".join(f" {p:>14s}" for p in phases)
    print(header + "\n" + "-" * len(header))
    for t in rows:
        cells = "".join(f" {t.ms_per_step(p):14.0f}" if p in t.phases else f" {'-':>14s}" for p in phases)
        print(f"{t.name:36s} {t.images_per_second:7.1f} {1000 * t.wall / t.steps:8.0f}{cells}")
    print("(ms per step; main cpu: CPU time of the main process, all its threads; worker columns: one")
    print(" worker's busy wall time for one batch)")
    reference = rows[0].images_per_second
    for t in rows[1:]:
        print(f"ratio {t.name.split(',')[0]}/(a): {t.images_per_second / reference:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenetv3_small_100", help="timm model name")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (stored and trained)")
    parser.add_argument("--batch", type=int, default=128, help="images per batch (each in 2 views)")
    parser.add_argument("--steps", type=int, default=15, help="timed training steps per loop")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the main process")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers of (a)")
    parser.add_argument("--data", type=Path, default=None, help="reuse (or create) the synthetic data here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"cores {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp) / "synthetic"
        manifest = root / "manifest.csv"
        if not manifest.is_file():
            start = time.perf_counter()
            generate(small_dataset_config(args.size), root)
            print(f"generated the synthetic data in {time.perf_counter() - start:.1f} s")
        spec = PretrainSpec(manifest=str(manifest), out_dir=tmp, image_size=args.size, batch_size=args.batch)
        paths, labels, classes = training_rows(spec)  # roles labelled + unlabelled, as pretraining reads
        print(f"{len(paths)} images ({int((labels >= 0).sum())} labelled in {len(classes)} classes)")
        start = time.perf_counter()
        images = to_chw_uint8(decode_images(paths, args.size))
        print(f"(b), (c): decoded once in {time.perf_counter() - start:.1f} s, not counted below")
        batches = planned_batches(labels, spec, args.warmup + args.steps)

        rows = [run_reference(paths, args, args.workers)]
        rows.append(run_per_sample(images, labels, batches, spec, args))
        rows.append(run_batched(images, labels, batches, spec, args))
    report(rows, args)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

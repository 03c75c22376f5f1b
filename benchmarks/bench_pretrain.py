"""Contrastive pretraining throughput: lightly's reference loop against our view pipelines.

Three training loops (and an extra fourth) on the same small synthetic dataset, timm backbone, image
size, batch size (``--batch`` images, each seen in 2 views) and number of steps, measured one after the
other in one run:

(a) ``reference``: lightly's SimCLR example loop, :func:`reference_loop.reference_loop` (the benchmarks'
    one copy of it). An ImageFolder-style dataset opens every JPEG from disk with PIL each time
    (torchvision's ``default_loader``), lightly's ``SimCLRTransform`` makes the two views image by image
    in a DataLoader with one worker per core, and the model is the timm backbone with lightly's
    ``SimCLRProjectionHead``, trained with ``NTXentLoss`` and SGD, one forward pass per view.
(b) ``per-sample``: our pipeline with ``views.on="worker"``. Images decoded once (``decode_images``),
    the batches ``EpochBatchSampler`` plans, ``training_dataset`` (``MultiViewDataset`` +
    ``retail_view_transform``) in one DataLoader worker, ``build_model`` + ``ContrastiveObjective``
    (NT-Xent + SupCon) and ``build_optimizer`` (SGD), with the view strengths of ``params.yaml``
    (``pretrain.views``; the ``simclr_supcon`` variant's spec, at ``--backbone``, ``--size``, ``--batch``).
(c) ``batched``: as (b) with ``views.on="batch"``: the dataset yields uint8 images and labels only and
    ``ContrastiveObjective`` draws both views of the whole batch with
    :class:`~retailnb.transforms.batch_views.BatchViews` in the training step (main process, no workers).
(d) ``batched in worker`` (extra; ``--skip-extra`` leaves it out): as (c), but BatchViews runs on the
    whole batch in one DataLoader worker (as its ``collate_fn``), so it overlaps the model step.

Throughput is images per second over ``--steps`` steps after ``--warmup`` untimed ones, every loop's steps
timed alike (:func:`common.timed_steps`). Where the time
goes, per step: ``wait`` is the main process waiting for the next batch, ``augment`` is the batched
augmentation in the step (c), ``model`` is forward, loss, backward and optimiser step, ``main cpu`` is
the CPU time the main process used (well below ``wait + augment + model`` when its threads were
starved of a core, by workers or by other processes; above it when its threads spin). For (a) and (b)
the workers' own time per batch is reported too (``wk decode`` / ``wk augment`` wall time and ``wk cpu``,
summed over the batch's images), which says how far the workers are from keeping up. ``cpu ms/img``
adds up the CPU time of the main process and the workers per training image: the cost of a pipeline,
which contention from other processes changes much less than it changes wall-clock throughput.

Caveats. The DataLoader workers of (a) and (b) prefetch during the warm-up steps, which flatters them
over a short run; the ratios (b)/(a) and (c)/(a) are therefore on the conservative side for (c). The
synthetic JPEGs are stored at ``--size`` pixels; real photos are larger, which makes (a)'s decoding
dearer and does not change (b) or (c). On a shared machine OpenMP threads spin-wait for busy cores:
compare ``--threads 1`` when the load average printed is high, and read ``cpu ms/img`` besides img/s.

Usage:
    python benchmarks/bench_pretrain.py [--backbone mobilenetv3_small_100] [--size 64] [--batch 128]
        [--steps 15] [--warmup 2] [--threads N] [--workers N] [--data DIR] [--skip-extra] [--params FILE]
    python benchmarks/bench_pretrain.py --smoke    # test_resnet, 32 px, batch 8, 2 steps: checks the script runs
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightly.transforms import SimCLRTransform
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.datasets.folder import default_loader

from common import PARAMS, Step, add_smoke, apply_smoke, synthetic_manifest, timed_steps
from reference_loop import EXAMPLE_RECIPE, reference_loop, timm_simclr
from retailnb.config.data import SyntheticSpec
from retailnb.config.params_file import read_params
from retailnb.config.pretrain import PretrainStageSpec
from retailnb.config.stages import spec_from_params
from retailnb.data.images import decode_images
from retailnb.train.contrastive import (
    ContrastiveObjective,
    build_model,
    training_dataset,
    training_rows,
)
from retailnb.train.datasets import to_chw_uint8
from retailnb.train.engine import build_optimizer, use_channels_last
from retailnb.train.sampler import plan_epoch
from retailnb.transforms.batch_views import BatchViews

LR = EXAMPLE_RECIPE.lr
"""SGD learning rate of every loop (lightly's SimCLR example uses 0.06)."""

SMOKE = {"backbone": "test_resnet", "size": 32, "batch": 8, "steps": 2, "warmup": 1, "workers": 0}
"""``--smoke``: a tiny model and batch, to check the script on CPU in seconds."""

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


def small_dataset_config(params: dict[str, Any], size: int) -> SyntheticSpec:
    """About 800 source images (180 labelled in 15 SKUs, 600 unlabelled) at ``size`` px: 4 s to render.

    The sizes not set here (images per SKU, difficulty) are ``data.synthetic`` of ``params``.
    """
    sizes = dict(
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
    return SyntheticSpec.model_validate({**params["data"]["synthetic"], **sizes})


def planned_batches(labels: np.ndarray, spec: PretrainStageSpec, n: int) -> list[list[int]]:
    """The first ``n`` batches the pretraining sampler plans, over as many epochs as that takes."""
    batches: list[np.ndarray] = []
    epoch = 0
    while len(batches) < n:
        batches += plan_epoch(
            labels,
            batch_size=spec.sampler.batch_size,
            images_per_class=spec.sampler.images_per_class,
            supcon_fraction=spec.sampler.supcon_fraction,
            seed=spec.engine.seed,
            epoch=epoch,
        )
        epoch += 1
    return [b.tolist() for b in batches[:n]]


class JpegViewsDataset(Dataset[tuple[Any, ...]]):
    """lightly-example style: open the JPEG with PIL on every access, then make the views.

    Items are ``(view_0, view_1, decode_seconds, augment_seconds, cpu_seconds)``; the times only feed the
    report (a worker is single-threaded, so its process time is this item's CPU time).
    """

    def __init__(self, paths: Sequence[Path], transform: Callable[[Any], Any]) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        start, cpu = time.perf_counter(), time.process_time()
        image = default_loader(str(self.paths[index]))
        decoded = time.perf_counter()
        views = self.transform(image)
        return *views, decoded - start, time.perf_counter() - decoded, time.process_time() - cpu


class TimedDataset(Dataset[tuple[Any, ...]]):
    """Wraps a dataset whose items are tuples; appends the wall and CPU seconds each item took."""

    def __init__(self, inner: Dataset[tuple[Any, ...]]) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        start, cpu = time.perf_counter(), time.process_time()
        item = self.inner[index]
        return (*item, time.perf_counter() - start, time.process_time() - cpu)


def measure(name: str, steps: Generator[Step, None, None], phases: Callable[[Step], dict[str, float]],
            warmup: int, n_steps: int, batch: int) -> Timing:
    """Take ``warmup + n_steps`` training steps from ``steps``; time the last ``n_steps``.

    ``phases(step)`` gives extra phase seconds (e.g. ``augment``) to record for a step.
    """
    timing = Timing(name)
    with closing(steps):  # shuts the workers down before the next loop starts
        for step in itertools.islice(steps, warmup + n_steps):
            if step.index < warmup:
                continue
            timing.steps += 1
            timing.images += batch
            timing.wall += step.seconds
            timing.add("wait", step.wait)
            timing.add("step", step.compute)
            timing.add("main cpu", step.cpu)
            for phase, seconds in phases(step).items():
                timing.add(phase, seconds)
    timing.add("model", timing.phases["step"] - timing.phases.get("augment", 0.0))
    return timing


def measure_ours(name: str, loader: DataLoader[Any], step: StepFn, args: argparse.Namespace) -> Timing:
    """:func:`measure` of one of our pipelines: ``step(batch)`` trains on a batch and returns its extra phases."""
    return measure(name, timed_steps(loader, step), lambda s: s.out, args.warmup, args.steps, args.batch)


def sgd_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Backward and optimiser step, in lightly's example order (as the reference loop)."""
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def run_reference(paths: Sequence[Path], args: argparse.Namespace, n_workers: int) -> Timing:
    """(a) lightly's SimCLR example loop (the reference loop), reading JPEGs from disk every step."""
    torch.manual_seed(args.seed)
    transform = SimCLRTransform(input_size=args.size, min_scale=0.3, hf_prob=0.0)  # crop scale as ours, no flip
    dataset = JpegViewsDataset(paths, transform)
    n_batches = args.warmup + args.steps
    sampler = RandomSampler(dataset, num_samples=n_batches * args.batch)  # several passes when needed
    loader = DataLoader(dataset, batch_size=args.batch, sampler=sampler, drop_last=True, num_workers=n_workers)
    model = timm_simclr(args.backbone)

    def phases(step: Step) -> dict[str, float]:
        decode_s, augment_s, cpu_s = step.batch[2:]
        return {
            "worker decode": float(decode_s.sum()),
            "worker augment": float(augment_s.sum()),
            "worker cpu": float(cpu_s.sum()),
        }

    steps = reference_loop(model, loader, EXAMPLE_RECIPE)
    return measure(f"(a) reference, lightly, {n_workers} workers", steps, phases, args.warmup, args.steps, args.batch)


class TimedAugment(nn.Module):
    """Wraps the augmentation module of (c) and adds up the seconds spent in it."""

    def __init__(self, augment: nn.Module) -> None:
        super().__init__()
        self.augment = augment
        self.seconds = 0.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.augment(images)
        self.seconds += time.perf_counter() - start
        return out


def views_on(spec: PretrainStageSpec, on: str) -> PretrainStageSpec:
    """``spec`` with its views drawn ``on`` ``"worker"`` or ``"batch"``."""
    return spec.model_copy(update={"views": spec.views.model_copy(update={"on": on})})


def our_model(
    spec: PretrainStageSpec, args: argparse.Namespace, augment: nn.Module | None = None
) -> tuple[nn.Module, ContrastiveObjective, torch.optim.Optimizer]:
    """Our model, objective (NT-Xent + SupCon) and SGD optimiser, seeded alike for (b), (c) and (d)."""
    torch.manual_seed(args.seed)
    model = build_model(spec.backbone.architecture, spec.model, spec.variant)
    if not args.no_channels_last:
        use_channels_last(model)  # as the engine does by default (compute.channels_last)
    model.train()
    optimizer = build_optimizer(model, spec.engine.model_copy(update={"optimizer": "sgd", "lr": LR}))
    return model, ContrastiveObjective(spec.variant, spec.model, augment=augment), optimizer


def run_per_sample(
    images: torch.Tensor, labels: np.ndarray, batches: list[list[int]], spec: PretrainStageSpec, args: argparse.Namespace
) -> Timing:
    """(b) our pipeline with ``views.on="worker"``: per-image views in one DataLoader worker."""
    dataset, _ = training_dataset(images, labels, views_on(spec, "worker").views,
                                  image_size=spec.backbone.image_size, n_views=spec.model.n_views)
    model, objective, optimizer = our_model(spec, args)
    loader = DataLoader(TimedDataset(dataset), batch_sampler=batches, num_workers=1)

    def step(batch: Any) -> dict[str, float]:
        views, y, augment_s, cpu_s = batch
        sgd_step(optimizer, objective(model, (views, y))["loss"])
        return {"worker augment": float(augment_s.sum()), "worker cpu": float(cpu_s.sum())}

    return measure_ours("(b) ours, per-sample, 1 worker", loader, step, args)


def run_batched(
    images: torch.Tensor, labels: np.ndarray, batches: list[list[int]], spec: PretrainStageSpec, args: argparse.Namespace
) -> Timing:
    """(c) our pipeline with ``views.on="batch"``: uint8 batches, BatchViews in ContrastiveObjective."""
    dataset, views = training_dataset(images, labels, views_on(spec, "batch").views,
                                      image_size=spec.backbone.image_size, n_views=spec.model.n_views)
    if views is None:
        raise RuntimeError("training_dataset returned no BatchViews for views.on='batch'")
    augment = TimedAugment(views)
    model, objective, optimizer = our_model(spec, args, augment)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=0)

    def step(batch: Any) -> dict[str, float]:
        before = augment.seconds
        sgd_step(optimizer, objective(model, batch)["loss"])
        return {"augment": augment.seconds - before}

    return measure_ours("(c) ours, BatchViews in step", loader, step, args)


class TimedViewsCollate:
    """``collate_fn`` of (d): stacks the uint8 images, then makes both views of the batch in the worker.

    Returns ``(views, labels, wall_seconds, cpu_seconds)``; the times only feed the report.
    """

    def __init__(self, views: BatchViews, n_views: int = 2) -> None:
        self.views = views
        self.n_views = n_views

    def __call__(
        self, items: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[list[torch.Tensor], torch.Tensor, float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        images = torch.stack([image for image, _ in items])
        labels = torch.stack([label for _, label in items])
        pair = [self.views(images) for _ in range(self.n_views)]
        return pair, labels, time.perf_counter() - start, time.process_time() - cpu


def run_batched_in_worker(
    images: torch.Tensor, labels: np.ndarray, batches: list[list[int]], spec: PretrainStageSpec, args: argparse.Namespace
) -> Timing:
    """(d) extra: BatchViews on the whole batch in one DataLoader worker, overlapping the model step."""
    dataset, views = training_dataset(images, labels, views_on(spec, "batch").views,
                                      image_size=spec.backbone.image_size, n_views=spec.model.n_views)
    if views is None:
        raise RuntimeError("training_dataset returned no BatchViews for views.on='batch'")
    model, objective, optimizer = our_model(spec, args)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=1, collate_fn=TimedViewsCollate(views))

    def step(batch: Any) -> dict[str, float]:
        pair, y, augment_s, cpu_s = batch
        sgd_step(optimizer, objective(model, (pair, y))["loss"])
        return {"worker augment": augment_s, "worker cpu": cpu_s}

    return measure_ours("(d) ours, BatchViews in 1 worker", loader, step, args)


PHASES = {
    "wait": "wait",
    "augment": "augment",
    "model": "model",
    "main cpu": "main cpu",
    "worker decode": "wk decode",
    "worker augment": "wk augment",
    "worker cpu": "wk cpu",
}
"""Phases reported, with their (narrower) column titles."""


def cpu_ms_per_image(t: Timing, batch: int) -> float:
    """CPU milliseconds per training image, main process and workers together."""
    return (t.ms_per_step("main cpu") + (t.ms_per_step("worker cpu") if "worker cpu" in t.phases else 0.0)) / batch


def report(rows: list[Timing], args: argparse.Namespace) -> None:
    """Print the table of throughput and time per phase, and the ratios to the reference."""
    print(f"\n{args.backbone}, {args.size}px, batch {args.batch} x 2 views, {args.steps} timed steps")
    header = f"{'pipeline':36s} {'img/s':>6s} {'ms/step':>7s}" + "".join(f" {c:>10s}" for c in PHASES.values())
    header += f" {'cpu ms/img':>10s}"
    print(header + "\n" + "-" * len(header))
    for t in rows:
        cells = "".join(f" {t.ms_per_step(p):10.0f}" if p in t.phases else f" {'-':>10s}" for p in PHASES)
        line = f"{t.name:36s} {t.images_per_second:6.1f} {1000 * t.wall / t.steps:7.0f}{cells}"
        print(f"{line} {cpu_ms_per_image(t, args.batch):10.1f}")
    print("ms per step. main cpu: CPU time of the main process (all its threads). wk: the DataLoader")
    print("workers' time for one batch, summed over its images (wall: decode, augment; and CPU).")
    print("cpu ms/img: CPU time per training image, main process and workers together.")
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
    parser.add_argument("--skip-extra", action="store_true", help="leave out (d), BatchViews in a worker")
    parser.add_argument("--no-channels-last", action="store_true", help="train ours with contiguous (NCHW) weights")
    parser.add_argument("--params", type=Path, default=PARAMS,
                        help="params file of everything not set here (the simclr_supcon variant)")
    add_smoke(parser, "test_resnet, 32 px, batch 8, 2 steps")
    args = apply_smoke(parser.parse_args(), SMOKE)
    params = read_params(args.params)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"cores {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp) / "synthetic"
        manifest = root / "manifest.csv"
        if not manifest.is_file():
            start = time.perf_counter()
            synthetic_manifest(small_dataset_config(params, args.size), root)
            print(f"generated the synthetic data in {time.perf_counter() - start:.1f} s")
        params["backbone"].update(architecture=args.backbone, image_size=args.size)
        params["pretrain"]["sampler"]["batch_size"] = args.batch
        spec = spec_from_params(PretrainStageSpec, params, "simclr_supcon", file=args.params)
        paths, labels, classes = training_rows(str(manifest), spec.variant)  # roles labelled + unlabelled, as pretraining reads
        print(f"{len(paths)} images ({int((labels >= 0).sum())} labelled in {len(classes)} classes)")
        start = time.perf_counter()
        images = to_chw_uint8(decode_images(paths, args.size))
        print(f"(b), (c), (d): decoded once in {time.perf_counter() - start:.1f} s, not counted below")
        batches = planned_batches(labels, spec, args.warmup + args.steps)

        rows = [run_reference(paths, args, args.workers)]
        rows.append(run_per_sample(images, labels, batches, spec, args))
        rows.append(run_batched(images, labels, batches, spec, args))
        if not args.skip_extra:
            rows.append(run_batched_in_worker(images, labels, batches, spec, args))
    report(rows, args)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""What the benchmarks share: paths and params, ``--smoke``, timed steps, figures, and their data.

Every script of ``benchmarks/`` imports this module; the three that compare retailnb with lightly's plain
SimCLR loop also import :mod:`reference_loop`, the one copy of that loop (see its docstring). The scripts are
run as ``python benchmarks/<name>.py``: Python puts ``benchmarks/`` first on ``sys.path`` then, so ``import
common`` needs no path edit, and ``retailnb`` is the installed package (``pip install -e .``). Each script
has a ``--smoke`` mode (tiny model, data and steps: it checks the script runs, in a minute or so on CPU;
its figures mean nothing).

Sections:

* **paths and params**: :data:`REPO`, :data:`PARAMS`, :data:`GROCERY`; :func:`write_params`. The scripts that
  apply ``-S key.path=value`` overrides import ``set_key`` and ``apply_overrides`` from
  :mod:`retailnb.config.overrides`. Nothing here imports the pipeline's extra packages at module level (only
  inside the functions that need them): ``bench_cli.py`` runs where only ``pip install .`` is installed.
* **smoke mode**: :func:`add_smoke`, :func:`apply_smoke`, and the tiny parameters every smoke run shares
  (:data:`SMOKE_SYNTHETIC`, :data:`SMOKE_PIPELINE`, with :data:`ONE_EPOCH`; :func:`smoke_params`).
* **timing**: :func:`timed_steps` (the step loop every throughput figure is timed with, the reference loop
  included: wait for the batch, the step, the main process's CPU time), :func:`synchronize`,
  :func:`best_seconds`, :func:`cpu_seconds`; :func:`run_stamped` and :func:`stage_seconds` (a ``dvc repro`` log's
  seconds per stage).
* **data**: :func:`synthetic_manifest`, :func:`random_images`.
* **transfer target** (bench_transfer.py, recipe_study.py): the source and target manifests
  (:func:`grocery_halves`, :func:`synthetic_halves`), the frozen-feature probe (:func:`probe`),
  retailnb's pretraining run as the pipeline's stage runs it (:func:`run_retailnb`, :class:`Side`) and the
  figures' text (:func:`interval_text`, :func:`paired_text`).

``retailnb``'s modules are imported in the functions that use them, so that a benchmark loads only what it
runs (bench_scale.py measures the peak memory of processes that import this module).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import resource
import subprocess
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn


if TYPE_CHECKING:
    from retailnb.config.data import SyntheticSpec
    from retailnb.evaluation.quickprobe import ProbeData

# --- paths and params -----------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
"""The repository (the benchmarks read its ``params.yaml``, clone or copy its pipeline)."""

PARAMS = REPO / "params.yaml"
"""The pipeline's parameters, the default of every benchmark's settings not given on its command line."""

GROCERY = REPO.parent / "shared" / "data" / "GroceryStoreDataset"
"""Where the Grocery Store Dataset is looked for by default (it is not part of the repository)."""


# --- smoke mode -----------------------------------------------------------------------------------


def add_smoke(parser: argparse.ArgumentParser, what: str = "tiny model, data and steps") -> None:
    """The ``--smoke`` option: ``what`` it shrinks, to check the script runs (on CPU, in about a minute)."""
    parser.add_argument("--smoke", action="store_true", help=f"{what}: checks the script runs (figures mean nothing)")


def apply_smoke(args: argparse.Namespace, settings: Mapping[str, Any]) -> argparse.Namespace:
    """With ``--smoke``, ``args`` with ``settings`` (option destinations to values) put over what was given."""
    if getattr(args, "smoke", False):
        for key, value in settings.items():
            setattr(args, key, value)
    return args


ONE_EPOCH: dict[str, Any] = {
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
"""params.yaml overrides: every training stage runs one epoch, once (device_check's pipeline run)."""

SMOKE_SYNTHETIC: dict[str, Any] = dict(
    n_source_families=3, n_monitor_families=1, n_target_families=2, skus_per_family=3, catalogue_per_sku=1,
    labelled_shelf_per_sku=3, unlabelled_shelf_per_sku=3, monitor_train_per_sku=2, monitor_test_per_sku=2,
    probe_train_shelf_per_sku=2, probe_test_per_sku=3, image_size=32,
)
"""The sizes of ``data.synthetic`` in smoke runs: 18 products, under 100 images of 32 px."""

SMOKE_PIPELINE: dict[str, Any] = {
    "backbone.architecture": "test_resnet",
    "backbone.image_size": 32,
    "pretrain.sampler.batch_size": 8,
    "pretrain.sampler.images_per_class": 2,
    "noisy.batch_size": 8,
    "evaluate.probe.shots": [1, "all"],
    "evaluate.finetune.batch_size": 8,
    "new_products.n_new": 2,
    "new_products.shots": [1],
    **{f"data.synthetic.{k}": v for k, v in SMOKE_SYNTHETIC.items()},
}
"""params.yaml overrides of smoke runs, on top of :data:`ONE_EPOCH`: tiny data, model and batches."""


def write_params(path: Path, params: dict[str, Any]) -> None:
    """Write ``params`` to ``path`` as YAML (1.2, as DVC reads it; the comments of params.yaml are not kept)."""
    from ruamel.yaml import YAML

    with path.open("w") as fh:
        YAML().dump(params, fh)


def smoke_params(params: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with :data:`ONE_EPOCH` and :data:`SMOKE_PIPELINE` set."""
    from retailnb.config.overrides import set_key  # the pipeline's YAML reader: not in `pip install .`

    params = json.loads(json.dumps(params))
    for key, value in {**ONE_EPOCH, **SMOKE_PIPELINE}.items():
        set_key(params, key, value)
    return params


# --- timing ---------------------------------------------------------------------------------------


@dataclass
class Step:
    """One timed training step of :func:`timed_steps`."""

    index: int
    """Steps before this one, over every epoch."""
    epoch: int
    wait: float
    """Seconds waiting for the batch (at an epoch's start, making the loader's iterator too)."""
    compute: float
    """Seconds of the step itself (forward, loss, backward, optimiser step; what ``step`` does)."""
    cpu: float
    """CPU seconds of this process (all its threads) over both."""
    batch: Any
    """The batch as the loader gave it."""
    out: Any
    """What ``step`` returned for it."""

    @property
    def seconds(self) -> float:
        """Wall-clock seconds of the step, waiting for its batch included."""
        return self.wait + self.compute


def timed_steps(loader: Iterable[Any], step: Callable[[Any], Any],
                on_epoch: Callable[[int], object] | None = None) -> Generator[Step, None, None]:
    """``step(batch)`` on each batch of ``loader``, epoch after epoch until the caller stops; yields each step.

    Only the fetch of the batch and the step are timed, not what the caller does between steps. Close the
    generator (or let it go) to shut the loader's workers down. ``on_epoch(epoch)`` runs before each epoch.

    Raises:
        ValueError: an epoch of ``loader`` had no batch (fewer items than one batch with ``drop_last``).
    """
    index = 0
    for epoch in itertools.count():
        if on_epoch is not None:
            on_epoch(epoch)
        tick, cpu = time.perf_counter(), time.process_time()
        batches = iter(loader)
        first = index
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            got = time.perf_counter()
            out = step(batch)
            done = time.perf_counter()
            yield Step(index, epoch, got - tick, done - got, time.process_time() - cpu, batch, out)
            index += 1
            tick, cpu = time.perf_counter(), time.process_time()
        del batches
        if index == first:
            raise ValueError("the loader gave no batch in an epoch (fewer images than one batch?)")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Fastest of ``repeats`` timed calls of ``fn``, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children (e.g. a generator's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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


# --- data -----------------------------------------------------------------------------------------


def synthetic_manifest(spec: SyntheticSpec, out: Path) -> Path:
    """The manifest of the synthetic data of ``spec`` in ``out``, generated unless already there."""
    from retailnb.data.synthetic import generate

    manifest = out / "manifest.csv"
    if not manifest.is_file():
        generate(spec, out)
    return manifest


def random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` uint8 images (N, 3, size, size): smooth random colour fields, cheap to make at any size."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8).float()
    return nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False).to(torch.uint8)


# --- transfer target ------------------------------------------------------------------------------

SOURCE_KINDS, TARGET_KINDS = "even", "odd"
"""Pretraining sees the even coarse kinds of the Grocery Store Dataset; the probes train and score on the odd ones."""


def has_grocery(root: Path) -> bool:
    """Whether ``root`` holds the Grocery Store Dataset (its ``classes.csv``, in ``dataset/`` or at the top)."""
    return (root / "dataset" / "classes.csv").is_file() or (root / "classes.csv").is_file()


def grocery_halves(root: Path, work: Path) -> tuple[Path, Path]:
    """Manifests of the pretraining half and the target half (written once per work folder)."""
    from retailnb.data.prepare import prepare_dataset

    manifests = []
    for kinds in (SOURCE_KINDS, TARGET_KINDS):
        out = work / f"grocery_{kinds}"
        if not (out / "manifest.csv").is_file():
            prepare_dataset("grocery_store", out, root=root, labels="fine", kinds=kinds, on_error="skip")
        manifests.append(out / "manifest.csv")
    return manifests[0], manifests[1]


def synthetic_halves(params: dict[str, Any], work: Path) -> tuple[Path, Path]:
    """(pretraining manifest, target manifest) of the synthetic data of ``params`` (``data.synthetic``).

    One manifest: pretraining reads its source roles (``labelled``, ``unlabelled``), the probes its target
    catalogue (``probe_train``/``probe_test``, brand families pretraining never saw). It is generated once per
    distinct ``data.synthetic``, in ``work/data/synthetic-<its hash>``, so settings that change the data get
    their own.
    """
    from retailnb.config.data import SyntheticSpec

    synthetic = params["data"]["synthetic"]
    key = hashlib.sha256(json.dumps(synthetic, sort_keys=True).encode()).hexdigest()[:12]
    manifest = synthetic_manifest(SyntheticSpec.model_validate(synthetic), work / "data" / f"synthetic-{key}")
    return manifest, manifest


@cache
def target_data(manifest: Path, size: int) -> ProbeData:
    """The target's probe_train/probe_test images decoded at ``size`` (once per manifest and size)."""
    from retailnb.data.manifest import read_manifest
    from retailnb.evaluation.quickprobe import load_probe_data

    return load_probe_data(read_manifest(manifest), size, "probe_train", "probe_test")


def probe(backbone: nn.Module, data: ProbeData) -> float:
    """Accuracy of a logistic-regression probe on ``backbone``'s frozen features (all training images)."""
    from retailnb.evaluation.probe import probe_accuracy
    from retailnb.models.inference import extract_features

    f_train = extract_features(backbone, data.x_train, precision="fp32")
    f_test = extract_features(backbone, data.x_test, precision="fp32")
    return float(probe_accuracy(f_train, data.y_train, f_test, data.y_test)["accuracy"])


@dataclass
class Side:
    """One side's run for one seed: probe accuracy pretrained and from random weights, and its cost."""

    accuracy: float
    random_accuracy: float
    seconds: float
    images: int
    epochs: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gain(self) -> float:
        """What pretraining added to the probe over random weights of the same architecture."""
        return self.accuracy - self.random_accuracy

    @property
    def images_per_second(self) -> float:
        """Training images (each seen in two views) per second of the training loop."""
        return self.images / self.seconds if self.seconds else 0.0


def run_retailnb(params: dict[str, Any], seed: int, source: Path, target: Path, out_dir: Path,
                 variant: str | None = None) -> tuple[Side, Path]:
    """Pretrain retailnb's ``variant`` (default: the noisy student's teacher) for training seed ``seed``
    on ``source``, as the pipeline's pretrain stage does; probe it, and random weights, on ``target``."""
    from retailnb.config.pretrain import PretrainStageSpec
    from retailnb.config.stages import spec_from_params
    from retailnb.models.backbone import create_backbone
    from retailnb.stages.pretrain import PretrainPaths, train_here

    variant = variant or params["noisy"]["teacher_variant"]
    spec = spec_from_params(PretrainStageSpec, params, variant).with_seed(seed)
    result = train_here(spec, PretrainPaths(manifest=str(source), out_dir=str(out_dir), live_dir="", metrics=""))
    size = spec.backbone.image_size
    trained = create_backbone(spec.backbone.architecture, weights=str(out_dir / "backbone.pt"))
    torch.manual_seed(spec.engine.seed)
    random_init = create_backbone(spec.backbone.architecture)
    data = target_data(target, size)
    side = Side(accuracy=probe(trained, data), random_accuracy=probe(random_init, data),
                seconds=result.data_seconds + result.step_seconds, images=result.images,
                epochs=float(result.epochs_run), extra={"final_loss": result.history["loss"][-1]})
    return side, out_dir / "backbone.pt"


def interval_text(values: Sequence[float], confidence: float = 0.95) -> str:
    """``mean [low, high]`` of ``values`` over seeds (just the mean with one seed), as the report writes it."""
    from retailnb.results.intervals import t_interval
    from retailnb.results.markdown import interval_text as report_interval_text

    return report_interval_text(t_interval(list(values), confidence))


def paired_text(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> str:
    """The seed-by-seed difference ``a - b`` with its t-interval, and whether the interval excludes 0."""
    from retailnb.results.intervals import paired_difference, t_interval

    diff = paired_difference(t_interval(list(a), confidence), t_interval(list(b), confidence))
    if diff is None or diff.low is None or diff.high is None:
        return f"{np.mean(np.subtract(a, b)):+.3f} (one seed: no interval)"
    verdict = "above 0" if diff.low > 0 else "below 0" if diff.high < 0 else "no difference measured"
    return f"{diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}] ({verdict})"

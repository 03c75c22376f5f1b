"""The one training loop of the project, on CPU, one GPU or many, through Lightning Fabric.

Both the contrastive stage and the noisy student use it: they differ only in the dataset, the batch
sampler and the loss function they pass. Fabric places the model and batches on the device, wraps the
model for DDP when several processes run (under ``torchrun``), and applies mixed precision where the device
supports it. The loop adds what a research run needs: a cosine schedule with warm-up, progress (a bar in a
terminal, one line per epoch everywhere: :mod:`retailnb.util.progress`), dvclive curves, an atomic checkpoint
every epoch and exact resumption from it.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
from lightly.utils.scheduler import CosineWarmupScheduler
from lightning_fabric import Fabric
from torch import nn
from torch.utils.data import DataLoader, Dataset

from retailnb.config.compute import ComputeSpec, EngineSpec
from retailnb.data.cache import DiskImages
from retailnb.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_training_state,
    save_training_state,
)
from retailnb.util.progress import EpochLog, step_bar

LossFn = Callable[[nn.Module, Any], Mapping[str, torch.Tensor]]


class MetricLogger(Protocol):
    """What the loop needs of a logger: dvclive's ``Live`` satisfies it."""

    step: int

    def log_metric(self, name: str, val: float) -> None: ...

    def next_step(self) -> None: ...


@dataclass
class FitResult:
    """What a finished (or resumed and finished) run reports.

    ``epochs_run``, ``images``, ``data_seconds`` and ``step_seconds`` count the epochs of this call (a
    resumed run's throughput is that of its last part; a run whose every epoch was already done reports
    zero). Timings never enter the training state, a pipeline output: a rerun writes the same bytes.
    """

    history: dict[str, list[float]]
    epochs_run: int
    start_epoch: int
    images: int
    data_seconds: float
    step_seconds: float

    @property
    def images_per_second(self) -> float:
        """Training throughput over the epochs of this call (data waits included)."""
        total = self.data_seconds + self.step_seconds
        return self.images / total if total > 0 else 0.0


def resolve_precision(precision: str, accelerator: str) -> str:
    """Fabric precision for ``auto``: bf16 mixed where CUDA supports it, fp32 otherwise."""
    if precision != "auto":
        return precision
    cuda = accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available()
    return "bf16-mixed" if cuda and torch.cuda.is_bf16_supported() else "32-true"


def make_fabric(compute: ComputeSpec) -> Fabric:
    """A launched Fabric for ``compute``; under ``torchrun`` it joins the process group (gloo on CPU)."""
    fabric = Fabric(
        accelerator=compute.accelerator,
        devices=compute.devices,
        num_nodes=compute.nnodes,
        strategy=compute.strategy,
        precision=resolve_precision(compute.precision, compute.accelerator),  # type: ignore[arg-type]
    )
    fabric.launch()
    return fabric


def use_channels_last(model: nn.Module) -> nn.Module:
    """``model`` with its 4-D weights stored channels-last (NHWC), in place; returns it.

    Convolutions then compute and return channels-last activations whatever the input's layout. On 2
    CPU cores a bare training step of mobilenetv3_small_100 at 64 px (batch 256) ran 10 to 20% faster
    so in a side-by-side micro-benchmark (oneDNN's NHWC kernels); ``benchmarks/bench_pretrain.py
    --no-channels-last`` compares the whole loop. It is also the layout tensor cores want on GPU. The
    state dict holds the same values, so checkpoints load into any layout.
    """
    return model.to(memory_format=torch.channels_last)


def build_optimizer(model: nn.Module, config: EngineSpec) -> torch.optim.Optimizer:
    """AdamW or SGD over the trainable parameters; norms and biases are not weight-decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=config.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, config: EngineSpec, steps_per_epoch: int) -> CosineWarmupScheduler:
    """lightly's cosine schedule with linear warm-up, stepped once per optimiser step."""
    total = config.epochs * steps_per_epoch
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), max(total - 1, 0))
    return CosineWarmupScheduler(optimizer, warmup_epochs=warmup, max_epochs=total)


def data_digest(*parts: torch.Tensor | np.ndarray | DiskImages | Mapping[str, torch.Tensor]) -> str:
    """A short content hash of a run's inputs (images, labels or targets, initial weights).

    It goes into a run key (see :func:`can_resume`): the parameters alone do not identify a run, since
    DVC keeps a stage's ``persist`` output when only its data changed (``data.synthetic.difficulty``
    renders other images under the same paths; a retrained teacher gives other pseudolabels and other
    initial weights), and a finished state of the old data would otherwise be "resumed" with nothing left
    to train: the stage would silently return the old weights. Images in the on-disk cache are identified
    by their file (named by the images' content) and rows, without reading them.
    """
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, DiskImages):
            digest.update(part.fingerprint().encode())
            continue
        tensors = [part[k] for k in sorted(part)] if isinstance(part, Mapping) else [part]
        for tensor in map(torch.as_tensor, tensors):  # its raw bytes: any dtype, bf16 included
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{flat.dtype}{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@functools.cache
def code_digest() -> str:
    """A short content hash of the ``retailnb`` package's source (every ``.py`` file, by path and bytes).

    A saved training state records it, and :func:`can_resume` continues only a state of the same code: DVC
    reruns a stage when its code changed but keeps its ``persist`` output, and a finished state of the old
    code would otherwise be "resumed" with nothing left to train, so a change to a loss or an optimiser
    would silently return the old weights. Any edit of the package therefore trains afresh.
    """
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def can_resume(state_path: str | Path, run_key: str, resume: str = "auto") -> bool:
    """Whether ``state_path`` holds a training state of this very run (same ``run_key``) to continue.

    The key is the serialised spec of the run: a state left by a run with other parameters (DVC keeps
    the folder with ``persist``) must not be continued, or a changed parameter would be silently ignored.
    Nor is a state saved by other code (:func:`code_digest`), for the same reason.
    With ``resume="never"`` (``compute.resume``) no state is continued, nor even read.

    Raises:
        CheckpointError: the file is no loadable checkpoint; the message says how to discard it.
    """
    path = Path(state_path)
    if resume == "never" or not path.is_file():
        return False
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:  # a state that can never load would block every rerun of the stage
        raise CheckpointError(path, f"{err.problem}. It is the resume state of an interrupted training run; "
                              f"delete it (rm {path}) or set compute.resume: never to train this run from "
                              "the start") from None
    extra = state.get("extra", {})
    return extra.get("run_key") == run_key and extra.get("code") == code_digest()


def fit(
    fabric: Fabric,
    model: nn.Module,
    dataset: Dataset[Any],
    batch_sampler: Any,
    loss_fn: LossFn,
    config: EngineSpec,
    compute: ComputeSpec,
    *,
    state_path: str | Path,
    live: MetricLogger | None = None,
    on_epoch_end: Callable[[int, nn.Module], bool | None] | None = None,
    stop_after_epoch: int | None = None,
    run_key: str = "",
    label: str = "",
) -> FitResult:
    """Train ``model`` with ``loss_fn`` for ``config.epochs``, resuming from ``state_path`` if it exists.

    Args:
        fabric: a launched Fabric (see :func:`make_fabric`).
        model: the module whose parameters are trained (unwrapped; Fabric wraps it).
        dataset: indexable dataset; ``batch_sampler`` yields lists of its indices.
        batch_sampler: has ``set_epoch(epoch)`` and yields index batches for this process.
        loss_fn: ``loss_fn(model, batch)`` returns named scalars including ``"loss"``, which is minimised;
            the others are logged.
        config: optimisation settings.
        compute: placement: DataLoader workers and memory layout (the device is ``fabric``'s).
        state_path: the resumable training state, rewritten atomically after every epoch.
        live: dvclive ``Live`` (or any :class:`MetricLogger`) for curves; only rank 0 logs.
        on_epoch_end: called with (epoch, unwrapped model) after each epoch's checkpoint; when it returns
            True, training stops there (early stopping: every process must return the same).
        stop_after_epoch: stop after this epoch as if interrupted (used to test resumption).
        run_key: identifies the run's parameters; a saved state with another key is not resumed but
            replaced (see :func:`can_resume`).
        label: what is training, at the head of each epoch's progress line on standard error (rank 0;
            see :mod:`retailnb.util.progress`).

    Returns:
        Loss history per epoch and the run's throughput (see :class:`FitResult`).
    """
    state_path = Path(state_path)
    steps_per_epoch = len(batch_sampler)
    if compute.channels_last:
        use_channels_last(model)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    wrapped, optimizer = fabric.setup(model, optimizer)
    start_epoch, history = 0, defaultdict(list)
    images, data_s, step_s = 0, 0.0, 0.0
    if can_resume(state_path, run_key, compute.resume):
        # after setup, so the optimiser state lands on the parameters' device
        resume = load_training_state(state_path, model=model, optimizer=optimizer, scheduler=scheduler)
        start_epoch, history = resume.epoch + 1, defaultdict(list, resume.extra.get("history", {}))
    loader = DataLoader(
        dataset, batch_sampler=batch_sampler, num_workers=compute.num_workers, persistent_workers=False
    )
    loader = cast(DataLoader[Any], fabric.setup_dataloaders(loader, use_distributed_sampler=False))
    last = config.epochs - 1 if stop_after_epoch is None else min(stop_after_epoch, config.epochs - 1)
    log = EpochLog(label, config.epochs, first_epoch=start_epoch)
    for epoch in range(start_epoch, last + 1):
        batch_sampler.set_epoch(epoch)
        wrapped.train()
        sums: dict[str, float] = defaultdict(float)
        bar = step_bar(steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", enabled=fabric.is_global_zero)
        tick = time.perf_counter()
        for batch in loader:
            tock = time.perf_counter()
            losses = loss_fn(wrapped, batch)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(losses["loss"])
            optimizer.step()
            scheduler.step()
            values = {k: float(v.detach()) for k, v in losses.items()}
            if not all(math.isfinite(v) for v in values.values()):
                raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}: {values}; lower lr or check the data")
            for k, v in values.items():
                sums[k] += v
            images += _batch_size(batch)
            tick, data_s, step_s = time.perf_counter(), data_s + (tock - tick), step_s + (time.perf_counter() - tock)
            bar.set_postfix(loss=f"{values['loss']:.3f}")
            bar.update()
        bar.close()
        means = {k: v / max(steps_per_epoch, 1) for k, v in sums.items()}
        means["lr"] = optimizer.param_groups[0]["lr"]
        for k, v in means.items():
            history[k].append(v)
        if fabric.is_global_zero:
            log.write(epoch, means)
        if live is not None and fabric.is_global_zero:
            live.step = epoch + 1  # the epoch's number, from 1, as the notebooks and the progress lines count
            for k, v in means.items():
                live.log_metric(f"train/{k}", v)
            live.next_step()
        if fabric.is_global_zero:
            save_training_state(
                state_path,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                step=(epoch + 1) * steps_per_epoch,
                epoch=epoch,
                extra={"history": dict(history), "run_key": run_key, "code": code_digest()},
            )
        fabric.barrier()
        if on_epoch_end is not None and on_epoch_end(epoch, model):
            last = epoch
            break
    return FitResult(
        history=dict(history),
        epochs_run=max(0, last + 1 - start_epoch),
        start_epoch=start_epoch,
        images=images,
        data_seconds=data_s,
        step_seconds=step_s,
    )


def _batch_size(batch: Any) -> int:
    """Number of images in a batch: the leading size of its first tensor."""
    first = batch
    while isinstance(first, (list, tuple)):
        first = first[0]
    return int(first.shape[0]) if isinstance(first, torch.Tensor) else 0

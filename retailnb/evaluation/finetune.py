"""The baselines the method is compared with: finetune a whole network on the downstream training split.

A backbone gets a new classifier over the target products and every weight is trained with
cross-entropy under light augmentation, through the project's one training engine. The paper's claim is
that a logistic regression on the frozen backbone comes close to this at a fraction of the cost, so the
baseline must be a fair one: a seeded, stratified validation split of the training images chooses the
learning rate from a grid and when to stop (patience, up to an epoch cap), and the best-validation
weights of the chosen run are scored once on the test split. The same protocol runs from the
pretrained backbone and, with ``evaluate.finetune.random_init``, from random weights (what a practitioner
without pretraining would do).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning_fabric import Fabric
from torch import nn

from retailnb.config.compute import ComputeSpec
from retailnb.config.evaluate import FinetuneSpec
from retailnb.data.cache import DiskArray, take_rows
from retailnb.models.checkpoint import load_checkpoint, save_checkpoint
from retailnb.models.classifier import StudentObjective, build_student, network_probabilities
from retailnb.models.sharded import broadcast_state, process_group
from retailnb.train.datasets import TargetDataset, to_chw_uint8
from retailnb.train.engine import code_digest, fit, make_fabric
from retailnb.train.sampler import EpochBatchSampler
from retailnb.transforms.views import retail_view_transform


@dataclass(frozen=True)
class GridRun:
    """One learning rate of the grid: its best validation accuracy, at which epoch, and epochs trained."""

    lr: float
    val_accuracy: float
    best_epoch: int
    epochs: int


@dataclass(frozen=True)
class FinetuneResult:
    """A finetuned classifier (the chosen run's best-validation weights) and its test accuracy.

    Attributes:
        model: the classifier.
        accuracy: test accuracy.
        seconds: wall time of the whole grid.
        lr: the chosen learning rate.
        best_epoch: the epoch (from 1) of the chosen weights.
        val_accuracy: their validation accuracy.
        grid: every learning rate's run, in grid order.
    """

    model: nn.Module
    accuracy: float
    seconds: float
    lr: float
    best_epoch: int
    val_accuracy: float
    grid: list[GridRun]


def validation_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified (train, validation) indices: ``fraction`` of each class's images, rounded, held out.

    A class with at least two images gives at least one to validation and keeps at least one for
    training; a class with one image keeps it for training.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) < 2:
            continue
        k = min(max(1, round(fraction * len(members))), len(members) - 1)
        val.extend(rng.choice(members, size=k, replace=False).tolist())
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    return np.setdiff1d(np.arange(len(y)), val_idx), val_idx


ProbeImages = np.ndarray | DiskArray
"""uint8 (N, H, W, 3) images as decoded: an array in memory, or the on-disk cache read when indexed."""


def accuracy(model: nn.Module, images: ProbeImages, labels: np.ndarray) -> float:
    """Top-1 accuracy of a classifier (eval mode) on uint8 images (the on-disk cache read a batch at a time)."""
    source = images.chw if isinstance(images, DiskArray) else images
    return float((network_probabilities(model, source).argmax(1) == np.asarray(labels)).mean())


class EarlyStopping:
    """The engine's ``on_epoch_end``: validation accuracy after each epoch, best weights kept, stop on patience.

    The best weights and their epoch are also saved to ``best_path`` (with the run key and the code's
    digest), so that a run resumed after an interruption keeps the best of the epochs before it, and a
    finished run of the same code is not trained again. In a distributed run every process scores rank 0's
    network (DDP keeps the parameters equal, not the batch-norm statistics), so all stop at the same epoch;
    rank 0 alone saves.
    """

    def __init__(self, x_val: ProbeImages, y_val: np.ndarray, patience: int, best_path: Path, run_key: str,
                 resume: bool = True) -> None:
        self.x_val, self.y_val, self.patience, self.best_path, self.run_key = x_val, y_val, patience, best_path, run_key
        self.best_accuracy, self.best_epoch, self.last_epoch, self.finished = -1.0, -1, -1, False
        self.best_state: dict[str, torch.Tensor] | None = None
        if resume and best_path.is_file():
            saved = load_checkpoint(best_path)
            extra = saved.get("extra", {})
            if extra.get("run_key") == run_key and extra.get("code") == code_digest():
                self.best_state = saved["state_dict"]
                self.best_accuracy, self.best_epoch = float(extra["val_accuracy"]), int(extra["epoch"])
                self.last_epoch, self.finished = int(extra["last_epoch"]), bool(extra["finished"])

    def __call__(self, epoch: int, model: nn.Module) -> bool:
        """Score epoch ``epoch``; keep the weights when they are the best so far; True when patience ran out."""
        score = accuracy(broadcast_state(model), self.x_val, self.y_val)
        if score > self.best_accuracy:
            self.best_accuracy, self.best_epoch = score, epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self.last_epoch = epoch
        self._save()
        return epoch - self.best_epoch >= self.patience

    def finish(self) -> None:
        """Mark the run finished (stopped early or at the cap), so a rerun reuses it."""
        self.finished = True
        self._save()

    def _save(self) -> None:
        if self.best_state is None or process_group()[0] != 0:
            return
        save_checkpoint(self.best_path, model_state=self.best_state,
                        extra={"run_key": self.run_key, "code": code_digest(), "val_accuracy": self.best_accuracy,
                               "epoch": self.best_epoch, "last_epoch": self.last_epoch, "finished": self.finished})


def _train_one(architecture: str, backbone_state: dict[str, torch.Tensor] | None, n_classes: int, lr: float,
               train: tuple[ProbeImages, np.ndarray], val: tuple[ProbeImages, np.ndarray], *, spec: FinetuneSpec,
               compute: ComputeSpec, state_dir: Path, image_size: int) -> tuple[nn.Module, GridRun]:
    """Train one learning rate with early stopping on ``val``; the model holds its best-validation weights.

    A finished run (stopped early or at the cap) is reused without starting Fabric, so that the process
    that launched a distributed run under ``torchrun`` reads its result back here.
    """
    engine = spec.engine.at(lr)
    Fabric.seed_everything(engine.seed, verbose=False)  # the same new classifier (and random backbone) per lr
    model = build_student(architecture, n_classes, drop_rate=spec.drop_rate, drop_path_rate=0.0,
                          init="scratch" if backbone_state is None else "teacher",
                          teacher_backbone_state=backbone_state)
    x_train, y_train = train
    run_key = (f"finetune:{architecture}:{'pretrained' if backbone_state is not None else 'random'}:{len(y_train)}:"
               f"{lr}:{spec.model_dump_json()}:{compute.model_dump_json(exclude={'resume'})}")
    stopper = EarlyStopping(val[0], val[1], spec.patience, state_dir / "best.pt", run_key,
                            resume=compute.resume == "auto")
    if not stopper.finished:
        fabric = make_fabric(compute)
        targets = torch.eye(n_classes)[torch.as_tensor(np.asarray(y_train), dtype=torch.long)]
        # the on-disk cache is indexed an image at a time by the loader, as in the training stages
        images = x_train.chw if isinstance(x_train, DiskArray) else to_chw_uint8(np.ascontiguousarray(x_train))
        dataset = TargetDataset(images, targets,
                                retail_view_transform(image_size, spec.views))
        sampler = EpochBatchSampler(np.full(len(dataset), -1), rank=fabric.global_rank, world_size=fabric.world_size,
                                    batch_size=min(spec.batch_size, len(dataset)), images_per_class=2,
                                    supcon_fraction=0.0, seed=engine.seed)
        fit(fabric, model, dataset, sampler, StudentObjective(), engine, compute, state_path=state_dir / "train_state.pt",
            run_key=run_key, on_epoch_end=stopper,
            label=f"finetune from {'pretrained' if backbone_state is not None else 'random'} weights, lr {lr:g}")
        stopper.finish()
    assert stopper.best_state is not None
    model.load_state_dict(stopper.best_state)
    return model, GridRun(lr=lr, val_accuracy=stopper.best_accuracy, best_epoch=stopper.best_epoch + 1,
                          epochs=stopper.last_epoch + 1)


def finetune(
    architecture: str,
    backbone_state: dict[str, torch.Tensor] | None,
    x_train: ProbeImages,
    y_train: np.ndarray,
    x_test: ProbeImages,
    y_test: np.ndarray,
    *,
    spec: FinetuneSpec,
    compute: ComputeSpec,
    state_dir: str | os.PathLike[str],
    image_size: int,
) -> FinetuneResult:
    """Finetune a backbone (or random weights) with a new classifier on (x_train, y_train); score on test.

    Args:
        architecture: timm name of the backbone.
        backbone_state: its weights (a ``num_classes=0`` state dict); None trains from random weights.
        x_train: uint8 training images (N, H, W, 3) as decoded, in memory or in the on-disk cache
            (:class:`~retailnb.data.cache.DiskArray`: read a batch at a time, never whole).
        y_train: their class ids ``0..C-1``.
        x_test: uint8 test images.
        y_test: their class ids.
        spec: validation split, learning-rate grid, patience, augmentation and optimisation
            (``evaluate.finetune``).
        compute: placement.
        state_dir: resumable training states and best weights, one folder per learning rate.
        image_size: side of the square images.

    Returns:
        The chosen learning rate's best-validation classifier, scored once on the test split.
    """
    started = time.perf_counter()
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    fit_idx, val_idx = validation_split(y_train, spec.val_fraction, spec.engine.seed)
    if not len(val_idx):
        raise ValueError("the finetuning baseline needs a validation split: every product has a single training "
                         "image")
    train, val = (take_rows(x_train, fit_idx), y_train[fit_idx]), (take_rows(x_train, val_idx), y_train[val_idx])
    best: tuple[nn.Module, GridRun] | None = None
    grid = []
    for i, lr in enumerate(spec.lrs):
        model, run = _train_one(architecture, backbone_state, n_classes, lr, train, val, spec=spec, compute=compute,
                                state_dir=Path(state_dir) / f"lr_{i}", image_size=image_size)
        grid.append(run)
        if best is None or run.val_accuracy > best[1].val_accuracy:
            best = (model, run)
    assert best is not None
    model, chosen = best
    return FinetuneResult(model=model, accuracy=accuracy(model, x_test, y_test), seconds=time.perf_counter() - started,
                          lr=chosen.lr, best_epoch=chosen.best_epoch, val_accuracy=chosen.val_accuracy, grid=grid)

"""The baseline the method is compared with: finetune the whole network on the downstream training split.

The backbone gets a new classifier over the target products and every weight is trained with
cross-entropy under light augmentation, through the project's one training engine. The paper's claim is
that a logistic regression on the frozen backbone comes close to this at a fraction of the cost.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from retailnb.config.compute import ComputeSpec
from retailnb.config.evaluate import FinetuneSpec
from retailnb.models.classifier import (
    StudentObjective,
    build_student,
    network_probabilities,
)
from retailnb.train.datasets import TargetDataset, to_chw_uint8
from retailnb.train.engine import fit, make_fabric
from retailnb.train.sampler import EpochBatchSampler
from retailnb.transforms.views import retail_view_transform


@dataclass(frozen=True)
class FinetuneResult:
    """The finetuned classifier and its test accuracy."""

    model: nn.Module
    accuracy: float
    seconds: float


def finetune(
    architecture: str,
    backbone_state: dict[str, torch.Tensor],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    spec: FinetuneSpec,
    compute: ComputeSpec,
    state_path: str | os.PathLike[str],
    image_size: int,
) -> FinetuneResult:
    """Train backbone and a new classifier on (x_train, y_train); score on (x_test, y_test).

    Args:
        architecture: timm name of the backbone.
        backbone_state: its weights (a ``num_classes=0`` state dict).
        x_train: uint8 training images (N, H, W, 3) as decoded.
        y_train: their class ids ``0..C-1``.
        x_test: uint8 test images.
        y_test: their class ids.
        spec: batch size, dropout, augmentation and optimisation (``evaluate.finetune``).
        compute: placement.
        state_path: the resumable training state of this run.
        image_size: side of the square images.
    """
    started = time.perf_counter()
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    model = build_student(architecture, n_classes, drop_rate=spec.drop_rate, drop_path_rate=0.0, init="teacher",
                          teacher_backbone_state=backbone_state)
    targets = torch.eye(n_classes)[torch.as_tensor(np.asarray(y_train), dtype=torch.long)]
    transform = retail_view_transform(image_size, spec.views)
    dataset = TargetDataset(to_chw_uint8(np.ascontiguousarray(x_train)), targets, transform)
    fabric = make_fabric(compute)
    fabric.seed_everything(spec.engine.seed, verbose=False)
    sampler = EpochBatchSampler(np.full(len(dataset), -1), rank=fabric.global_rank, world_size=fabric.world_size,
                                batch_size=min(spec.batch_size, len(dataset)), images_per_class=2,
                                supcon_fraction=0.0, seed=spec.engine.seed)
    fit(fabric, model, dataset, sampler, StudentObjective(), spec.engine, compute, state_path=Path(state_path),
        run_key=f"finetune:{architecture}:{len(dataset)}:{spec.model_dump_json()}:{compute.model_dump_json()}")
    predictions = network_probabilities(model, x_test).argmax(1)
    accuracy = float((predictions == np.asarray(y_test)).mean())
    return FinetuneResult(model=model, accuracy=accuracy, seconds=time.perf_counter() - started)

"""In-memory image datasets for training: images are decoded once, then augmented per sample.

Decoding JPEGs every epoch is what starves a small model on few cores; the stages decode every image
once into a uint8 tensor (``retailnb.data.images.decode_images``) and these datasets only index and
augment it, in DataLoader workers when there are spare cores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

Transform = Callable[[torch.Tensor], torch.Tensor]


def to_chw_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 array, as decoded, to a contiguous (N, 3, H, W) uint8 tensor."""
    t = torch.as_tensor(images)
    if t.dtype != torch.uint8 or t.ndim != 4:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3) or (N, 3, H, W), got {t.dtype} {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).contiguous() if t.shape[-1] == 3 else t.contiguous()


class MultiViewDataset(Dataset[tuple[list[torch.Tensor], int]]):
    """Each item is ``n_views`` independent augmentations of one image and its label (-1: unlabelled)."""

    def __init__(self, images: torch.Tensor, labels: Sequence[int] | np.ndarray, transform: Transform, n_views: int = 2) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if n_views < 1:
            raise ValueError(f"n_views must be at least 1, got {n_views}")
        self.images = images
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.transform = transform
        self.n_views = n_views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int]:
        image = self.images[index]
        return [self.transform(image) for _ in range(self.n_views)], int(self.labels[index])


class TargetDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """One image per item with a target (a class id or a probability vector), augmented by ``transform``.

    Without a transform the uint8 image is returned as stored, for augmentation of whole batches later.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform: Transform | None = None) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return (image if self.transform is None else self.transform(image)), self.targets[index]

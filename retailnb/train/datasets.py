"""Image datasets for training: images are decoded once, then augmented per sample.

Decoding JPEGs every epoch is what starves a small model on few cores; the stages decode every image
once (:func:`load_images`), either into one uint8 tensor in memory or into an on-disk cache read a batch
at a time (:class:`retailnb.data.cache.DiskImages`, for sets larger than memory), and these datasets only
index and augment it, in DataLoader workers when there are spare cores. Both give the same bytes in the
same order: ``compute.images`` chooses between them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from retailnb.data.cache import DiskImages, cached_images, concat_rows
from retailnb.data.images import PathLike, decode_images

Transform = Callable[[torch.Tensor], torch.Tensor]

ImageStorage = Literal["memory", "disk"]
"""Where decoded images are held: one tensor in memory, or the on-disk cache (:mod:`retailnb.data.cache`)."""

ImageSource = torch.Tensor | DiskImages
"""uint8 (N, 3, S, S) images: ``images[i]``, ``images[a:b]`` and ``images[rows]`` give tensors."""


def to_chw_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 array, as decoded, to a contiguous (N, 3, H, W) uint8 tensor."""
    t = torch.as_tensor(images)
    if t.dtype != torch.uint8 or t.ndim != 4:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3) or (N, 3, H, W), got {t.dtype} {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).contiguous() if t.shape[-1] == 3 else t.contiguous()


def load_images(paths: Sequence[PathLike], size: int, storage: ImageStorage, *,
                workers: int | None = None) -> ImageSource:
    """Decode ``paths`` once at ``size``, held as ``storage`` says; both give the same pixels in order."""
    if storage == "disk":
        return cached_images(paths, size, workers=workers)
    return to_chw_uint8(decode_images(paths, size, workers=workers))


def select_images(images: ImageSource, rows: Sequence[int] | np.ndarray) -> ImageSource:
    """Rows ``rows`` of ``images``, in that order (a view, for the on-disk cache)."""
    if isinstance(images, DiskImages):
        return images.select(np.asarray(rows, dtype=np.int64))
    return images[torch.as_tensor(np.asarray(rows), dtype=torch.long)]


def concat_images(first: ImageSource, second: ImageSource) -> ImageSource:
    """``first``'s images then ``second``'s (two views of one cache file, or two tensors)."""
    if isinstance(first, DiskImages) and isinstance(second, DiskImages):
        return concat_rows(first, second)
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor):
        return torch.cat([first, second])
    raise TypeError("cannot join images held in memory with images in the on-disk cache")


class MultiViewDataset(Dataset[tuple[list[torch.Tensor], int]]):
    """Each item is ``n_views`` independent augmentations of one image and its label (-1: unlabelled)."""

    def __init__(self, images: ImageSource, labels: Sequence[int] | np.ndarray, transform: Transform, n_views: int = 2) -> None:
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

    def __init__(self, images: ImageSource, targets: torch.Tensor, transform: Transform | None = None) -> None:
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

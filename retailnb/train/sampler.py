"""Batch composition for contrastive training: random images plus class-balanced labelled groups.

SupCon needs several images of one class in a batch (otherwise every positive is just the other view of
the same image and it degenerates to SimCLR); SimCLR wants the rest of the batch to be diverse. Each
batch therefore holds ``classes_per_batch`` labelled classes with ``images_per_class`` images each, and
fills the remaining slots with images drawn without replacement from the whole pool (labelled or not).

Batches are a pure function of (seed, epoch, rank), so a resumed or distributed run sees exactly the
batches an uninterrupted single run would plan.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def plan_epoch(
    labels: np.ndarray,
    *,
    batch_size: int,
    images_per_class: int,
    supcon_fraction: float,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[np.ndarray]:
    """Index batches of one epoch for one process.

    Args:
        labels: class id per image; ``-1`` marks an unlabelled image.
        batch_size: images per batch on this process.
        images_per_class: labelled images of each class placed together in a batch (SupCon positives).
        supcon_fraction: share of a batch given to class-balanced labelled groups; 0 gives plain random
            batches (SimCLR only).
        seed: base seed of the run.
        epoch: epoch number, so every epoch has its own order.
        rank: this process's rank; each rank draws its own disjoint share of the pool.
        world_size: number of processes.

    Returns:
        Batches of indices into ``labels``; every image of the pool appears once per epoch across ranks
        in the random part, and the epoch has ``ceil(N / (batch_size * world_size))`` batches per rank.

    Raises:
        ValueError: on a batch size or fraction that cannot work.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2, got {batch_size}")
    if not 0.0 <= supcon_fraction <= 1.0:
        raise ValueError(f"supcon_fraction must be in [0, 1], got {supcon_fraction}")
    if images_per_class < 2 and supcon_fraction > 0:
        raise ValueError(f"images_per_class must be at least 2 for SupCon, got {images_per_class}")
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    n_batches = max(1, -(-n // (batch_size * world_size)))
    labelled = np.flatnonzero(labels >= 0)
    classes = np.unique(labels[labelled])
    n_groups = int(round(batch_size * supcon_fraction)) // images_per_class if len(classes) else 0
    n_groups = min(n_groups, len(classes))
    n_random = batch_size - n_groups * images_per_class
    by_class = {c: labelled[labels[labelled] == c] for c in classes}
    local = np.random.default_rng([seed, epoch, rank, 1])
    batches = []
    for b in range(n_batches):
        start = (b * world_size + rank) * n_random
        part = [order[np.arange(start, start + n_random) % n]]
        for c in local.choice(classes, size=n_groups, replace=False) if n_groups else []:
            members = by_class[c]
            part.append(local.choice(members, size=images_per_class, replace=len(members) < images_per_class))
        batches.append(np.concatenate(part))
    return batches


class EpochBatchSampler:
    """A ``batch_sampler`` for ``DataLoader`` that replays :func:`plan_epoch` for the current epoch."""

    def __init__(self, labels: np.ndarray, *, rank: int = 0, world_size: int = 1, **plan: int | float) -> None:
        self.labels = np.asarray(labels)
        self.rank = rank
        self.world_size = world_size
        self.plan = plan
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        return plan_epoch(
            self.labels, epoch=self.epoch, rank=self.rank, world_size=self.world_size, **self.plan  # type: ignore[arg-type]
        )

    def __iter__(self) -> Iterator[list[int]]:
        return iter([b.tolist() for b in self._batches()])

    def __len__(self) -> int:
        batch = int(self.plan["batch_size"]) * self.world_size
        return max(1, -(-len(self.labels) // batch))

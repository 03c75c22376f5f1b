"""Inference over many images shared out among the processes of a distributed run, gathered in order.

Under ``torchrun`` every process holds the same network and the same images; each runs the forward
passes of its share of the batches and the rows come back to every process in the order a single process
would have produced them. The batches are those of the one-process run (batch ``i`` is images
``i*B .. (i+1)*B``, handed to process ``i % world_size``), so every image goes through the network in
the same batch as it would alone: the rows are bit-identical to the one-process run, and so is everything
computed from them (the noisy student's pseudolabel table). Outside a process group the whole range runs
here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from retailnb.data.cache import DiskArray, DiskImages
from retailnb.models.inference import extract_features

Bounds = tuple[int, int]
RowsFn = Callable[[int, int], np.ndarray]


def process_group() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def batch_bounds(n: int, batch_size: int) -> list[Bounds]:
    """``[(start, stop), ...]`` of the batches a single process runs over ``n`` images.

    Raises:
        ValueError: ``batch_size`` is not positive.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of images, got {batch_size}")
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def rank_share(bounds: Sequence[Bounds], rank: int, world_size: int) -> list[Bounds]:
    """The batches process ``rank`` of ``world_size`` runs: every ``world_size``-th, from its rank."""
    return list(bounds[rank::world_size])


def interleave(shares: Sequence[Sequence[np.ndarray]], n_batches: int) -> list[np.ndarray]:
    """The batches' rows in one-process order, from each rank's rows of its share (see :func:`rank_share`)."""
    world_size = len(shares)
    return [shares[i % world_size][i // world_size] for i in range(n_batches)]


def sharded_rows(rows: RowsFn, n: int, batch_size: int) -> np.ndarray:
    """``rows(start, stop)`` over ``0..n`` in batches, shared out among the processes, gathered in order.

    Every process of the group must call it with the same ``n`` and ``batch_size``; each gets every row.

    Args:
        rows: the (stop - start, ...) array of images ``start:stop`` (features, probabilities).
        n: number of images.
        batch_size: images per call of ``rows``.

    Returns:
        The rows of all ``n`` images, concatenated in order.
    """
    bounds = batch_bounds(n, batch_size)
    rank, world_size = process_group()
    mine = [rows(start, stop) for start, stop in rank_share(bounds, rank, world_size)]
    if world_size == 1:
        return np.concatenate(mine)
    shares: list[list[np.ndarray]] = [[] for _ in range(world_size)]
    dist.all_gather_object(shares, mine)
    return np.concatenate(interleave(shares, len(bounds)))


def sharded_features(model: nn.Module, images: torch.Tensor | np.ndarray | DiskImages | DiskArray, *,
                     batch_size: int = 256) -> np.ndarray:
    """:func:`~retailnb.models.inference.extract_features` of every image, batches shared out among the
    processes (see :func:`sharded_rows`); the same (N, D) float32 array in every process. Each batch is
    read from the on-disk cache only when a process computes it."""
    source = images.chw if isinstance(images, DiskArray) else images
    return sharded_rows(lambda start, stop: extract_features(model, source[start:stop], batch_size=batch_size),
                        int(source.shape[0]), batch_size)


def broadcast_state(model: nn.Module) -> nn.Module:
    """Give every process rank 0's parameters and buffers of ``model`` (in place); returns it.

    DDP keeps the parameters equal but each process updates its batch-norm statistics on its own batches,
    so after training the networks differ in their buffers; rank 0's are the ones saved, and inference
    shared out among the processes must run that network everywhere.
    """
    if process_group()[1] > 1:
        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)
    return model

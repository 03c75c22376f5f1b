"""Process pools shared by the whole project: start method, worker count, chunking, a lazy ordered map.

Decoding and checking image files (:mod:`retailnb.data.images`) and rendering the synthetic dataset
(:mod:`retailnb.data.synthetic`) spread CPU-bound work over worker processes; the bundle's embedding
threads and the backbone comparison's probe jobs are sized by the same core count. :func:`pool_context`
is the start method of the process pools, :func:`default_workers` the number of cores this process may
use, :func:`chunks` cuts work into consecutive pieces, and :func:`map_chunks` applies a function to the
pieces, in a process pool when there are enough items (:data:`POOL_MIN_ITEMS`).

The module sits at the top of the package and imports nothing from retailnb, so a module in any
package may use it without importing from another package.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from typing import TypeVar

POOL_MIN_ITEMS = 256
"""Below this many items a process pool costs more to start than it saves."""

_CHUNK = 32  # items per task sent to a pool worker: large enough to amortise the inter-process traffic

T = TypeVar("T")
R = TypeVar("R")


def pool_context() -> BaseContext:
    """Process start method for worker pools.

    ``fork`` where the platform has it, as PyTorch's DataLoader does: workers start in milliseconds and,
    unlike ``spawn`` and ``forkserver``, never re-import the caller's ``__main__`` (a script without an
    ``if __name__ == "__main__"`` guard would otherwise run again in every worker). The project's workers
    only run Pillow, NumPy and torchvision's single-threaded CPU JPEG decoder, so the threads a parent may
    hold (PyTorch's thread pools, CUDA) are not touched.
    """
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def default_workers() -> int:
    """Number of CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not available on macOS / Windows
        return os.cpu_count() or 1


def chunks(items: Sequence[T], n: int) -> list[Sequence[T]]:
    """``items`` cut into consecutive pieces of ``n`` (the last may be shorter)."""
    return [items[i : i + n] for i in range(0, len(items), n)]


def map_chunks(func: Callable[[Sequence[T]], R], items: Sequence[T], workers: int | None = None) -> Iterator[R]:
    """Apply ``func`` to consecutive chunks of ``items``, in a process pool when that pays off.

    Results come back lazily and in order, so a caller may stop at the first bad result.

    Args:
        func: a picklable (module-level) function of a chunk of items.
        items: the work.
        workers: worker processes; None uses every available core, 0 or 1 runs in this process. Below
            :data:`POOL_MIN_ITEMS` items the work always runs in this process.

    Yields:
        ``func`` of each chunk of up to 32 items, in order.
    """
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers must be >= 0 or None, got {workers}")
    pieces = chunks(items, _CHUNK)
    workers = min(workers, len(pieces))
    if workers <= 1 or len(items) < POOL_MIN_ITEMS:
        yield from map(func, pieces)
        return
    # An executor rather than multiprocessing.Pool: a worker that dies (out of memory, killed) raises
    # BrokenProcessPool here instead of leaving the caller waiting forever.
    executor = ProcessPoolExecutor(workers, mp_context=pool_context())
    try:
        yield from executor.map(func, pieces)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)

"""The shared process-pool helpers: chunking, and a chunked map that keeps order with or without a pool."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence

import pytest

from retailnb.util import parallel
from retailnb.util.parallel import chunks, default_workers, map_chunks, pool_context


def _total(piece: Sequence[int]) -> int:
    """A picklable (module-level) function of one chunk."""
    return sum(piece)


def test_chunks_are_consecutive_and_the_last_may_be_shorter() -> None:
    assert chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunks([], 3) == []


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_map_chunks_gives_each_chunk_in_order_in_or_out_of_a_pool(monkeypatch: pytest.MonkeyPatch,
                                                                  workers: int) -> None:
    monkeypatch.setattr(parallel, "POOL_MIN_ITEMS", 1)
    items = list(range(100))  # 4 chunks of 32, the last one shorter
    assert list(map_chunks(_total, items, workers)) == [sum(p) for p in chunks(items, 32)]


def test_map_chunks_refuses_a_negative_worker_count() -> None:
    with pytest.raises(ValueError, match="workers"):
        list(map_chunks(_total, [1, 2, 3], -1))


def test_default_workers_and_pool_context() -> None:
    assert default_workers() >= 1
    expected = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    assert pool_context().get_start_method() == expected

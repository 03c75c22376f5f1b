"""The on-disk image cache gives the in-memory path's bytes, rebuilds on change, and stays bounded."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from retailnb.data import cache
from retailnb.data.cache import DiskImages, build_cache, cache_key, cached_images, chunk_length
from retailnb.data.images import ImageError
from retailnb.models.classifier import network_probabilities
from retailnb.models.inference import extract_features
from retailnb.train.datasets import TargetDataset, concat_images, load_images, select_images
from retailnb.train.sampler import EpochBatchSampler

SIZE = 12


def noise_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` JPEGs of random pixels and varied shapes (so resizing and cropping both happen)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(12, 40)), int(rng.integers(12, 40))
        path = folder / f"{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


@pytest.fixture
def images(tmp_path, monkeypatch):
    """Twenty noise JPEGs, and the test running in ``tmp_path`` (where ``.cache/images`` goes)."""
    monkeypatch.chdir(tmp_path)
    return noise_jpegs(tmp_path / "img", 20)


def test_disk_matches_memory_byte_for_byte(images):
    memory = load_images(images, SIZE, "memory", workers=0)
    disk = load_images(images, SIZE, "disk", workers=0)
    assert isinstance(disk, DiskImages) and disk.path.parent == Path(".cache/images")
    assert disk.shape == tuple(memory.shape) and len(disk) == len(memory)
    assert torch.equal(disk[3], memory[3]) and torch.equal(disk[-1], memory[-1])
    assert torch.equal(disk[2:9], memory[2:9])
    rows = [7, 1, 1, 19, 0]
    assert torch.equal(disk[rows], memory[torch.tensor(rows)])
    assert torch.equal(disk[torch.tensor(rows)], memory[torch.tensor(rows)])
    # views, as the noisy student makes them: labelled rows, then a selection of the unlabelled ones
    joined_disk = concat_images(select_images(disk, range(5)), select_images(select_images(disk, range(5, 20)), [9, 2]))
    joined_memory = concat_images(memory[:5], select_images(memory[5:], [9, 2]))
    assert torch.equal(joined_disk[:], joined_memory)
    restored = pickle.loads(pickle.dumps(joined_disk))
    assert torch.equal(restored[:], joined_memory)


def test_disk_yields_the_same_training_batches_as_memory(images):
    """Same bytes in the same order through the training loader, and the same inference outputs."""
    memory = load_images(images, SIZE, "memory", workers=0)
    disk = load_images(images, SIZE, "disk", workers=0)
    targets = torch.arange(len(images))

    def batches(source: torch.Tensor | DiskImages, workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        sampler = EpochBatchSampler(np.full(len(images), -1), rank=0, world_size=1, batch_size=6,
                                    images_per_class=2, supcon_fraction=0.0, seed=3)
        loader = DataLoader(TargetDataset(source, targets), batch_sampler=sampler, num_workers=workers)
        return list(loader)

    expected = batches(memory, 0)
    for got in (batches(disk, 0), batches(disk, 2)):
        assert len(got) == len(expected)
        for (x, y), (x0, y0) in zip(got, expected):
            assert torch.equal(x, x0) and torch.equal(y, y0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    assert np.array_equal(extract_features(net, disk, batch_size=7, precision="fp32"),
                          extract_features(net, memory, batch_size=7, precision="fp32"))
    assert np.array_equal(network_probabilities(net, disk, batch_size=7), network_probabilities(net, memory, batch_size=7))


def test_changed_image_or_size_rebuilds(images):
    first = cached_images(images, SIZE, workers=0)
    assert cached_images(images, SIZE, workers=0).path == first.path  # unchanged: the same file, not rebuilt
    Image.new("RGB", (20, 20), (0, 200, 0)).save(images[4])
    changed = cached_images(images, SIZE, workers=0)
    assert changed.path != first.path
    assert torch.equal(changed[4], torch.tensor([0, 200, 0], dtype=torch.uint8).view(3, 1, 1).expand(3, SIZE, SIZE))
    assert torch.equal(changed[5], first[5])
    resized = cached_images(images, SIZE + 2, workers=0)
    assert resized.path not in (first.path, changed.path) and resized.shape[-1] == SIZE + 2
    assert cache_key(images, SIZE) != cache_key(images[::-1], SIZE)  # the order is part of the key


def test_failed_write_leaves_no_cache(images, tmp_path):
    images[10].write_bytes(b"")  # decoding stops at the second chunk
    with pytest.raises(ImageError, match="010.jpg"):
        cached_images(images, SIZE, workers=0, chunk_bytes=3 * SIZE * SIZE * 4)
    assert list((tmp_path / ".cache/images").iterdir()) == []


def _killed_while_building(paths: list[Path], destination: Path) -> None:
    """A child that dies (no clean-up runs) after the first chunk has been written."""
    calls = []
    original = cache.decode_images

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os._exit(9)
        return original(*args, **kwargs)

    cache.decode_images = dying
    build_cache(paths, SIZE, destination, workers=0, chunk_bytes=3 * SIZE * SIZE * 4)


def test_killed_write_leaves_no_cache_that_is_used(images, tmp_path):
    key = cache_key(images, SIZE)
    destination = tmp_path / ".cache/images" / f"{key}.npy"
    child = multiprocessing.get_context("fork").Process(target=_killed_while_building, args=(images, destination))
    child.start()
    child.join()
    assert child.exitcode == 9
    left = list(destination.parent.iterdir())
    assert not destination.exists() and len(left) == 1 and left[0].name.endswith(".tmp")  # only a temporary
    rebuilt = cached_images(images, SIZE, workers=0)
    assert rebuilt.path.resolve() == destination.resolve()
    assert torch.equal(rebuilt[:], load_images(images, SIZE, "memory", workers=0))
    assert list(destination.parent.iterdir()) == [destination]  # the next write removed the dead temporary


def test_truncated_cache_file_is_an_error(images):
    disk = cached_images(images, SIZE, workers=0)
    with open(disk.path, "r+b") as fh:
        fh.truncate(disk.path.stat().st_size - 10)
    with pytest.raises(OSError, match="truncated image cache"):
        DiskImages(disk.path)[19]


def _build_peak(paths: list[Path], destination: Path, size: int, chunk_bytes: int) -> int:
    """Peak traced allocation (numpy's included) while building a cache."""
    tracemalloc.start()
    try:
        build_cache(paths, size, destination, workers=0, chunk_bytes=chunk_bytes)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_building_holds_one_chunk_in_memory(tmp_path, monkeypatch):
    """Memory of a build is bounded by the chunk, not the set: decode calls and traced allocations."""
    size, per_image = 32, 3 * 32 * 32
    paths = noise_jpegs(tmp_path / "img", 300, seed=1)
    sizes = []
    original = cache.decode_images

    def spy(chunk, *args, **kwargs):
        sizes.append(len(chunk))
        return original(chunk, *args, **kwargs)

    monkeypatch.setattr(cache, "decode_images", spy)
    small = _build_peak(paths[:60], tmp_path / "small.npy", size, per_image * 10)
    large = _build_peak(paths, tmp_path / "large.npy", size, per_image * 10)
    assert sizes == [10] * 36
    assert large < per_image * len(paths) / 3  # a whole-set array (or a transposed copy of it) would exceed this
    assert large < 1.25 * small  # five times the images, about the same peak
    assert np.load(tmp_path / "large.npy", mmap_mode="r").shape == (300, 3, size, size)  # a plain .npy file
    assert chunk_length(224) == 64 * 2**20 // (3 * 224 * 224) and chunk_length(10**5) == 1


def _build_in_child(paths: list[Path], folder: Path, builds: Path, barrier: object, out: Path) -> None:
    """One of several processes asking for the same cache at once: each build leaves a marker in ``builds``
    and is slow, so that the others ask while it runs; the images it reads go to ``out``."""
    original = cache.build_cache

    def counted(*args, **kwargs):
        (builds / str(os.getpid())).touch()
        time.sleep(1.0)  # the others reach the cache while this build runs
        return original(*args, **kwargs)

    cache.build_cache = counted
    barrier.wait()  # type: ignore[attr-defined]
    np.save(out, cached_images(paths, SIZE, folder=folder, workers=0)[:].numpy())


@pytest.mark.pipeline
def test_processes_asking_at_once_build_the_cache_once(images, tmp_path):
    """Ranks of a torchrun stage (or two stages) ask for the same file: one builds it, the others wait, all
    read the same bytes, and nothing but the cache file is left."""
    ctx = multiprocessing.get_context("spawn")
    builds, folder = tmp_path / "builds", tmp_path / "shared_cache"
    builds.mkdir()
    barrier = ctx.Barrier(3)
    children = [ctx.Process(target=_build_in_child, args=(images, folder, builds, barrier, tmp_path / f"out{i}.npy"))
                for i in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0, 0, 0]
    assert len(list(builds.iterdir())) == 1  # built once, not once per process
    expected = load_images(images, SIZE, "memory", workers=0).numpy()
    for i in range(3):
        assert np.array_equal(np.load(tmp_path / f"out{i}.npy"), expected)
    assert [p.name for p in folder.iterdir()] == [f"{cache_key(images, SIZE)}.npy"]  # no temporary, no lock

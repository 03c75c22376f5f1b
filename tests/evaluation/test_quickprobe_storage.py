"""compute.images: disk for the probe data of evaluation, the noisy stage and the pretraining monitor: the
same pixels, features, overlap and finetuning as in memory, read a batch at a time from the on-disk cache."""

from __future__ import annotations

import multiprocessing
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from shared_fixtures import default_spec, tiny_synthetic_manifest

from retailnb.data import cache
from retailnb.data.cache import DiskArray, DiskImages
from retailnb.data.manifest import read_manifest
from retailnb.evaluation.features import load_features
from retailnb.evaluation import overlap
from retailnb.evaluation.finetune import finetune
from retailnb.evaluation.overlap import OverlapError, resolve_overlap
from retailnb.evaluation.quickprobe import ProbeData, load_probe_data, probe_scores
from retailnb.models.inference import extract_features
from retailnb.models.checkpoint import save_backbone
from retailnb.models.sharded import sharded_features
from retailnb.stages.evaluate import EvaluatePaths, run

ARCH = "test_resnet"
SIZE = 32


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny synthetic dataset, and the test running in ``tmp_path`` (where ``.cache/images`` goes)."""
    monkeypatch.chdir(tmp_path)
    return tiny_synthetic_manifest(tmp_path / "data", probe_train_shelf_per_sku=3, probe_test_per_sku=2)


def both(manifest: Path) -> tuple[ProbeData[np.ndarray], ProbeData[DiskArray]]:
    m = read_manifest(manifest)
    return (load_probe_data(m, SIZE, "probe_train", "probe_test"),
            load_probe_data(m, SIZE, "probe_train", "probe_test", storage="disk"))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of images of every read of the on-disk cache."""
    seen: list[int] = []
    original = DiskImages.read

    def spy(self: DiskImages, stored: np.ndarray) -> np.ndarray:
        seen.append(len(stored))
        return original(self, stored)

    monkeypatch.setattr(DiskImages, "read", spy)
    return seen


def test_disk_probe_data_has_the_pixels_labels_and_classes_of_memory(manifest: Path, reads: list[int]) -> None:
    memory, disk = both(manifest)
    assert reads == []  # nothing is read into memory when loading
    assert isinstance(disk.x_train, DiskArray) and isinstance(disk.x_test, DiskArray)
    assert isinstance(memory.x_train, np.ndarray)
    assert disk.x_train.chw.path.parent == Path(".cache/images")
    assert (disk.train, disk.test, disk.classes) == (memory.train, memory.test, memory.classes)
    assert np.array_equal(disk.y_train, memory.y_train) and np.array_equal(disk.y_test, memory.y_test)
    for d, m in ((disk.x_train, memory.x_train), (disk.x_test, memory.x_test)):
        assert d.shape == m.shape and len(d) == len(m) and d.dtype == m.dtype and d.ndim == m.ndim
        assert np.array_equal(d[:], m) and d[:].flags.c_contiguous
        assert np.array_equal(d[3], m[3]) and np.array_equal(d[-1], m[-1]) and np.array_equal(d[2:5], m[2:5])
        rows = np.array([4, 0, 0, len(m) - 1])
        assert np.array_equal(d[rows], m[rows]) and np.array_equal(d[rows.tolist()], m[rows])
        mask = np.arange(len(m)) % 3 == 1
        assert np.array_equal(d[mask], m[mask]) and np.array_equal(d.select(mask)[:], m[mask])
        assert np.array_equal(d[mask.tolist()], m[mask]) and np.array_equal(d[torch.from_numpy(mask)], m[mask])
        assert np.array_equal(d.select(rows)[1:3], m[rows][1:3])
    with pytest.raises(ValueError, match="storage"):
        load_probe_data(read_manifest(manifest), SIZE, "probe_train", "probe_test",
                        storage="tape")  # type: ignore[call-overload]


def test_features_of_the_disk_cache_equal_memory_and_are_read_a_batch_at_a_time(manifest: Path,
                                                                             reads: list[int]) -> None:
    memory, disk = both(manifest)
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=0)
    n = len(memory.x_train)
    expected = extract_features(model, memory.x_train, batch_size=4, precision="fp32")
    assert np.array_equal(extract_features(model, disk.x_train, batch_size=4, precision="fp32"), expected)
    assert reads and max(reads) <= 4 and sum(reads) == n  # batches, never the whole split
    reads.clear()
    assert np.allclose(sharded_features(model, disk.x_train, batch_size=4), sharded_features(model, memory.x_train,
                                                                                          batch_size=4), atol=1e-6)
    assert max(reads) <= 4
    assert probe_scores(model, disk) == probe_scores(model, memory)


def test_overlap_is_resolved_identically_from_disk(manifest: Path, monkeypatch: pytest.MonkeyPatch,
                                                   reads: list[int]) -> None:
    m = read_manifest(manifest)
    train, test = m.select("probe_train"), m.select("probe_test")
    # two training images that are copies of test images of their product (a file copied into both splits)
    for i in (1, 4):
        match = next(r for r in test if r.label == train[i].label)
        shutil.copyfile(m.root / match.path, m.root / train[i].path)
    monkeypatch.setattr(overlap, "CHUNK_BYTES", 3 * SIZE * SIZE * 2)  # digests read two images at a time
    memory, disk = both(manifest)
    with pytest.raises(OverlapError) as from_memory:
        resolve_overlap(memory, "t", "raise", 0.0)
    with pytest.raises(OverlapError) as from_disk:
        resolve_overlap(disk, "t", "raise", 0.0)
    assert str(from_disk.value) == str(from_memory.value)
    assert reads and max(reads) <= 2
    kept_memory, dropped_memory = resolve_overlap(memory, "t", "drop", 0.0)
    kept_disk, dropped_disk = resolve_overlap(disk, "t", "drop", 0.0)
    assert dropped_disk == dropped_memory >= 2
    assert isinstance(kept_disk.x_train, DiskArray)  # a view of the cache, not the images read into memory
    assert kept_disk.train == kept_memory.train and np.array_equal(kept_disk.y_train, kept_memory.y_train)
    assert np.array_equal(kept_disk.x_train[:], kept_memory.x_train)
    assert np.array_equal(kept_disk.x_test[:], kept_memory.x_test)
    assert overlap.find_overlap(kept_disk, 0.0) == overlap.find_overlap(kept_memory, 0.0) == []


def test_finetuning_from_the_disk_cache_trains_the_same_network(manifest: Path, tmp_path: Path,
                                                              reads: list[int]) -> None:
    memory, disk = both(manifest)
    spec = default_spec("evaluate", "prepared", finetune__batch_size=8, finetune__lrs=[0.01], finetune__patience=1,
                        finetune__engine__max_epochs=1, finetune__engine__warmup_epochs=0.0)
    compute = spec.compute.model_copy(update={"num_workers": 0, "accelerator": "cpu", "images": "disk"})
    torch.manual_seed(0)
    state = timm.create_model(ARCH, num_classes=0).state_dict()
    results = [finetune(ARCH, state, data.x_train, data.y_train, data.x_test, data.y_test, spec=spec.finetune,
                        compute=compute, state_dir=tmp_path / name, image_size=SIZE)
               for name, data in (("memory", memory), ("disk", disk))]
    assert reads and max(reads) < len(disk.x_train)  # images and batches, never a whole split
    (mem, dsk) = results
    assert (dsk.accuracy, dsk.val_accuracy, dsk.best_epoch) == (mem.accuracy, mem.val_accuracy, mem.best_epoch)
    mem_state, dsk_state = mem.model.state_dict(), dsk.model.state_dict()
    assert all(torch.allclose(dsk_state[k].float(), mem_state[k].float(), atol=1e-5) for k in mem_state)


def test_the_figures_draw_images_of_the_disk_cache(manifest: Path) -> None:
    """The report's figures index single images (an (S, S, 3) array, as in memory) and a few queries."""
    import matplotlib.pyplot as plt

    from retailnb.plots.evaluation import confusion_figure, shelf_to_catalogue_figure
    from retailnb.plots.training import retrievals

    _, disk = both(manifest)
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=0)
    f_train, f_test = extract_features(model, disk.x_train), extract_features(model, disk.x_test)
    wrong = (disk.y_test + 1) % len(disk.classes)
    for fig in (confusion_figure(disk, wrong), shelf_to_catalogue_figure((f_train, f_test), disk, n_queries=2, k=2),
                retrievals(model, disk, n_queries=2, k=2)):
        assert any(ax.images and ax.images[0].get_array().shape == (SIZE, SIZE, 3) for ax in fig.axes)
        plt.close(fig)


def _write_cache(path: Path, n: int, size: int) -> None:
    """A cache file of ``n`` random images, written a thousand at a time (as build_cache lays it out)."""
    rng = np.random.default_rng(0)
    header = {"descr": "|u1", "fortran_order": False, "shape": (n, 3, size, size)}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for start in range(0, n, 1000):
            fh.write(rng.integers(0, 256, (min(1000, n - start), 3, size, size), dtype=np.uint8).tobytes())


def _status_kb(field: str) -> int:
    found = re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())
    assert found is not None
    return int(found.group(1))


def _peak_growth(small: Path, large: Path) -> tuple[int, int]:
    """Growth (kB) of the peak resident memory over the resident memory before extracting the features of
    ``large``, after a warm-up on ``small``; the peak is reset first (``/proc/self/clear_refs``)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    extract_features(model, DiskArray(DiskImages(small)), batch_size=16, precision="fp32")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from the current resident size
    before = _status_kb("VmRSS")
    features = extract_features(model, DiskArray(DiskImages(large)), batch_size=16, precision="fp32")
    return _status_kb("VmHWM") - before, features.shape[0]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
@pytest.mark.pipeline
def test_memory_of_disk_feature_extraction_does_not_grow_with_the_images(tmp_path: Path) -> None:
    """A fresh process extracts features of 256 images, then of 4096 (48 MiB of pixels): its peak resident
    memory grows by far less than the pixels (reading them whole, or mapping the file, would add them)."""
    size = 64
    _write_cache(tmp_path / "small.npy", 256, size)
    _write_cache(tmp_path / "large.npy", 4096, size)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        growth_kb, n = pool.apply(_peak_growth, (tmp_path / "small.npy", tmp_path / "large.npy"))
    assert n == 4096
    assert growth_kb * 1024 < 4096 * 3 * size * size / 4, f"peak RSS grew by {growth_kb} kB"
    assert cache.DiskImages(tmp_path / "large.npy").shape == (4096, 3, size, size)


@pytest.mark.pipeline
def test_evaluate_under_torchrun_reads_the_disk_cache_the_ranks_share(manifest: Path, tmp_path: Path,
                                                                      torchrun_threads: None) -> None:
    """compute.images: disk with 2 processes: the ranks and the calling process share one cache per split
    (built once, under its lock) and extract the features of the in-memory stage in one process."""
    main = default_spec("evaluate", "prepared").main_variant
    (tmp_path / "pretrain" / main).mkdir(parents=True)
    torch.manual_seed(0)
    save_backbone(tmp_path / "pretrain" / main / "backbone.pt", timm.create_model(ARCH, num_classes=0))
    features = {}
    for storage, devices in (("memory", 1), ("disk", 2)):
        spec = default_spec("evaluate", "prepared", backbone__architecture=ARCH, backbone__image_size=SIZE,
                            compute__accelerator="cpu", compute__num_workers=0, compute__devices=devices,
                            compute__images=storage, probe__shots=[1, "all"], probe__draws=1,
                            finetune__batch_size=4, finetune__lrs=[0.01], finetune__patience=1,
                            finetune__engine__max_epochs=1, finetune__engine__warmup_epochs=0.0)
        root = tmp_path / storage
        paths = EvaluatePaths(manifest=str(manifest), pretrain_dir=str(tmp_path / "pretrain"),
                              noisy_dir=str(root / "noisy"), features_dir=str(root / "features"),
                              metrics=str(root / "evaluate.json"), plots_dir=str(root / "plots"))
        result = run(spec, "prepared", paths)
        features[storage] = load_features(Path(paths.features_dir) / f"{main}.npz").features
        if storage == "disk":
            assert isinstance(result.data.x_train, DiskArray) and isinstance(result.data.x_test, DiskArray)
    assert features["disk"].tobytes() == features["memory"].tobytes()
    left = sorted(p.suffix for p in (tmp_path / ".cache" / "images").iterdir())
    # one file per split and one of the source's unlabelled-only products, no temporary or lock left
    assert left == [".npy", ".npy", ".npy"]

"""Train/test overlap of a target: found by pixels or near-identical thumbnails, named file by file, dropped and
counted on request."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_fixtures import GROCERY_ROOT, default_spec

from retailnb.data.manifest import ManifestRow
from retailnb.evaluation.overlap import MAX_NAMED, OverlapError, find_overlap, resolve_overlap
from retailnb.evaluation.quickprobe import ProbeData
from retailnb.results.records import EvaluateRecord
from retailnb.results.markdown import target_heading
from retailnb.results.summary import summarize_target
from retailnb.stages.evaluate import EvaluatePaths, load_target


def probe_data(n_per_class: int = 3, copies: dict[int, int] | None = None) -> ProbeData:
    """Two classes of distinct random images; ``copies`` maps a training index to the test index it copies."""
    rng = np.random.default_rng(0)
    y_train = np.repeat([0, 1], n_per_class)
    y_test = np.array([0, 0, 1, 1])
    x_train = rng.integers(0, 256, (len(y_train), 8, 8, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (len(y_test), 8, 8, 3), dtype=np.uint8)
    for i, j in (copies or {}).items():
        x_train[i] = x_test[j]

    def rows(split: str, y: np.ndarray) -> list[ManifestRow]:
        return [ManifestRow(f"{split}/{c}/{k}.jpg", int(c), f"p{c}", split, f"probe_{split}") for k, c in enumerate(y)]

    return ProbeData(rows("train", y_train), rows("test", y_test), x_train, x_test, y_train, y_test, ["p0", "p1"])


def test_identical_pixels_are_found_and_distinct_images_are_not() -> None:
    assert find_overlap(probe_data(), 0.0) == []
    assert find_overlap(probe_data(copies={1: 0, 4: 3}), 0.0) == [(1, 0), (4, 3)]
    nearly = probe_data(copies={1: 0})
    nearly.x_train[1, 0, 0, 0] ^= 1  # one bit of one pixel differs: not identical pixels, the same thumbnail
    assert find_overlap(nearly, 0.0) == []
    assert find_overlap(nearly, 0.01) == [(1, 0)]


def photo(seed: int, size: int = 128) -> Image.Image:
    """A smooth photo-like image: a few coloured blobs on a gradient (JPEG keeps such images close)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.stack([xx * rng.uniform(50, 200), yy * rng.uniform(50, 200), (xx + yy) * rng.uniform(20, 100)], -1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.05, 0.2)]
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
        image[blob] = rng.uniform(0, 255, 3)
    return Image.fromarray(image.clip(0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def photo_data(train: list[Image.Image], test: list[Image.Image], size: int = 64) -> ProbeData:
    """Decoded at the backbone's size, as the evaluate stage decodes them; one product per test image."""
    def decode(images: list[Image.Image]) -> np.ndarray:
        return np.stack([np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)) for im in images])

    y_train, y_test = np.zeros(len(train), dtype=np.int64), np.zeros(len(test), dtype=np.int64)
    rows = [ManifestRow(f"train/{k}.jpg", 0, "p0", "train", "probe_train") for k in range(len(train))]
    tests = [ManifestRow(f"test/{k}.jpg", 0, "p0", "test", "probe_test") for k in range(len(test))]
    return ProbeData(rows, tests, decode(train), decode(test), y_train, y_test, ["p0"])


def test_a_re_encoded_or_resized_copy_is_found_within_the_distance_and_other_photos_are_not() -> None:
    """A JPEG re-save (quality 50) and a smaller copy of a test photo are that photo within 0.01; another
    photo, and the same photo with its colours swapped (a sibling of another colour), are not."""
    originals = [photo(seed) for seed in range(4)]
    smaller = originals[1].resize((96, 96), Image.BICUBIC)
    swapped = Image.fromarray(np.asarray(originals[2])[..., [2, 0, 1]])
    train = [jpeg(originals[0], 50), smaller, swapped, photo(10), photo(11)]
    data = photo_data(train, originals)
    assert find_overlap(data, 0.0) == []  # no pixel is identical
    assert find_overlap(data, 0.01) == [(0, 0), (1, 1)]
    assert find_overlap(data, 0.9) != find_overlap(data, 0.01)  # the distance is what decides


def test_raise_names_every_duplicated_file_and_the_setting() -> None:
    data = probe_data(copies={1: 0, 4: 3})
    with pytest.raises(OverlapError) as error:
        resolve_overlap(data, "shop", "raise", 0.01)
    message = str(error.value)
    assert message.startswith("evaluate.targets.shop: 2 training image(s) are also test images")
    assert "train/0/1.jpg = test/0/0.jpg" in message and "train/1/4.jpg = test/1/3.jpg" in message
    assert "evaluate.on_overlap: drop" in message


def test_raise_names_the_first_pairs_and_counts_the_rest() -> None:
    n = MAX_NAMED + 3
    data = probe_data(n_per_class=n, copies={i: 0 for i in range(n)})
    with pytest.raises(OverlapError, match=f"{n} training image.*and 3 more"):
        resolve_overlap(data, "shop", "raise", 0.01)


def test_drop_removes_the_duplicates_from_training_only_and_counts_them() -> None:
    data = probe_data(copies={1: 0, 4: 3})
    kept, dropped = resolve_overlap(data, "shop", "drop", 0.01)
    assert dropped == 2 and len(kept.y_train) == 4 and [r.path for r in kept.train] == [
        "train/0/0.jpg", "train/0/2.jpg", "train/1/3.jpg", "train/1/5.jpg"]
    assert np.array_equal(kept.x_train, data.x_train[[0, 2, 3, 5]]) and kept.y_train.tolist() == [0, 0, 1, 1]
    assert kept.x_test is data.x_test and kept.classes == data.classes
    assert find_overlap(kept, 0.01) == []
    assert resolve_overlap(probe_data(), "shop", "drop", 0.01)[1] == 0


def test_drop_that_would_empty_a_product_says_which() -> None:
    data = probe_data(n_per_class=1, copies={1: 2})
    with pytest.raises(ValueError, match="no training image is left for p1"):
        resolve_overlap(data, "shop", "drop", 0.01)


@pytest.mark.parametrize("on_overlap", ["raise", "drop"])
def test_the_evaluate_stage_applies_evaluate_on_overlap(tmp_path: Path, on_overlap: str,
                                                       training_manifest: str) -> None:
    """A photo copied into both splits of an image-folder target, through the stage's spec (params.yaml's
    ``evaluate.overlap_distance``, which also finds identical pixels)."""
    root = tmp_path / "shop"
    rng = np.random.default_rng(1)
    for split, n in (("train", 3), ("test", 2)):
        for name in ("tea", "jam"):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / split / name / f"{i}.png")
    (root / "train" / "tea" / "copy.png").write_bytes((root / "test" / "tea" / "1.png").read_bytes())
    spec = default_spec("evaluate", "prepared", evaluate__on_overlap=on_overlap)
    spec = spec.model_copy(update={"target": spec.target.model_copy(update={"source": "imagefolder",
                                                                           "root": str(root)})})
    paths = EvaluatePaths(manifest=training_manifest, pretrain_dir="", noisy_dir="",
                          features_dir=str(tmp_path / "features"),
                          metrics="", plots_dir="")
    if on_overlap == "raise":
        with pytest.raises(OverlapError, match=r"train/tea/copy.png = .*test/tea/1.png"):
            load_target(spec, "shop", paths)
        return
    data, dropped, _ = load_target(spec, "shop", paths)
    assert dropped == 1 and len(data.y_train) == 6
    assert not any(r.path.endswith("copy.png") for r in data.train)
    record = EvaluateRecord(target="shop", target_source="imagefolder", methods={}, finetune={},
                            main_variant="m", n_classes=2, n_train=6, n_test=4,
                            n_overlap_dropped=dropped)
    assert target_heading("shop", summarize_target("shop", {0: record}, 0.95)).startswith(
        "### Target `shop`, imagefolder: 2 products, 6 training and 4 test images (1 more training images left out")


@pytest.mark.parametrize("distance", [0.0, 0.01])
def test_the_evaluate_stage_applies_evaluate_overlap_distance(tmp_path: Path, distance: float,
                                                             training_manifest: str) -> None:
    """A JPEG re-save of a test photo among the training photos of an image-folder target: found with the
    default distance (0.01, the YAML float of params.yaml), not with 0 (identical pixels only)."""
    root = tmp_path / "shop"
    for split, seeds in (("train", {"tea": [0, 1], "jam": [2, 3]}), ("test", {"tea": [4], "jam": [5]})):
        for name, numbers in seeds.items():
            (root / split / name).mkdir(parents=True)
            for seed in numbers:
                photo(seed).save(root / split / name / f"{seed}.png")
    jpeg(photo(4), 60).save(root / "train" / "tea" / "resaved.jpg", quality=95)
    spec = default_spec("evaluate", "prepared", evaluate__overlap_distance=distance)
    assert type(default_spec("evaluate", "prepared").overlap_distance) is float
    spec = spec.model_copy(update={"target": spec.target.model_copy(update={"source": "imagefolder",
                                                                           "root": str(root)})})
    paths = EvaluatePaths(manifest=training_manifest, pretrain_dir="", noisy_dir="",
                          features_dir=str(tmp_path / "features"),
                          metrics="", plots_dir="")
    if distance:
        with pytest.raises(OverlapError, match=r"train/tea/resaved.jpg = .*test/tea/4.png"):
            load_target(spec, "shop", paths)
    else:
        data, dropped, _ = load_target(spec, "shop", paths)
        assert dropped == 0 and len(data.y_train) == 5


@pytest.mark.real_data
@pytest.mark.skipif(not (GROCERY_ROOT / "dataset" / "classes.csv").is_file(), reason=f"no dataset at {GROCERY_ROOT}")
def test_the_grocery_store_dataset_has_no_near_duplicate_across_its_splits_at_the_default_distance(
        tmp_path: Path, training_manifest: str) -> None:
    """The default distance flags no photo of the real dataset's 2,640 training photos (and 81 catalogue images)
    against its 2,485 test photos at the backbone's size (the nearest pair lies at 0.157), and a JPEG re-save
    of its own test photos is flagged."""
    spec = default_spec("evaluate", "prepared")
    spec = spec.model_copy(update={"target": spec.target.model_copy(update={"source": "grocery_store",
                                                                           "root": str(GROCERY_ROOT)})})
    paths = EvaluatePaths(manifest=training_manifest, pretrain_dir="", noisy_dir="",
                          features_dir=str(tmp_path / "features"),
                          metrics="", plots_dir="")
    data, dropped, _ = load_target(spec, "grocery", paths)  # on_overlap: raise
    assert dropped == 0 and len(data.y_train) == 2640 + 81 and len(data.y_test) == 2485
    photos = [Image.fromarray(np.asarray(image)) for image in data.x_test[::250]]
    resaved = photo_data([jpeg(image, 70) for image in photos], photos, spec.backbone.image_size)
    assert find_overlap(resaved, spec.overlap_distance) == [(i, i) for i in range(len(photos))]

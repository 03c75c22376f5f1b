"""Train/test overlap of a target: found by pixels, named file by file, dropped and counted on request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_fixtures import default_spec

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
    assert find_overlap(probe_data()) == []
    assert find_overlap(probe_data(copies={1: 0, 4: 3})) == [(1, 0), (4, 3)]
    nearly = probe_data(copies={1: 0})
    nearly.x_train[1, 0, 0, 0] ^= 1  # one bit of one pixel differs: another image
    assert find_overlap(nearly) == []


def test_raise_names_every_duplicated_file_and_the_setting() -> None:
    data = probe_data(copies={1: 0, 4: 3})
    with pytest.raises(OverlapError) as error:
        resolve_overlap(data, "shop", "raise")
    message = str(error.value)
    assert message.startswith("evaluate.targets.shop: 2 training image(s) are also test images")
    assert "train/0/1.jpg = test/0/0.jpg" in message and "train/1/4.jpg = test/1/3.jpg" in message
    assert "evaluate.on_overlap: drop" in message


def test_raise_names_the_first_pairs_and_counts_the_rest() -> None:
    n = MAX_NAMED + 3
    data = probe_data(n_per_class=n, copies={i: 0 for i in range(n)})
    with pytest.raises(OverlapError, match=f"{n} training image.*and 3 more"):
        resolve_overlap(data, "shop", "raise")


def test_drop_removes_the_duplicates_from_training_only_and_counts_them() -> None:
    data = probe_data(copies={1: 0, 4: 3})
    kept, dropped = resolve_overlap(data, "shop", "drop")
    assert dropped == 2 and len(kept.y_train) == 4 and [r.path for r in kept.train] == [
        "train/0/0.jpg", "train/0/2.jpg", "train/1/3.jpg", "train/1/5.jpg"]
    assert np.array_equal(kept.x_train, data.x_train[[0, 2, 3, 5]]) and kept.y_train.tolist() == [0, 0, 1, 1]
    assert kept.x_test is data.x_test and kept.classes == data.classes
    assert find_overlap(kept) == []
    assert resolve_overlap(probe_data(), "shop", "drop")[1] == 0


def test_drop_that_would_empty_a_product_says_which() -> None:
    data = probe_data(n_per_class=1, copies={1: 2})
    with pytest.raises(ValueError, match="no training image is left for p1"):
        resolve_overlap(data, "shop", "drop")


@pytest.mark.parametrize("on_overlap", ["raise", "drop"])
def test_the_evaluate_stage_applies_evaluate_on_overlap(tmp_path: Path, on_overlap: str) -> None:
    """A photo copied into both splits of an image-folder target, through the stage's spec."""
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
    paths = EvaluatePaths(manifest="", pretrain_dir="", noisy_dir="", features_dir=str(tmp_path / "features"),
                          metrics="", plots_dir="")
    if on_overlap == "raise":
        with pytest.raises(OverlapError, match=r"train/tea/copy.png = .*test/tea/1.png"):
            load_target(spec, "shop", paths)
        return
    data, dropped = load_target(spec, "shop", paths)
    assert dropped == 1 and len(data.y_train) == 6
    assert not any(r.path.endswith("copy.png") for r in data.train)
    record = EvaluateRecord(target="shop", target_source="imagefolder", methods={}, finetune={},
                            main_variant="m", n_classes=2, n_train=6, n_test=4,
                            n_overlap_dropped=dropped)
    assert target_heading("shop", summarize_target("shop", {0: record}, 0.95)).startswith(
        "### Target `shop`, imagefolder: 2 products, 6 training and 4 test images (1 more training images left out")

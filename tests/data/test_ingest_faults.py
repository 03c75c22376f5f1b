"""Ingest says what it does: a folder inside a class folder, a class that loses every image, one class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retailnb.data.adapters import DatasetError
from retailnb.data.folder import build_image_folder_manifest
from retailnb.data.manifest import read_manifest


def image(path: Path, level: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 24, 3), level, dtype=np.uint8)).save(path)
    return path


def test_a_folder_inside_a_class_folder_is_the_layout_error_not_a_silent_omission(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for name in ("a", "b"):
        image(root / "train" / name / "good.png")
    image(root / "train" / "a" / "sub" / "good.png")
    with pytest.raises(DatasetError, match=r"train/a/sub: a folder inside a class folder"):
        build_image_folder_manifest(root, tmp_path / "m.csv", on_error="raise", workers=1)
    assert not (tmp_path / "m.csv").exists()
    report = build_image_folder_manifest(root, tmp_path / "m.csv", on_error="skip", workers=1)
    assert any(Path(s.path).name == "sub" for s in report.skipped)


def test_a_class_whose_only_image_is_bad_leaves_contiguous_labels_and_a_report_that_agrees(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for name in ("a", "c"):
        image(root / "train" / name / "good.png")
    (root / "train" / "b").mkdir(parents=True)
    (root / "train" / "b" / "bad.png").write_bytes(b"not an image")
    report = build_image_folder_manifest(root, tmp_path / "m.csv", on_error="skip", workers=1)
    rows = read_manifest(tmp_path / "m.csv").records
    assert sorted({(r.class_name, r.label) for r in rows}) == [("a", 0), ("c", 1)]
    assert report.n_classes == 2


def test_a_one_class_dataset_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for i in range(3):
        image(root / "train" / "only" / f"{i}.png")
    with pytest.raises(DatasetError, match="one class only .'only'.: a classifier needs at least 2"):
        build_image_folder_manifest(root, tmp_path / "m.csv", on_error="raise", workers=1)
    assert not (tmp_path / "m.csv").exists()

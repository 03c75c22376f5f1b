"""Tests of the downstream targets: the data stage's catalogue or a dataset read by its adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError
from shared_fixtures import default_part, default_spec

from retailnb.config.evaluate import TargetSpec
from retailnb.data.images import ImageError
from retailnb.data.manifest import read_manifest
from retailnb.evaluation.targets import target_manifest
from retailnb.stages.evaluate import EvaluatePaths, load_target


INGEST = {"on_error": "raise", "min_size": 16}
"""The bad-input policy the evaluate stage passes (``data.on_error``, ``data.min_size``)."""


def target(**fields: str) -> TargetSpec:
    """The params.yaml ``prepared`` target with ``fields`` replaced."""
    return default_part(TargetSpec, "evaluate.targets.prepared", **fields)


def test_prepared_target_is_the_data_stage_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "prepared" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("x\n")
    assert target_manifest("main", target(), manifest, tmp_path / "work", **INGEST) == manifest
    assert not (tmp_path / "work").exists()


def test_prepared_target_without_the_data_stage_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.csv.*run the data stage"):
        target_manifest("main", target(), tmp_path / "missing.csv", tmp_path / "work", **INGEST)


def write_shop(root: Path) -> Path:
    """An image-folder target: tea and jam, 3 training and 2 test images each."""
    for split, n in (("train", 3), ("test", 2)):
        for name in ("tea", "jam"):
            for i in range(n):
                (root / split / name).mkdir(parents=True, exist_ok=True)
                colour = (10 * i + (100 if split == "test" else 0), 80 if name == "tea" else 200, 160)
                Image.new("RGB", (20, 20), colour).save(root / split / name / f"{i}.png")
    return root


def test_image_folder_target_maps_train_and_test_splits_to_the_probe(tmp_path: Path) -> None:
    root = write_shop(tmp_path / "shop")
    path = target_manifest("shop", target(source="imagefolder", root=str(root)), tmp_path / "unused.csv",
                           tmp_path / "work", **INGEST)
    assert path == tmp_path / "work" / "manifest.csv"
    manifest = read_manifest(path)
    train, test = manifest.select("probe_train"), manifest.select("probe_test")
    assert len(train) == 6 and len(test) == 4
    assert {r.class_name for r in train} == {r.class_name for r in test} == {"tea", "jam"}
    assert not list((tmp_path / "work").glob("*.png")), "a real dataset's images are never copied"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (dict(source="web"), "source"),
        (dict(source="imagefolder"), "root must name"),
        (dict(source="grocery_store", root="x", labels="medium"), "labels"),
        (dict(source="grocery_store", root="x", kinds="half"), "kinds"),
        (dict(source="imagefolder", root="x", kinds="odd"), "source 'imagefolder' takes kinds 'all'"),
        (dict(kinds="even"), "source 'prepared' takes kinds 'all'"),
    ],
)
def test_target_spec_rejects_bad_parameters(fields: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        target(**fields)


def test_missing_dataset_folder_names_the_parameter(tmp_path: Path) -> None:
    spec = target(source="grocery_store", root=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="evaluate.targets.t.root.*nowhere"):
        target_manifest("t", spec, tmp_path / "m.csv", tmp_path / "work", **INGEST)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_the_evaluate_stage_applies_data_on_error_and_min_size_to_a_real_target(tmp_path: Path, on_error: str,
                                                                               training_manifest: str) -> None:
    """``data.on_error`` and ``data.min_size`` reach a real target's ingest through the stage's spec."""
    root = write_shop(tmp_path / "shop")
    (root / "train" / "tea" / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (14, 14)).save(root / "test" / "jam" / "tiny.png")  # at least min_size 13: kept
    Image.new("RGB", (12, 12)).save(root / "test" / "jam" / "tinier.png")
    spec = default_spec("evaluate", "prepared", data__on_error=on_error, data__min_size=13)
    spec = spec.model_copy(update={"target": target(source="imagefolder", root=str(root))})
    paths = EvaluatePaths(manifest=training_manifest, pretrain_dir="", noisy_dir="",
                          features_dir=str(tmp_path / "features"), metrics="", plots_dir="")
    if on_error == "raise":
        with pytest.raises(ImageError, match="broken.png|tinier.png"):
            load_target(spec, "shop", paths)
        assert not (tmp_path / "features" / "target" / "manifest.csv").exists()
        return
    data = load_target(spec, "shop", paths).data
    assert len(data.y_train) == 6  # broken.png skipped
    assert len(data.y_test) == 5  # tiny.png (14 px >= 13) kept, tinier.png (12 px) skipped

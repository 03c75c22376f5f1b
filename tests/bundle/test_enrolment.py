"""Enrolling products: product folders, held-out products, old/new scores, and the curve (the notebook runs in the session pipeline)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from retailnb.bundle.embed import embed, folder_features
from retailnb.bundle.fit import fit_probe, new_bundle
from retailnb.bundle.model import Bundle
from retailnb.data.adapters import DatasetError
from retailnb.data.inputs import image_files, product_folders
from retailnb.data.images import ImageError
from retailnb.bundle.enrolment import (
    enrolment_curve,
    enrolment_table,
    hold_out_classes,
    score_old_new,
)
from shared_fixtures import colour_images, write_colour_folder

SIZE = 32


def write_folder(root: Path, names: list[str], per_class: int = 2) -> Path:
    return write_colour_folder(root, names, per_class)


@pytest.fixture(scope="module")
def base() -> Bundle:
    torch.manual_seed(0)
    return new_bundle("test_resnet", image_size=SIZE)


def test_product_folders_and_their_layout_errors(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "shop", ["red", "blue"])
    (root / "red" / "notes.txt").write_text("not an image")  # skipped: not an image extension
    (root / ".hidden").mkdir()
    found = product_folders(root)
    assert list(found) == ["blue", "red"] and all(len(v) == 2 for v in found.values())
    with pytest.raises(DatasetError, match="not a folder"):
        product_folders(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"2 image\(s\) directly in the folder"):
        product_folders(root / "red")
    (root / "green").mkdir()
    with pytest.raises(DatasetError, match="green: product folder without images"):
        product_folders(root)
    split = write_folder(tmp_path / "data" / "train", ["red"])
    with pytest.raises(DatasetError, match="pass one split's folder"):
        product_folders(split.parent)


def test_image_files_expands_folders_in_order(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "shop", ["red", "blue"])
    single = root / "blue" / "1.jpg"
    files = image_files([single, root])
    assert files[0] == single and len(files) == 4  # the file named first, then the folder, each once
    with pytest.raises(FileNotFoundError, match="no such image file or folder"):
        image_files([tmp_path / "missing.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        image_files([tmp_path / "empty"])


def test_folder_features_names_each_image_and_its_source(base: Bundle, tmp_path: Path) -> None:
    root = write_folder(tmp_path / "shop", ["red", "blue"], per_class=3)
    features, names, source = folder_features(base, root)
    assert features.shape == (6, base.feature_dim) and names == ["blue"] * 3 + ["red"] * 3
    assert source["images_per_product"] == {"blue": 3, "red": 3} and len(source["files_sha256"]) == 64
    (root / "red" / "9.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ImageError, match="9.jpg"):
        folder_features(base, root)


def test_hold_out_classes_is_seeded_and_checked() -> None:
    names = [f"p{i}" for i in range(8)]
    old, new = hold_out_classes(names, 3, seed=0)
    assert len(new) == 3 and sorted(old + new) == names and (old, new) == hold_out_classes(names, 3, seed=0)
    assert hold_out_classes(names, 3, seed=1) != (old, new)
    with pytest.raises(ValueError, match="n_new must be an integer between 1 and 6"):
        hold_out_classes(names, 7, seed=0)


def test_score_old_new_counts_unknown_new_products_as_wrong(base: Bundle) -> None:
    images, labels = colour_images(["red", "blue"], 3, seed=0)
    shop = fit_probe(base, embed(base, images), labels)
    test, test_names = colour_images(["red", "blue", "black"], 2, seed=1)
    scores = score_old_new(shop, embed(shop, test), test_names, ["black"])
    assert scores == {"old_accuracy": 1.0, "new_accuracy": 0.0, "accuracy": 4 / 6, "n_old": 4, "n_new": 2}
    with pytest.raises(ValueError, match="neither in the bundle nor in new_classes"):
        score_old_new(shop, embed(shop, test), test_names, [])


def test_enrolment_curve_learns_new_products(base: Bundle) -> None:
    old, new = ["red", "green", "blue", "yellow"], ["black", "white"]
    images, labels = colour_images(old, 3, seed=0)
    shop = fit_probe(base, embed(base, images), labels)
    new_images, new_names = colour_images(new, 3, seed=1)
    test, test_names = colour_images(old + new, 2, seed=2)
    rows, final = enrolment_curve(shop, new_images, new_names, embed(shop, test), test_names, shots=[1, 3], seed=0)
    assert [r["shots"] for r in rows] == [0, 1, 3] and [r["n_images"] for r in rows] == [0, 2, 6]
    assert rows[0]["new_accuracy"] == 0.0 and rows[0]["old_accuracy"] == 1.0
    assert all(r["new_accuracy"] == 1.0 and r["old_accuracy"] == 1.0 and r["seconds"] > 0 for r in rows[1:])
    assert final.class_names == (*sorted(old), *new) and len(final.labels) == 12 + 6
    table = enrolment_table(rows)
    assert table.splitlines()[1].split()[0] == "before" and len(table.splitlines()) == 4

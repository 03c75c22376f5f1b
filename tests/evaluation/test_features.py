"""Features are cached to one npz file per split: a round trip, atomic writes, and bad files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retailnb.evaluation.features import load_features, save_features


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(5, 4)).astype(np.float32)
    labels = np.array([0, 2, 1, -1, 2])
    path = save_features(
        tmp_path / "sub" / "feats.npz", feats, labels, ["a", "b", "c"], model="resnet18", size=np.int64(64)
    )
    loaded = load_features(path)
    np.testing.assert_array_equal(loaded.features, feats)
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.features.dtype == np.float32 and loaded.labels.dtype == np.int64
    assert loaded.class_names == ["a", "b", "c"]
    assert loaded.meta == {"model": "resnet18", "size": 64}
    assert [p.name for p in path.parent.iterdir()] == ["feats.npz"]  # no temporary file left behind


def test_failed_save_leaves_previous_file_intact(tmp_path: Path) -> None:
    path = tmp_path / "feats.npz"
    save_features(path, np.ones((2, 3)), np.array([0, 1]), ["a", "b"], version=1)
    with pytest.raises(TypeError):
        save_features(path, np.zeros((2, 3)), np.array([0, 1]), ["a", "b"], version=object())
    assert load_features(path).meta == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["feats.npz"]


def test_save_rejects_mismatched_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels must have shape"):
        save_features(tmp_path / "f.npz", np.ones((3, 2)), np.array([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="labels must lie"):
        save_features(tmp_path / "f.npz", np.ones((2, 2)), np.array([0, 2]), ["a", "b"])


def test_load_rejects_other_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", x=np.ones(3))
    with pytest.raises(ValueError, match="not a retailnb feature file"):
        load_features(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="cannot read"):
        load_features(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        load_features(tmp_path / "missing.npz")

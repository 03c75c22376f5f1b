"""Look-alike groups and the photos a real dataset keeps out of training for the rejection thresholds
(``data.calibration_folds``): retailnb.data.lookalikes and its use by the adapters and the data stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retailnb.data.adapters import DatasetError
from retailnb.data.folder import build_image_folder_manifest
from retailnb.data.lookalikes import LOOK_ALIKE_GROUPS, calibration_share, thumbnails
from retailnb.data.manifest import EVALUATION_ROLES, read_manifest
from retailnb.data.prepare import prepare_dataset
from retailnb.data.statistics import describe_manifest

PRODUCTS, SESSIONS, PER_SESSION = 3, 3 * LOOK_ALIKE_GROUPS, 4
"""A product's train photos come in sessions of near-copies: one group of look-alikes per session."""


def test_thumbnails_are_the_mean_colour_of_each_block() -> None:
    x = np.zeros((1, 17, 16, 3), dtype=np.uint8)  # the 17th row is dropped
    x[0, :8, :8] = (40, 80, 120)  # the top-left 4x4 blocks
    x[0, 16] = 255
    t = thumbnails(x).reshape(8, 8, 3)
    assert t.dtype == np.float32 and (t[:4, :4] == (40, 80, 120)).all() and (t[4:] == 0).all() and (t[:, 4:] == 0).all()
    with pytest.raises(ValueError, match="H, W >= 8"):
        thumbnails(np.zeros((2, 4, 16, 3)))


def session_photos(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 16, 16, 3) photos of PRODUCTS products, each in SESSIONS sessions of PER_SESSION near-copies; their
    labels and sessions."""
    base = rng.integers(0, 256, size=(PRODUCTS, SESSIONS, 16, 16, 3)).astype(np.float64)
    noise = rng.normal(0, 2, size=(PRODUCTS, SESSIONS, PER_SESSION, 16, 16, 3))
    x = np.clip(base[:, :, None] + noise, 0, 255).astype(np.uint8).reshape(-1, 16, 16, 3)
    labels = np.repeat(np.arange(PRODUCTS), SESSIONS * PER_SESSION)
    sessions = np.tile(np.repeat(np.arange(SESSIONS), PER_SESSION), PRODUCTS)
    return x, labels, sessions


def test_the_calibration_share_is_whole_sessions_one_fold_in_k_of_each_product_and_seeded() -> None:
    x, labels, sessions = session_photos(np.random.default_rng(0))
    held = calibration_share(x, labels, 3, seed=0)
    for product in range(PRODUCTS):
        rows = labels == product
        for s in range(SESSIONS):
            assert len(set(held[rows & (sessions == s)])) == 1  # a session is held or trained on, whole
        assert held[rows].sum() == SESSIONS * PER_SESSION // 3  # one fold in three
    assert np.array_equal(held, calibration_share(x, labels, 3, seed=0))
    assert held.sum() != calibration_share(x, labels, 2, seed=0).sum()  # the folds are what it says
    small = calibration_share(x[:2], np.array([7, 8]), 3)
    assert small.all()  # a product with few photos keeps its first one out
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        calibration_share(x[:2], np.array([0, 0, 1]), 3)


def write_sessions(root: Path, rng: np.random.Generator) -> None:
    """root/train/<product>/<session>_<i>.png photos (sessions of near-copies) and two test photos a product."""
    x, labels, sessions = session_photos(rng)
    for i, (image, label, session) in enumerate(zip(x, labels, sessions)):
        path = root / "train" / f"p{label}" / f"s{session}_{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize((48, 48), Image.Resampling.NEAREST).save(path)
    for product in range(PRODUCTS):
        for i in range(2):
            path = root / "test" / f"p{product}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[labels == product][i]).save(path)


def test_an_image_folder_with_calibration_folds_keeps_whole_sessions_out_of_every_training_role(tmp_path) -> None:
    write_sessions(tmp_path / "shop", np.random.default_rng(1))
    plain = build_image_folder_manifest(tmp_path / "shop", tmp_path / "plain.csv", workers=1)
    report = build_image_folder_manifest(tmp_path / "shop", tmp_path / "held.csv", workers=1, calibration_folds=3)
    assert plain.n_held == 0 and report.n_held == PRODUCTS * SESSIONS * PER_SESSION // 3
    manifest = read_manifest(tmp_path / "held.csv")
    roles: dict[str, set[str]] = {}
    for row in manifest.records:
        roles.setdefault(row.path, set()).add(row.role)
    held = {path for path, r in roles.items() if r <= set(EVALUATION_ROLES)}
    train = {path for path in roles if "/train/" in path}
    assert held < train and len(held) == report.n_held  # only train photos, only probe_train
    assert all(roles[path] == {"probe_train"} for path in held)
    assert all(roles[path] == {"labelled", "monitor_train", "probe_train"} for path in train - held)
    assert all(roles[path] == {"unlabelled", "monitor_test", "probe_test"} for path in set(roles) - train)
    for path in held:  # every near-copy of a held photo is held too
        session = Path(path).name.split("_")[0]
        twins = {p for p in train if Path(p).parent == Path(path).parent and Path(p).name.startswith(session + "_")}
        assert twins <= held
    assert read_manifest(tmp_path / "plain.csv").role_counts()["probe_train"] == manifest.role_counts()["probe_train"]
    described = describe_manifest(manifest)
    assert described["probe_train_unseen"] == report.n_held
    assert describe_manifest(read_manifest(tmp_path / "plain.csv"))["probe_train_unseen"] == 0


def test_calibration_folds_refuse_one_and_the_synthetic_source(tmp_path) -> None:
    write_sessions(tmp_path / "shop", np.random.default_rng(1))
    with pytest.raises(ValueError, match="0 .* or at least 2, got 1"):
        prepare_dataset("imagefolder", tmp_path / "out", root=tmp_path / "shop", calibration_folds=1)
    with pytest.raises(ValueError, match="synthetic source"):
        prepare_dataset("synthetic", tmp_path / "out", calibration_folds=3)
    assert not (tmp_path / "out").exists()


def test_the_data_stage_applies_data_calibration_folds_from_params_yaml(tmp_path) -> None:
    """``data.calibration_folds`` arrives as the YAML integer and changes which photos train the backbone."""
    from shared_fixtures import default_spec, repo_params

    from retailnb.stages import data as data_stage

    assert type(repo_params()["data"]["calibration_folds"]) is int
    write_sessions(tmp_path / "shop", np.random.default_rng(2))
    counts = {}
    for folds in (0, 3):
        spec = default_spec("data", data__source="imagefolder", data__root=str(tmp_path / "shop"),
                            data__calibration_folds=folds)
        assert type(spec.data.calibration_folds) is int
        paths = data_stage.DataPaths(out_dir=str(tmp_path / f"out{folds}"), metrics=str(tmp_path / f"{folds}.json"))
        record, manifest = data_stage.run(spec, paths)
        counts[folds] = (manifest.role_counts()["labelled"], record.probe_train_unseen)
    n_train = PRODUCTS * SESSIONS * PER_SESSION
    assert counts == {0: (n_train, 0), 3: (n_train - n_train // 3, n_train // 3)}
    with pytest.raises(ValueError, match="synthetic source"):
        default_spec("data", data__calibration_folds=3)


def test_a_dataset_whose_every_photo_is_unusable_still_fails_before_any_grouping(tmp_path, files) -> None:
    files.text(tmp_path / "shop" / "train" / "p0" / "a.png")
    with pytest.raises(DatasetError, match="no usable images"):
        build_image_folder_manifest(tmp_path / "shop", tmp_path / "m.csv", on_error="skip", workers=1,
                                    calibration_folds=3)


@pytest.mark.parametrize("folds", [0, 3])
def test_the_evaluation_chooses_its_thresholds_on_the_photos_the_data_stage_kept_out(tmp_path, caplog, folds) -> None:
    """The ``prepared`` target's photos that no training role holds become the rejection's ``calibrate``; with
    every photo trained on there are none, and the stage says so."""
    from shared_fixtures import default_spec

    from retailnb.stages.evaluate import EvaluatePaths, load_target

    write_sessions(tmp_path / "shop", np.random.default_rng(3))
    manifest = prepare_dataset("imagefolder", tmp_path / "prepared", root=tmp_path / "shop", calibration_folds=folds,
                               workers=1)
    paths = EvaluatePaths(manifest=str(manifest), pretrain_dir="", noisy_dir="", features_dir=str(tmp_path / "f"),
                          metrics="", plots_dir="")
    spec = default_spec("evaluate", "prepared", evaluate__on_overlap="drop")
    data, _, unseen = load_target(spec, "prepared", paths)
    rows = read_manifest(manifest)
    held = {rows.resolve(r) for r in rows.select("probe_train")} - {rows.resolve(r) for r in rows.select("labelled")}
    if folds:
        assert unseen is not None and unseen.sum() == len(held) > 0
        assert {rows.resolve(r) for r, u in zip(data.train, unseen) if u} == held
        assert "calibration_folds" not in caplog.text
    else:
        assert unseen is None and not held
        assert "every training photo of the target also trained the backbones" in caplog.text

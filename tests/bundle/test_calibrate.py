"""A bundle that knows which of its photos trained no backbone chooses its threshold on those (format 4):
fit_probe(calibrate=...), kept through saves and edits, and ``retailnb fit --trained-on MANIFEST``."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retailnb.bundle.cli import main
from retailnb.bundle.fit import (
    add_negatives,
    add_products,
    choose_rejection,
    fit_probe,
    new_bundle,
    remove_products,
)
from retailnb.bundle.info import CALIBRATE, BundleError, bundle_info, format_info
from retailnb.bundle.io import load_bundle, save_bundle
from retailnb.bundle.model import Bundle
from retailnb.bundle.predict import describe_bundle, predict_features
from retailnb.data.manifest import ManifestRow, write_manifest
from retailnb.models.checkpoint import save_backbone

SIZE, ARCH = 32, "test_resnet"
N_PRODUCTS = 8


@pytest.fixture(scope="module")
def base() -> Bundle:
    return new_bundle(ARCH, image_size=SIZE)


def memorised(rng: np.random.Generator, d: int) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray]:
    """A backbone that trained on most of a store's photos holds those tight around their product; the photos it
    did not see, and new shelf photos, scatter as much as each other. Returns the enrolled features, their
    names, which of them it did not see, and new photos with their product indices."""
    centres = rng.normal(size=(N_PRODUCTS, d)) * 3
    y_seen, y_unseen, y_new = (np.repeat(np.arange(N_PRODUCTS), n) for n in (45, 9, 40))
    seen = centres[y_seen] + 0.2 * rng.normal(size=(len(y_seen), d))
    unseen = centres[y_unseen] + 1.5 * rng.normal(size=(len(y_unseen), d))
    new = centres[y_new] + 1.5 * rng.normal(size=(len(y_new), d))
    features = np.concatenate([seen, unseen]).astype(np.float32)
    names = [f"p{c}" for c in np.concatenate([y_seen, y_unseen])]
    mask = np.arange(len(names)) >= len(y_seen)
    return features, names, mask, new.astype(np.float32), y_new


def accepted(bundle: Bundle, features: np.ndarray) -> float:
    return float(predict_features(bundle, features).known.mean())


def test_a_threshold_chosen_on_the_unseen_photos_keeps_the_recall_promise(base: Bundle, tmp_path: Path) -> None:
    shares = []  # of new photos accepted for the 0.95 asked, per draw: without and with the unseen photos
    for seed in range(5):
        features, names, unseen, new, _ = memorised(np.random.default_rng(seed), base.feature_dim)
        plain = fit_probe(base, features, names)
        held = fit_probe(base, features, names, calibrate=unseen)
        assert plain.calibrate is None and held.calibrate is not None and np.array_equal(held.calibrate, unseen)
        shares.append((accepted(plain, new), accepted(held, new)))
    without, with_unseen = np.array(shares).T
    assert (with_unseen > without).all() and without.mean() < 0.85 and with_unseen.mean() >= 0.92, shares
    assert held.probe is not None and plain.probe is not None
    np.testing.assert_array_equal(held.probe.coef, plain.probe.coef)  # the probe fits every photo either way
    # a mask of every photo is a backbone that saw none of them: look-alike folds, as without one
    everything = fit_probe(base, features, names, calibrate=np.ones(len(names), dtype=bool))
    assert everything.calibrate is None and everything.rejection == plain.rejection
    for bad, words in ((unseen[:-1], f"must be {len(names)} booleans"),
                       (unseen.astype(int), "booleans"), (np.zeros(len(names), dtype=bool), "marks none")):
        with pytest.raises(ValueError, match=words):
            fit_probe(base, features, names, calibrate=bad)
    # kept in the file (format 4), and by every edit that chooses the threshold again
    path = save_bundle(held, tmp_path / "held.bundle")
    with zipfile.ZipFile(path) as zf:
        assert CALIBRATE in zf.namelist() and json.loads(zf.read("bundle.json"))["format_version"] == 4
    loaded = load_bundle(path)
    assert loaded.calibrate is not None and np.array_equal(loaded.calibrate, unseen)
    assert bundle_info(path) == describe_bundle(loaded) and bundle_info(path)["n_calibration"] == unseen.sum()
    assert re.search(f"threshold photos +{unseen.sum()} of the {len(names)} training images",
                     format_info(bundle_info(path)))
    assert loaded.rejection == held.rejection
    with zipfile.ZipFile(save_bundle(plain, tmp_path / "plain.bundle")) as zf:
        assert CALIBRATE not in zf.namelist()
    assert bundle_info(tmp_path / "plain.bundle")["n_calibration"] is None
    assert "threshold photos" not in format_info(bundle_info(tmp_path / "plain.bundle"))
    negated = add_negatives(loaded, new[:5] + 10)
    assert negated.calibrate is not None and negated.probe is not None
    assert negated.rejection == choose_rejection(negated.features, negated.labels, negated.settings, negated.probe.c,
                                                 negated.negatives, unseen)
    more = add_products(held, new[:6] + 20, ["q"] * 6)
    assert more.calibrate is not None and more.calibrate.tolist() == [*unseen.tolist(), *[False] * 6]
    fewer = remove_products(held, ["p0"])
    keep = np.array([n != "p0" for n in names])
    assert fewer.calibrate is not None and np.array_equal(fewer.calibrate, unseen[keep])


def test_a_damaged_calibration_record_is_refused(base: Bundle, tmp_path: Path) -> None:
    features, names, unseen, _, _ = memorised(np.random.default_rng(1), base.feature_dim)
    held = fit_probe(base, features, names, calibrate=unseen)
    import dataclasses

    save_bundle(dataclasses.replace(held, calibrate=unseen[:-3]), tmp_path / "bad.bundle")
    with pytest.raises(BundleError, match="train/calibrate.npy of shape"):
        load_bundle(tmp_path / "bad.bundle")


def photo(path: Path, colour: tuple[int, int, int], rng: np.random.Generator) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_fit_trained_on_chooses_the_threshold_on_the_photos_the_manifest_kept_out(tmp_path: Path,
                                                                                   capsys: pytest.CaptureFixture[str]
                                                                                   ) -> None:
    import timm

    rng = np.random.default_rng(2)
    save_backbone(tmp_path / "backbone.pt", timm.create_model(ARCH, num_classes=0))
    shop = tmp_path / "shop"
    photos = [photo(shop / name / f"{i}.png", colour, rng)
              for name, colour in (("jam", (200, 40, 40)), ("tea", (40, 200, 40))) for i in range(8)]
    kept_out = {photos[0], photos[5], photos[8], photos[13]}
    rows = [ManifestRow(path=str(p), label=int(p.parent.name == "tea"), class_name=p.parent.name, split="train",
                        role=role) for p in photos for role in (("probe_train",) if p in kept_out else
                                                                 ("labelled", "probe_train"))]
    manifest = write_manifest(rows, tmp_path / "prepared" / "manifest.csv")
    common = ["fit", str(shop), "--backbone-weights", str(tmp_path / "backbone.pt"), "--architecture", ARCH,
              "--image-size", str(SIZE)]
    assert main([*common, "--out", str(tmp_path / "held.bundle"), "--trained-on", str(manifest)]) == 0
    said = capsys.readouterr().err
    assert f"the threshold is chosen on the 4 of 16 photos that {manifest} trains no backbone on" in said
    held = load_bundle(tmp_path / "held.bundle")
    order = [p.resolve() for name in ("jam", "tea") for p in sorted((shop / name).iterdir())]  # the folder's order
    assert held.calibrate is not None and [order[i] for i in np.flatnonzero(held.calibrate)] == sorted(
        p.resolve() for p in kept_out)
    history = held.provenance["history"][-1]
    assert history["source"]["trained_on"] == str(manifest.resolve())
    # every photo trained on: said, and the threshold comes from them all
    everything = [ManifestRow(path=str(p), label=0, class_name=p.parent.name, split="train", role="labelled")
                  for p in photos]
    write_manifest(everything, tmp_path / "all.csv")
    assert main([*common, "--out", str(tmp_path / "all.bundle"), "--trained-on", str(tmp_path / "all.csv")]) == 0
    assert "trained the backbone on all 16 photos" in capsys.readouterr().err
    assert load_bundle(tmp_path / "all.bundle").calibrate is None
    # a manifest that trains nothing, or none at all: refused before torch loads, naming it
    write_manifest([ManifestRow(path=str(p), label=0, class_name="x", split="test", role="probe_test")
                    for p in photos[:2]], tmp_path / "eval.csv")
    for path, words in ((tmp_path / "eval.csv", "trains no backbone"), (tmp_path / "none.csv", "manifest not found")):
        assert main([*common, "--out", str(tmp_path / "x.bundle"), "--trained-on", str(path)]) == 2
        assert words in capsys.readouterr().err and not (tmp_path / "x.bundle").exists()

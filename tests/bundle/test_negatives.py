"""Negatives: images a bundle must never name, kept in the bundle file, used by its scores, added and removed
with ``retailnb add-negatives`` / ``remove-negatives``."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retailnb.bundle.cli import main
from retailnb.bundle.embed import embed
from retailnb.bundle.fit import add_negatives, add_products, fit_probe, new_bundle, remove_negatives, remove_products
from retailnb.bundle.info import BUNDLE_FORMAT, NEGATIVES, bundle_info
from retailnb.bundle.io import load_bundle, save_bundle
from retailnb.bundle.model import Bundle, BundleError, ProbeSettings
from retailnb.bundle.predict import bundle_known_scores, describe_bundle, predict_features
from retailnb.evaluation.rejection import calibration_scores, threshold_at_recall
from retailnb.config.score_names import NEGATIVE_SCORES
from retailnb.models.backbone import create_backbone
from retailnb.models.checkpoint import save_backbone
from shared_fixtures import colour_images, write_colour_folder
from test_bundle import npy, rewrite_entry

SIZE = 32
OLD, NOT_SOLD = ["blue", "green", "red", "yellow"], ["black", "white"]


@pytest.fixture(scope="module")
def base() -> Bundle:
    torch.manual_seed(0)
    return new_bundle("test_resnet", image_size=SIZE)


@pytest.fixture(scope="module")
def shop(base: Bundle) -> Bundle:
    """A ``knn`` bundle of four colours."""
    images, labels = colour_images(OLD, 4, seed=0)
    fitted = fit_probe(dataclasses.replace(base, settings=ProbeSettings(rejection_score="knn")), embed(base, images),
                       labels)
    assert fitted.rejection is not None and fitted.rejection.score == "knn"
    return fitted


@pytest.fixture(scope="module")
def not_sold(shop: Bundle) -> np.ndarray:
    """Features of photos of two colours the shop does not sell (4 each)."""
    images, _ = colour_images(NOT_SOLD, 4, seed=1)
    return embed(shop, images)


def test_add_negatives_lowers_the_knn_score_of_images_like_them_and_chooses_the_threshold_again(
        shop: Bundle, not_sold: np.ndarray) -> None:
    black = not_sold[:4]
    negated = add_negatives(shop, black)
    assert negated.n_negatives == 4 and np.array_equal(negated.negatives, black)  # type: ignore[arg-type]
    assert shop.negatives is None and shop.n_negatives == 0  # the input bundle is untouched
    assert negated.probe is shop.probe and negated.class_names == shop.class_names  # the probe is not refitted

    more_black, _ = colour_images(["black"], 3, seed=7)
    known, _ = colour_images(OLD, 2, seed=8)
    like_negatives, enrolled = embed(shop, more_black), embed(shop, known)
    before, after = bundle_known_scores(shop, like_negatives), bundle_known_scores(negated, like_negatives)
    assert (after < before - 0.5).all(), (before, after)  # a black photo is now far less "known"
    drop_known = bundle_known_scores(shop, enrolled) - bundle_known_scores(negated, enrolled)
    assert drop_known.max() < (before - after).min()  # and the enrolled colours lose less than black does

    assert negated.rejection is not None and shop.rejection is not None
    expected = threshold_at_recall(calibration_scores("knn", shop.features, shop.labels, negatives=black), 0.95)
    assert negated.rejection.threshold == expected != shop.rejection.threshold
    assert predict_features(negated, like_negatives).answers == ["unknown"] * 3
    entry = negated.provenance["history"][-1]
    assert (entry["operation"], entry["n_images"], entry["n_negatives"]) == ("add_negatives", 4, 4)
    assert entry["rejection"]["threshold"] == expected and entry["c_from"] == "kept"

    twice = add_negatives(negated, not_sold[4:])  # added to those it holds
    assert twice.n_negatives == 8 and np.array_equal(twice.negatives, not_sold)  # type: ignore[arg-type]


def test_negatives_are_saved_and_loaded_and_info_counts_them(shop: Bundle, not_sold: np.ndarray, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    negated = add_negatives(shop, not_sold)
    path = save_bundle(negated, tmp_path / "shop.bundle")
    with zipfile.ZipFile(path) as zf:
        assert NEGATIVES in zf.namelist() and json.loads(zf.read("bundle.json"))["format_version"] == BUNDLE_FORMAT
    loaded = load_bundle(path)
    assert loaded.negatives is not None and loaded.negatives.dtype == np.float32
    np.testing.assert_array_equal(loaded.negatives, not_sold)
    assert loaded.rejection == negated.rejection
    np.testing.assert_array_equal(bundle_known_scores(loaded, not_sold), bundle_known_scores(negated, not_sold))
    assert bundle_info(path) == describe_bundle(loaded) == describe_bundle(negated)
    assert bundle_info(path)["n_negatives"] == 8
    assert save_bundle(loaded, tmp_path / "again.bundle").read_bytes() == path.read_bytes()  # reproducible
    with zipfile.ZipFile(save_bundle(shop, tmp_path / "plain.bundle")) as zf:
        assert NEGATIVES not in zf.namelist()  # no entry without negatives
    assert main(["info", str(path)]) == 0
    assert "negatives         8 images it never names (used by the prototype, knn and background scores)" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "plain.bundle")]) == 0
    assert "negatives         none" in capsys.readouterr().out


def test_negatives_survive_every_refit_and_remove_negatives_drops_them(base: Bundle, shop: Bundle,
                                                                       not_sold: np.ndarray) -> None:
    negated = add_negatives(shop, not_sold[:4])
    images, labels = colour_images(["white"], 3, seed=2)
    grown = add_products(negated, embed(shop, images), labels)
    shrunk = remove_products(grown, ["white"])
    images, labels = colour_images(["red", "blue"], 3, seed=3)
    refit = fit_probe(negated, embed(shop, images), labels)  # fit from a bundle replaces its products only
    for bundle in (grown, shrunk, refit):
        assert bundle.negatives is negated.negatives and bundle.rejection is not None
        assert bundle.provenance["history"][-1]["n_negatives"] == 4
        expected = calibration_scores("knn", bundle.features, bundle.labels, negatives=negated.negatives)
        assert bundle.rejection.threshold == threshold_at_recall(expected, 0.95)
    assert shrunk.rejection == negated.rejection  # the same products and negatives: the same threshold

    dropped = remove_negatives(negated)
    assert dropped.negatives is None and dropped.rejection == shop.rejection
    assert dropped.provenance["history"][-1]["operation"] == "remove_negatives"
    with pytest.raises(ValueError, match="holds no negatives"):
        remove_negatives(shop)
    empty = add_negatives(base, not_sold)  # a bundle without products keeps them for its first fit
    assert empty.rejection is None and empty.n_negatives == 8
    images, labels = colour_images(OLD, 4, seed=0)
    first = fit_probe(empty, embed(base, images), labels)
    assert first.n_negatives == 8 and first.rejection != shop.rejection


@pytest.mark.parametrize("score", ["msp", "energy", "mahalanobis", "relative_mahalanobis"])
def test_scores_that_do_not_use_negatives_keep_their_threshold(shop: Bundle, not_sold: np.ndarray, score: str) -> None:
    assert score not in NEGATIVE_SCORES
    b = dataclasses.replace(shop, settings=ProbeSettings(rejection_score=score))
    fitted = fit_probe(b, shop.features, [OLD[i] for i in shop.labels])
    negated = add_negatives(fitted, not_sold)
    assert negated.rejection == fitted.rejection
    np.testing.assert_array_equal(bundle_known_scores(negated, not_sold), bundle_known_scores(fitted, not_sold))


def test_add_negatives_checks_its_features(shop: Bundle) -> None:
    with pytest.raises(ValueError, match=r"negative features must be an \(N, 96\) array"):
        add_negatives(shop, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="no negatives"):
        add_negatives(shop, np.zeros((0, 96)))
    with pytest.raises(ValueError, match="finite"):
        add_negatives(shop, np.full((1, 96), np.nan))


def forged_header(_: bytes) -> bytes:
    """An ``.npy`` header that declares 10**12 rows over 64 bytes of data."""
    forged = io.BytesIO()
    np.lib.format.write_array_header_1_0(forged, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 96)})
    return forged.getvalue() + b"\0" * 64


CORRUPTIONS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "not finite": (lambda d: npy(np.full((8, 96), np.inf, dtype=np.float32)), f"{NEGATIVES} not finite"),
    "another width": (lambda d: npy(np.zeros((8, 95), dtype=np.float32)), f"{NEGATIVES} of shape (8, 95)"),
    "one dimension": (lambda d: npy(np.zeros(96, dtype=np.float32)), f"{NEGATIVES} of shape (96,)"),
    "text": (lambda d: npy(np.array(["a", "b"])), f"{NEGATIVES} of shape (2,) and type <U1"),
    "forged header": (forged_header, f"entry {NEGATIVES} declares more data than"),
}


@pytest.mark.parametrize("case", CORRUPTIONS, ids=list(CORRUPTIONS))
def test_a_corrupt_negatives_array_is_refused_on_load_naming_it(shop: Bundle, not_sold: np.ndarray, tmp_path: Path,
                                                                case: str) -> None:
    path = save_bundle(add_negatives(shop, not_sold), tmp_path / "shop.bundle")
    change, message = CORRUPTIONS[case]
    bad = rewrite_entry(path, tmp_path / "bad.bundle", NEGATIVES, change)
    with pytest.raises(BundleError, match=f"bad.bundle: .*{re.escape(message)}") as err:
        load_bundle(bad)
    assert "\n" not in str(err.value)


def test_a_flipped_byte_in_the_negatives_is_one_line_naming_the_file_and_entry(
        shop: Bundle, not_sold: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The zip's CRC-32 checks every entry on load: a damaged negatives array never reaches a score."""
    path = save_bundle(add_negatives(shop, not_sold), tmp_path / "shop.bundle")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        entry = zf.getinfo(NEGATIVES)
    data[entry.header_offset + 30 + len(entry.filename) + 200] ^= 0xFF  # inside the array's data
    flipped = tmp_path / "flipped.bundle"
    flipped.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=re.escape(f"Bad CRC-32 for file '{NEGATIVES}'")):
        load_bundle(flipped)
    photo = tmp_path / "photo.png"
    Image.fromarray(colour_images(["red"], 1, seed=0)[0][0]).save(photo)
    assert main(["predict", str(photo), "--bundle", str(flipped)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("retailnb predict: error: ") and str(flipped) in err and NEGATIVES in err
    assert err.count("\n") == 1 and "Traceback" not in err, err


def as_format_1(src: Path, dest: Path) -> Path:
    """A copy of a bundle without negatives as retailnb wrote it in format 1."""
    return rewrite_entry(src, dest, "bundle.json", lambda d: json.dumps({**json.loads(d), "format_version": 1}).encode())


def test_a_format_1_bundle_loads_without_negatives_and_takes_some(shop: Bundle, not_sold: np.ndarray,
                                                                  tmp_path: Path) -> None:
    old = as_format_1(save_bundle(shop, tmp_path / "new.bundle"), tmp_path / "old.bundle")
    loaded = load_bundle(old)
    assert loaded.negatives is None and loaded.rejection == shop.rejection
    np.testing.assert_array_equal(predict_features(loaded, not_sold).known, predict_features(shop, not_sold).known)
    info = bundle_info(old)
    assert info["format_version"] == 1 and info["n_negatives"] == 0
    again = save_bundle(add_negatives(loaded, not_sold), tmp_path / "old.bundle")  # written in this format
    assert bundle_info(again)["format_version"] == BUNDLE_FORMAT and load_bundle(again).n_negatives == 8


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shop folder, a backbone file, and photos of products it does not sell in nested folders (no product
    sub-folders needed)."""
    root = tmp_path_factory.mktemp("negatives")
    write_colour_folder(root / "shop", OLD, 4, seed=0, size=40)
    write_colour_folder(root / "not_sold" / "aisle_3", ["black"], 3, seed=1, size=40)
    write_colour_folder(root / "not_sold", ["white"], 2, seed=2, size=40)
    write_colour_folder(root / "shelf", ["black"], 3, seed=5, size=40)
    torch.manual_seed(0)
    save_backbone(root / "backbone.pt", create_backbone("test_resnet"))
    return root


@pytest.fixture(scope="module")
def shop_file(data: Path) -> Path:
    out = data / "shop.bundle"
    assert main(["fit", str(data / "shop"), "--architecture", "test_resnet", "--backbone-weights",
                 str(data / "backbone.pt"), "--image-size", str(SIZE), "--rejection-score", "knn", "--out",
                 str(out)]) == 0
    return out


def copy_of(shop_file: Path, tmp_path: Path) -> Path:
    bundle = tmp_path / "shop.bundle"
    bundle.write_bytes(shop_file.read_bytes())
    return bundle


def test_cli_add_negatives_embeds_every_image_under_a_folder(data: Path, shop_file: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    bundle = copy_of(shop_file, tmp_path)
    capsys.readouterr()
    assert main(["predict", str(data / "shelf"), "--bundle", str(bundle), "--format", "json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert main(["add-negatives", str(data / "not_sold"), "--bundle", str(bundle)]) == 0  # in place
    err = capsys.readouterr().err
    assert "added 5 negative images (5 in all)" in err and "unknown-product rejection: knn score below" in err
    assert f"wrote {bundle}: 4 products, 16 training images, 5 negatives" in err
    negated, original = load_bundle(bundle), load_bundle(shop_file)
    assert negated.n_negatives == 5 and negated.rejection != original.rejection
    assert negated.probe is not None and original.probe is not None
    np.testing.assert_array_equal(negated.probe.coef, original.probe.coef)
    entry = negated.provenance["history"][-1]
    assert entry["operation"] == "add_negatives" and entry["source"]["inputs"] == [str((data / "not_sold").resolve())]
    assert main(["predict", str(data / "shelf"), "--bundle", str(bundle), "--format", "json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert all(a["known_score"] < b["known_score"] for a, b in zip(after, before))  # black photos: less known
    assert {r["answer"] for r in after} == {"unknown"}
    assert main(["info", str(bundle)]) == 0
    text = capsys.readouterr().out
    assert "negatives         5 images it never names" in text and "add_negatives: 5 images from " in text

    out = tmp_path / "other.bundle"
    assert main(["add-negatives", str(data / "not_sold" / "white"), "--bundle", str(bundle), "--out", str(out),
                 "--rejection-score", "msp", "--recall", "0.9"]) == 0
    expected = "the msp score does not use them (--rejection-score prototype, knn or background does)"
    assert expected in capsys.readouterr().err
    more = load_bundle(out)
    assert more.n_negatives == 7 and more.rejection is not None and (more.rejection.score, more.rejection.recall) == (
        "msp", 0.9)
    assert load_bundle(bundle).n_negatives == 5  # --out leaves the input alone

    assert main(["remove-negatives", "--bundle", str(bundle)]) == 0
    assert "removed 5 negative images" in capsys.readouterr().err
    dropped = load_bundle(bundle)
    assert dropped.negatives is None and dropped.rejection == original.rejection
    assert main(["remove-negatives", "--bundle", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert err == "retailnb remove-negatives: error: this bundle holds no negatives to remove\n"


def test_cli_add_negatives_follows_on_error_for_an_unreadable_image(data: Path, shop_file: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "not_sold"
    write_colour_folder(folder, ["black"], 3, seed=1, size=40)
    (folder / "black" / "1.jpg").write_bytes((folder / "black" / "0.jpg").read_bytes()[:100])  # cut short
    bundle = copy_of(shop_file, tmp_path)
    before = bundle.read_bytes()
    capsys.readouterr()
    assert main(["add-negatives", str(folder), "--bundle", str(bundle)]) == 2  # --on-error raise, the default
    err = capsys.readouterr().err
    assert "black/1.jpg: " in err and "(--on-error skip goes past unreadable images)" in err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert bundle.read_bytes() == before  # nothing written

    assert main(["add-negatives", str(folder), "--bundle", str(bundle), "--on-error", "skip"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 of 3 images that could not be read:" in err and "black/1.jpg" in err
    assert "added 2 negative images (2 in all)" in err and load_bundle(bundle).n_negatives == 2
    out = tmp_path / "out.bundle"
    assert main(["add-negatives", str(folder), "--bundle", str(bundle), "--on-error", "skip", "--out", str(out)]) == 0
    assert f"listed in {out}.errors.csv" in capsys.readouterr().err
    assert "black/1.jpg" in Path(f"{out}.errors.csv").read_text() and load_bundle(out).n_negatives == 4


def test_cli_add_negatives_checks_its_paths_before_loading_torch(data: Path, shop_file: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["add-negatives", str(tmp_path / "none"), "--bundle", str(shop_file)]) == 2
    assert "no such image file or folder" in capsys.readouterr().err
    assert main(["add-negatives", str(data / "not_sold"), "--bundle", str(tmp_path / "none.bundle")]) == 2
    assert "bundle not found" in capsys.readouterr().err
    photo = data / "not_sold" / "white" / "0.jpg"
    assert main(["add-negatives", str(data / "not_sold"), "--bundle", str(shop_file), "--out", str(photo)]) == 2
    assert "is an input" in capsys.readouterr().err


def test_fit_help_offers_every_score_and_names_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    """``--rejection-score`` offers the scores the package computes, and its help names the default a new
    bundle gets."""
    from retailnb.bundle.choices import DEFAULT_REJECTION_SCORE
    from retailnb.config.score_names import BUNDLE_SCORES

    assert ProbeSettings().rejection_score == DEFAULT_REJECTION_SCORE
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default: the bundle's, {DEFAULT_REJECTION_SCORE} for a new one)" in help_text
    assert "{" + ",".join(BUNDLE_SCORES) + "}" in help_text

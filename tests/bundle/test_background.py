"""The ``background`` rejection score in a bundle: a probe over the products and the bundle's negatives as one
more class, fitted with every change, saved in the file (format 3), refused without negatives."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from retailnb.bundle.cli import main
from retailnb.bundle.embed import embed
from retailnb.bundle.fit import add_negatives, add_products, fit_probe, remove_negatives
from retailnb.bundle.info import BUNDLE_FORMAT, bundle_info
from retailnb.bundle.io import load_bundle, save_bundle
from retailnb.bundle.model import Bundle, BundleError
from retailnb.bundle.predict import bundle_known_scores, predict_features
from retailnb.evaluation.rejection import (
    background_fit,
    calibration_scores,
    known_scores,
    logistic_fit,
    threshold_at_recall,
)
from shared_fixtures import colour_images
from test_bundle import rewrite_entry
from test_negatives import OLD, base, copy_of, data, not_sold, shop, shop_file  # noqa: F401 (fixtures)


def with_score(bundle: Bundle, score: str) -> Bundle:
    """``bundle`` whose next refit rejects with ``score``."""
    return dataclasses.replace(bundle, settings=dataclasses.replace(bundle.settings, rejection_score=score))


@pytest.fixture(scope="module")
def backed(shop: Bundle, not_sold: np.ndarray) -> Bundle:
    """The shop with its negatives, rejecting with ``background``."""
    return add_negatives(with_score(shop, "background"), not_sold)


def test_the_bundle_scores_and_calibrates_background_as_the_evaluation_does(
        backed: Bundle, not_sold: np.ndarray) -> None:
    assert backed.probe is not None and backed.background is not None and backed.rejection is not None
    k, d = len(backed.class_names), backed.feature_dim
    assert backed.background.coef.shape == (k + 1, d) and backed.background.c == backed.probe.c
    fit = logistic_fit(backed.probe.c, seed=backed.settings.seed)
    known, _ = colour_images(OLD, 2, seed=8)
    photos = embed(backed, known)
    expected = known_scores("background", logits=background_fit(fit, backed.features, backed.labels, not_sold)(photos))
    np.testing.assert_allclose(bundle_known_scores(backed, photos), expected, atol=1e-6)
    calibration = calibration_scores("background", backed.features, backed.labels, fit=fit, negatives=not_sold)
    assert backed.rejection.score == "background"
    assert backed.rejection.threshold == threshold_at_recall(calibration, 0.95)
    like_negatives, _ = colour_images(["black", "white"], 3, seed=7)
    assert predict_features(backed, embed(backed, like_negatives)).answers == ["unknown"] * 6


def test_every_change_refits_the_background_probe(shop: Bundle, backed: Bundle, not_sold: np.ndarray) -> None:
    assert backed.background is not None
    black = add_negatives(with_score(shop, "background"), not_sold[:4])  # not_sold: 4 black, then 4 white
    images, names = colour_images(["white"], 4, seed=3)
    grown = add_products(black, embed(black, images), names)
    assert grown.background is not None and grown.background.coef.shape[0] == len(grown.class_names) + 1 == 6
    more = add_negatives(backed, not_sold[:2])
    assert more.background is not None and not np.array_equal(more.background.coef, backed.background.coef)
    other = add_negatives(with_score(backed, "prototype"), not_sold[:2])
    assert other.background is None and other.rejection is not None and other.rejection.score == "prototype"


def test_background_is_refused_without_negatives_and_keeps_its_negatives(shop: Bundle, backed: Bundle) -> None:
    images, names = colour_images(OLD, 4, seed=0)
    with pytest.raises(ValueError, match="background rejection score needs negatives.*add-negatives"):
        fit_probe(with_score(shop, "background"), embed(shop, images), names)
    with pytest.raises(ValueError, match="rejects with the background score.*--rejection-score SCORE"):
        remove_negatives(backed)
    dropped = remove_negatives(with_score(backed, "knn"))
    assert dropped.negatives is None and dropped.background is None and dropped.rejection is not None
    assert dropped.rejection.score == "knn"


def test_the_background_probe_is_saved_and_loaded_and_a_format_2_bundle_loads_without_it(
        backed: Bundle, shop: Bundle, tmp_path: Path) -> None:
    path = save_bundle(backed, tmp_path / "backed.bundle")
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("bundle.json"))
        assert meta["format_version"] == BUNDLE_FORMAT == 4 and "background/coef.npy" in zf.namelist()
    loaded = load_bundle(path)
    assert loaded.background is not None and backed.background is not None
    np.testing.assert_array_equal(loaded.background.coef, backed.background.coef)
    features = backed.features[:5]
    np.testing.assert_allclose(bundle_known_scores(loaded, features), bundle_known_scores(backed, features), rtol=1e-12)
    assert bundle_info(path)["rejection"]["score"] == "background"

    def as_format_2(data: bytes) -> bytes:
        meta = json.loads(data)
        meta.pop("background")
        return json.dumps({**meta, "format_version": 2}).encode()

    saved = save_bundle(shop, tmp_path / "shop.bundle")
    old = rewrite_entry(saved, tmp_path / "old.bundle", "bundle.json", as_format_2)
    assert load_bundle(old).background is None and load_bundle(old).rejection == shop.rejection
    lost = rewrite_entry(path, tmp_path / "lost.bundle", "bundle.json",
                         lambda data: json.dumps({**json.loads(data), "background": None}).encode())
    with pytest.raises(BundleError, match="background score without its background probe"):
        load_bundle(lost)


def test_cli_background_needs_negatives_and_remove_negatives_moves_off_it(
        data: Path, shop_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new.bundle"
    assert main(["fit", str(data / "shop"), "--backbone-weights", str(data / "backbone.pt"), "--architecture",
                 "test_resnet", "--image-size", "32", "--rejection-score", "background", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "background rejection score needs negatives" in err and "embedding" not in err and not out.exists()

    bundle = copy_of(shop_file, tmp_path)
    assert main(["add-products", str(data / "shelf"), "--bundle", str(bundle), "--out", str(out),
                 "--rejection-score", "background"]) == 2
    err = capsys.readouterr().err
    assert "background rejection score needs negatives" in err and "embedding" not in err and not out.exists()
    assert main(["add-negatives", str(data / "not_sold"), "--bundle", str(bundle), "--rejection-score",
                 "background"]) == 0
    assert "unknown-product rejection: background score below" in capsys.readouterr().err
    assert main(["predict", str(data / "shelf"), "--bundle", str(bundle), "--format", "json"]) == 0
    assert {row["answer"] for row in json.loads(capsys.readouterr().out)} == {"unknown"}  # black, like a negative
    assert main(["remove-negatives", "--bundle", str(bundle)]) == 2
    assert "rejects with the background score, which needs its negatives" in capsys.readouterr().err
    assert load_bundle(bundle).n_negatives == 5  # refused: the file is unchanged
    assert main(["remove-negatives", "--bundle", str(bundle), "--rejection-score", "prototype"]) == 0
    dropped = load_bundle(bundle)
    assert dropped.negatives is None and dropped.rejection is not None and dropped.rejection.score == "prototype"

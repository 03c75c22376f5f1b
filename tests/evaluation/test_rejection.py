"""Unknown-product rejection: the scores and thresholds of retailnb.evaluation.rejection, and the bundle that keeps them."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold

from retailnb.bundle.fit import add_products, check_new_products, fit_probe, new_bundle, remove_products
from retailnb.bundle.io import load_bundle, save_bundle
from retailnb.bundle.model import DEFAULT_REJECTION_SCORE, UNKNOWN, Bundle, ClassNameError, ProbeSettings
from retailnb.bundle.predict import describe_bundle, predict_features
from retailnb.evaluation.rejection import (
    GROUP_METRICS,
    REJECTION_METRICS,
    Reference,
    SOURCE_METRICS,
    calibration_folds,
    calibration_scores,
    evaluate_rejection,
    group_metrics,
    known_scores,
    logistic_fit,
    rejection_cells,
    rejection_metrics,
    source_metrics,
    split_known_unknown,
    threshold_at_recall,
    unseen_photos,
)
from retailnb.config.score_names import SCORES
from retailnb.data.lookalikes import LOOK_ALIKE_GROUPS, near_copy_folds

SIZE = 32
N_CLASSES, PER_CLASS = 5, 8


def clusters(rng: np.random.Generator, centres: np.ndarray, per_class: int, noise: float = 0.5
             ) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` noisy features around each centre, and their class indices."""
    labels = np.repeat(np.arange(len(centres)), per_class)
    return centres[labels] + noise * rng.normal(size=(len(labels), centres.shape[1])), labels


@pytest.fixture(scope="module")
def base() -> Bundle:
    torch.manual_seed(0)
    return new_bundle("test_resnet", image_size=SIZE)


@pytest.fixture(scope="module")
def centres(base: Bundle) -> np.ndarray:
    """Well separated class centres in the backbone's feature space: 5 enrolled, 2 to add later, 1 never."""
    return np.random.default_rng(0).normal(size=(N_CLASSES + 3, base.feature_dim)) * 3


@pytest.fixture(scope="module")
def shop(base: Bundle, centres: np.ndarray) -> Bundle:
    x, y = clusters(np.random.default_rng(1), centres[:N_CLASSES], PER_CLASS)
    return fit_probe(base, x, [f"p{i}" for i in y])


# --------------------------------------------------------------------------------------------------
# retailnb.evaluation.rejection
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recall", [0.5, 0.8, 0.95, 1.0])
def test_threshold_is_the_largest_that_reaches_the_recall(recall: float) -> None:
    scores = np.random.default_rng(0).normal(size=200)
    threshold = threshold_at_recall(np.concatenate([scores, [np.nan] * 7]), recall)  # NaN: skipped
    assert threshold in scores and np.mean(scores >= threshold) >= recall
    # the largest such threshold: the next higher score accepts too few
    assert np.mean(scores >= threshold) < recall + 1 / len(scores)
    if recall < 1.0:
        assert np.mean(scores >= scores[scores > threshold].min()) < recall
    # 20 scores at 95%: the second smallest accepts 19 of them, so it is the threshold, not the smallest
    assert threshold_at_recall(np.arange(20.0), 0.95) == 1.0


def test_threshold_without_any_score_accepts_everything_and_recall_is_checked() -> None:
    assert threshold_at_recall(np.array([np.nan, np.nan]), 0.9) == -math.inf
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="recall"):
            threshold_at_recall(np.ones(3), bad)


def sessions(rng: np.random.Generator, centres: np.ndarray, n_sessions: int, per_session: int,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Photos of each product in ``n_sessions`` sessions of ``per_session`` near-copies (a product varies
    from session to session, hardly within one): features, class indices, and each photo's session."""
    k, d = centres.shape
    session_centres = centres[:, None] + rng.normal(size=(k, n_sessions, d))
    x = session_centres[:, :, None] + 0.05 * rng.normal(size=(k, n_sessions, per_session, d))
    labels = np.repeat(np.arange(k), n_sessions * per_session)
    return x.reshape(-1, d), labels, np.tile(np.repeat(np.arange(n_sessions), per_session), k)


def test_near_copy_folds_keep_each_session_together_and_a_small_product_deals_its_images_out() -> None:
    rng = np.random.default_rng(2)
    n_sessions = 3 * LOOK_ALIKE_GROUPS  # one group of look-alikes per session
    x, y, session = sessions(rng, rng.normal(size=(4, 16)) * 3, n_sessions, 4)
    n = len(y)
    x, y = np.concatenate([x, rng.normal(size=(3, 16))]), np.concatenate([y, [4, 4, 5]])  # 2 images, 1 image
    fold = near_copy_folds(x, y, 3, seed=0)
    for product in range(4):
        rows = y[:n] == product
        assert {len(set(fold[:n][rows & (session == s)])) for s in range(n_sessions)} == {1}  # a session: one fold
        per_fold = np.bincount([fold[:n][rows & (session == s)][0] for s in range(n_sessions)], minlength=3)
        assert per_fold.tolist() == [LOOK_ALIKE_GROUPS] * 3  # and as many sessions in each fold
    assert sorted(fold[n:n + 2]) == [0, 1] and fold[n + 2] == 0
    with pytest.raises(ValueError, match="2 folds"):
        near_copy_folds(x, y, 1)


@pytest.mark.parametrize("score", ["knn", "mahalanobis"])
def test_a_threshold_from_look_alike_folds_holds_on_a_new_session_where_shuffled_folds_fail(score: str) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 32)) * 2
    n_train = 3 * LOOK_ALIKE_GROUPS
    x, y, session = sessions(rng, centres, n_train + 4, 3)
    train, test = session < n_train, session >= n_train  # a shelf photo is a new session
    calibration = calibration_scores(score, x[train], y[train], folds=3)
    new_photos = known_scores(score, features=x[test], reference=Reference(x[train], y[train], 6))
    accepted = (new_photos >= threshold_at_recall(calibration, 0.9)).mean()
    # shuffled folds: every held-out photo has near-copies in the other folds, so it looks more known
    shuffled = np.full(train.sum(), np.nan)
    for fit_rows, held in KFold(3, shuffle=True, random_state=0).split(x[train]):
        reference = Reference(x[train][fit_rows], y[train][fit_rows], 6)
        shuffled[held] = known_scores(score, features=x[train][held], reference=reference)
    accepted_shuffled = (new_photos >= threshold_at_recall(shuffled, 0.9)).mean()
    assert not np.isnan(calibration).any()
    assert accepted >= 0.85 and accepted_shuffled < 0.6, (accepted, accepted_shuffled)


def test_out_of_fold_scores_are_below_the_in_sample_ones_and_a_lone_image_is_nan() -> None:
    rng = np.random.default_rng(2)
    x, y = clusters(rng, rng.normal(size=(3, 16)), 4, noise=1.0)
    x, y = np.concatenate([x, rng.normal(size=(1, 16))]), np.concatenate([y, [3]])  # class 3: one image
    for score in ("prototype", "knn"):
        out_of_fold = calibration_scores(score, x, y)
        in_sample = known_scores(score, features=x, reference=Reference(x, y, 4))
        assert np.isnan(out_of_fold[-1]) and not np.isnan(out_of_fold[:-1]).any()
        assert (out_of_fold[:-1] < in_sample[:-1]).all()


def test_out_of_fold_probe_scores_differ_from_in_sample_ones() -> None:
    rng = np.random.default_rng(3)
    x, y = clusters(rng, rng.normal(size=(3, 16)), 6, noise=1.5)
    fit = logistic_fit(1.0)
    out_of_fold = calibration_scores("msp", x, y, fit=fit, folds=3)
    in_sample = known_scores("msp", logits=fit(x, y)(x))
    assert not np.isnan(out_of_fold).any()
    assert out_of_fold.mean() < in_sample.mean()  # the probe is over-confident on what it was fitted on


def test_auroc_is_one_on_separated_clusters_and_chance_on_one_distribution() -> None:
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(4, 32)) * 3
    x, y = clusters(rng, centres, 10)
    reference = Reference(x, y, 4)
    known_x, _ = clusters(rng, centres, 5)
    far = rng.normal(size=(20, 32)) * 3  # other directions altogether
    known = known_scores("prototype", features=known_x, reference=reference)
    unknown = known_scores("prototype", features=far, reference=reference)
    threshold = threshold_at_recall(calibration_scores("prototype", x, y), 0.95)
    metrics = rejection_metrics(known, unknown, np.ones(len(known), dtype=bool), threshold)
    assert metrics["auroc"] == 1.0 and metrics["unknown_rejection"] == 1.0
    same = rejection_metrics(rng.normal(size=2000), rng.normal(size=2000), np.ones(2000, dtype=bool), 0.0)
    assert abs(same["auroc"] - 0.5) < 0.05


@pytest.mark.parametrize("n_classes", [3, 4, 7, 20])
@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.99])
def test_split_known_unknown_keeps_two_known_and_one_unknown(n_classes: int, fraction: float) -> None:
    labels = np.repeat(np.arange(n_classes), 2)
    known, unknown = split_known_unknown(labels, fraction, seed=0)
    assert len(known) >= 2 and len(unknown) >= 1
    assert sorted([*known, *unknown]) == list(range(n_classes))
    assert np.array_equal(split_known_unknown(labels, fraction, seed=0)[0], known)  # seeded


def test_split_known_unknown_needs_three_classes() -> None:
    with pytest.raises(ValueError, match="at least 3 classes"):
        split_known_unknown(np.array([0, 1, 1]), 0.5, seed=0)


def target_features(seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training and test features of 8 well separated products (10 and 5 images each), and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, 32)) * 3
    x_train, y_train = clusters(rng, centres, 10)
    x_test, y_test = clusters(rng, centres, 5)
    return x_train, y_train, x_test, y_test


REJECTION_KW: dict[str, Any] = dict(fit=logistic_fit(1.0), unknown_fraction=0.25, recall=0.9, seed=0, folds=3)
FAR_SEED = 6
"""Seeds 30 features in other directions than every product's: the source products of the tests."""


def far_features() -> np.ndarray:
    return np.random.default_rng(FAR_SEED).normal(size=(30, 32)) * 3


def test_source_products_far_from_every_prototype_are_rejected_at_the_same_threshold() -> None:
    x_train, y_train, x_test, y_test = target_features()
    plain = evaluate_rejection(x_train, y_train, x_test, y_test, **REJECTION_KW)
    result = evaluate_rejection(x_train, y_train, x_test, y_test, f_source_unknown=far_features(), **REJECTION_KW)
    assert result["prototype"]["source_auroc"] > 0.99 and result["prototype"]["source_unknown_rejection"] > 0.95
    for score in SCORES:
        assert set(plain[score]) == {*REJECTION_METRICS, "closed_accuracy", "threshold"}  # no second set: no source measures
        # the second set adds its two measures and changes nothing else, the threshold included
        assert {k: v for k, v in result[score].items() if k not in SOURCE_METRICS} == plain[score]
        assert all(0.0 <= result[score][m] <= 1.0 for m in SOURCE_METRICS)


def test_more_recalls_measure_each_threshold_from_the_same_fits() -> None:
    x_train, y_train, x_test, y_test = target_features()
    kwargs = {**REJECTION_KW, "f_source_unknown": far_features()}
    result = evaluate_rejection(x_train, y_train, x_test, y_test, more_recalls=(0.5, 0.9, 1.0), **kwargs)
    for score in SCORES:
        at = result[score].pop("at_recall")
        assert list(at) == ["0.5", "0.9", "1"]
        # at the headline recall: the headline's measures; at any other: what a separate call at it measures
        assert at["0.9"] == {k: v for k, v in result[score].items() if k in at["0.9"]}
        for recall in (0.5, 1.0):
            alone = evaluate_rejection(x_train, y_train, x_test, y_test, **{**kwargs, "recall": recall})[score]
            assert at[f"{recall:g}"] == {k: v for k, v in alone.items() if k in at[f"{recall:g}"]}
        thresholds = [at[r]["threshold"] for r in at]
        assert thresholds == sorted(thresholds, reverse=True) and thresholds[0] > thresholds[-1], thresholds
    assert "at_recall" not in evaluate_rejection(x_train, y_train, x_test, y_test, **kwargs)["prototype"]


def test_given_folds_hold_out_fold_zero_only_and_a_negative_fold_is_only_fitted_on() -> None:
    rng = np.random.default_rng(4)
    x, y = clusters(rng, rng.normal(size=(3, 16)), 6, noise=1.0)
    fold_of = np.where(np.arange(len(y)) % 3 == 0, 0, -1)
    scores = calibration_scores("prototype", x, y, fold_of=fold_of)
    fitted = fold_of < 0
    expected = known_scores("prototype", features=x[~fitted], reference=Reference(x[fitted], y[fitted], 3))
    assert np.isnan(scores[fitted]).all()
    np.testing.assert_allclose(scores[~fitted], expected)
    with pytest.raises(ValueError, match="fold_of has shape"):
        calibration_scores("prototype", x, y, fold_of=fold_of[:-1])


def test_the_photos_no_backbone_saw_are_the_one_fold_scored_and_none_or_all_mean_look_alike_folds() -> None:
    paths = [Path(f"/shop/{i}.png") for i in range(5)]
    unseen = unseen_photos(paths, frozenset(paths[1:3]))
    assert unseen is not None and unseen.tolist() == [True, False, False, True, True]
    assert unseen_photos(paths, frozenset(paths)) is None and unseen_photos([], frozenset()) is None
    assert calibration_folds(unseen, 5).tolist() == [0, -1, -1, 0, 0]
    assert calibration_folds(None, 5) is None and calibration_folds(np.ones(5, dtype=bool), 5) is None
    for bad, words in ((unseen[:4], "must be 5 booleans"), (unseen.astype(int), "booleans"),
                       (np.zeros(5, dtype=bool), "marks none")):
        with pytest.raises(ValueError, match=words):
            calibration_folds(bad, 5)


def test_calibrating_on_photos_the_backbone_did_not_see_keeps_the_recall_promise() -> None:
    # a backbone that trained on most of the enrolled photos holds those tight around their product; the
    # photos it did not see, and new shelf photos, scatter as much as each other
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 32)) * 3
    x_seen, y_seen = clusters(rng, centres, 60, noise=0.3)
    x_unseen, y_unseen = clusters(rng, centres, 15, noise=1.5)
    x_test, y_test = clusters(rng, centres, 50, noise=1.5)
    x_train, y_train = np.concatenate([x_seen, x_unseen]), np.concatenate([y_seen, y_unseen])
    unseen = np.arange(len(y_train)) >= len(y_seen)
    kwargs = {**REJECTION_KW, "recall": 0.95}
    plain = evaluate_rejection(x_train, y_train, x_test, y_test, **kwargs)
    held = evaluate_rejection(x_train, y_train, x_test, y_test, calibrate=unseen, **kwargs)
    assert held["prototype"]["known_acceptance"] >= 0.93 and plain["prototype"]["known_acceptance"] < 0.85
    for score in SCORES:  # the thresholds move, nothing the fits score does
        assert held[score]["threshold"] != plain[score]["threshold"], score
        assert {k: v for k, v in held[score].items() if k in ("auroc", "closed_accuracy")} == {
            k: v for k, v in plain[score].items() if k in ("auroc", "closed_accuracy")}, score
    with pytest.raises(ValueError, match="calibrate has shape"):
        evaluate_rejection(x_train, y_train, x_test, y_test, calibrate=unseen[:-1], **kwargs)
    with pytest.raises(ValueError, match="marks none"):
        evaluate_rejection(x_train, y_train, x_test, y_test, calibrate=np.zeros(len(y_train), dtype=bool), **kwargs)


def test_source_products_like_the_known_ones_are_chance_and_rejected_as_often_as_known_photos() -> None:
    x_train, y_train, x_test, y_test = target_features()
    known_classes, _ = split_known_unknown(y_train, REJECTION_KW["unknown_fraction"], REJECTION_KW["seed"])
    same = x_test[np.isin(y_test, known_classes)]  # the known test photos' own features
    result = evaluate_rejection(x_train, y_train, x_test, y_test, f_source_unknown=same, **REJECTION_KW)
    for score in SCORES:
        assert result[score]["source_auroc"] == pytest.approx(0.5)
        assert result[score]["source_unknown_rejection"] == pytest.approx(1.0 - result[score]["known_acceptance"])
    with pytest.raises(ValueError, match="f_source_unknown has no rows"):
        evaluate_rejection(x_train, y_train, x_test, y_test, f_source_unknown=np.zeros((0, 32)), **REJECTION_KW)


def test_source_metrics_count_the_source_scores_below_the_threshold() -> None:
    # known 0.9 and 0.8 beat three of the four source scores, 0.7 two: 8 of the 12 pairs
    metrics = source_metrics(np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.75, 0.95, 0.2]), threshold=0.5)
    assert metrics == {"source_auroc": pytest.approx(8 / 12), "source_unknown_rejection": 0.5}
    with pytest.raises(ValueError, match="source-product score"):
        source_metrics(np.ones(3), np.array([]), 0.5)


def sibling_features() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], int, int]:
    """8 products as :func:`target_features`, but one held-out product is a near copy of an enrolled one of its
    group (a sibling) and the other is alone in its group: (features..., groups, sibling, new-group product)."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(8, 32)) * 3
    known, unknown = split_known_unknown(np.arange(8), REJECTION_KW["unknown_fraction"], REJECTION_KW["seed"])
    sibling, alone = int(unknown[0]), int(unknown[1])
    centres[sibling] = centres[known[0]] + 0.3 * rng.normal(size=32)  # another variant of an enrolled product
    groups = [f"kind{c}" for c in range(8)]
    groups[sibling] = groups[int(known[0])]
    x_train, y_train = clusters(rng, centres, 10)
    x_test, y_test = clusters(rng, centres, 5)
    return x_train, y_train, x_test, y_test, groups, sibling, alone


def test_held_out_siblings_and_products_of_new_groups_are_measured_apart() -> None:
    x_train, y_train, x_test, y_test, groups, _, _ = sibling_features()
    plain = evaluate_rejection(x_train, y_train, x_test, y_test, **REJECTION_KW)
    result = evaluate_rejection(x_train, y_train, x_test, y_test, groups=groups, **REJECTION_KW)
    assert (result["n_sibling"], result["n_new_group"]) == (1, 1)
    for score in ("prototype", "knn", "mahalanobis"):
        # the sibling looks like its enrolled kin; the product of a new group is far from every product
        assert result[score]["new_group_auroc"] > 0.99 > result[score]["sibling_auroc"] + 0.2
        # the held-out products' AUROC lies between its two parts
        assert result[score]["sibling_auroc"] < result[score]["auroc"] < result[score]["new_group_auroc"]
    for score in SCORES:
        # the groups add their two measures and change nothing else
        assert {k: v for k, v in result[score].items() if k not in GROUP_METRICS} == plain[score]
    assert set(rejection_cells(result)) == set(rejection_cells(plain)) | {
        f"reject_{s}_{m}" for s in SCORES for m in GROUP_METRICS}
    # every held-out product in an enrolled group: only the sibling measure
    same = [groups[0]] * 8
    only = evaluate_rejection(x_train, y_train, x_test, y_test, groups=same, **REJECTION_KW)
    assert (only["n_sibling"], only["n_new_group"]) == (2, 0)
    assert only["prototype"]["sibling_auroc"] == only["prototype"]["auroc"] and "new_group_auroc" not in only["prototype"]
    with pytest.raises(ValueError, match="groups names 7 classes; the labels go up to class index 7"):
        evaluate_rejection(x_train, y_train, x_test, y_test, groups=groups[:7], **REJECTION_KW)


def test_group_metrics_compare_the_known_scores_with_each_part() -> None:
    # known 0.9 and 0.8 beat both sibling scores but 0.85 one of them: 3 of 4 pairs; every new-group score: 1.0
    metrics = group_metrics(np.array([0.9, 0.8]), np.array([0.85, 0.1]), np.array([0.2, 0.3, 0.1]))
    assert metrics == {"sibling_auroc": pytest.approx(3 / 4), "new_group_auroc": 1.0}
    assert group_metrics(np.array([0.9]), np.array([]), np.array([0.95])) == {"new_group_auroc": 0.0}
    with pytest.raises(ValueError, match="held-out product"):
        group_metrics(np.ones(3), np.array([]), np.array([]))


def test_rejection_cells_carry_the_source_measures_only_when_measured() -> None:
    x_train, y_train, x_test, y_test = target_features()
    plain = rejection_cells(evaluate_rejection(x_train, y_train, x_test, y_test, **REJECTION_KW))
    assert set(plain) == {f"reject_{s}_{m}" for s in SCORES for m in REJECTION_METRICS}
    result = evaluate_rejection(x_train, y_train, x_test, y_test, f_source_unknown=far_features(), **REJECTION_KW)
    cells = rejection_cells(result)
    assert set(cells) == set(plain) | {f"reject_{s}_{m}" for s in SCORES for m in SOURCE_METRICS}
    assert cells["reject_prototype_source_auroc"] == result["prototype"]["source_auroc"]
    assert cells["reject_msp_source_unknown_rejection"] == result["msp"]["source_unknown_rejection"]
    assert {k: v for k, v in cells.items() if k in plain} == plain


# --------------------------------------------------------------------------------------------------
# The bundle
# --------------------------------------------------------------------------------------------------


def test_probe_settings_check_recall_and_score() -> None:
    for bad in (0.0, 1.01, True):
        with pytest.raises(ValueError, match="recall"):
            ProbeSettings(recall=bad)
    with pytest.raises(ValueError, match="rejection score 'maxlogit'"):
        ProbeSettings(rejection_score="maxlogit")


def test_fit_stores_the_threshold_of_its_own_held_out_scores(shop: Bundle, tmp_path: Path) -> None:
    r = shop.rejection
    assert r is not None and r.score == DEFAULT_REJECTION_SCORE and r.recall == 0.95 and r.active
    expected = threshold_at_recall(calibration_scores(DEFAULT_REJECTION_SCORE, shop.features, shop.labels), 0.95)
    assert r.threshold == expected
    assert shop.provenance["history"][-1]["rejection"] == {"score": DEFAULT_REJECTION_SCORE, "recall": 0.95, "threshold": expected}
    path = save_bundle(shop, tmp_path / "shop.bundle")
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("bundle.json"))["rejection"]["threshold"] == expected
    loaded = load_bundle(path)
    assert loaded.rejection == r and loaded.settings == shop.settings
    assert describe_bundle(loaded)["rejection"]["threshold"] == expected


def test_energy_threshold_comes_from_out_of_fold_probes(base: Bundle, centres: np.ndarray) -> None:
    x, y = clusters(np.random.default_rng(1), centres[:N_CLASSES], PER_CLASS)
    b = dataclasses.replace(base, settings=ProbeSettings(rejection_score="energy", recall=0.8))
    fitted = fit_probe(b, x, [f"p{i}" for i in y])
    assert fitted.rejection is not None and fitted.probe is not None and fitted.rejection.score == "energy"
    expected = threshold_at_recall(
        calibration_scores("energy", fitted.features, fitted.labels, fit=logistic_fit(fitted.probe.c, seed=0)), 0.8)
    assert fitted.rejection.threshold == pytest.approx(expected) and fitted.rejection.recall == 0.8
    predictions = predict_features(fitted, x)
    assert predictions.rejection_score == "energy" and predictions.known_scores is not None


def test_the_threshold_follows_added_and_removed_products(shop: Bundle, centres: np.ndarray) -> None:
    assert shop.rejection is not None
    x, y = clusters(np.random.default_rng(5), centres[N_CLASSES:N_CLASSES + 2], 3, noise=1.5)
    grown = add_products(shop, x, [f"new{i}" for i in y])
    assert grown.rejection is not None and grown.rejection.threshold != shop.rejection.threshold
    assert grown.rejection.threshold == threshold_at_recall(
        calibration_scores(DEFAULT_REJECTION_SCORE, grown.features, grown.labels), 0.95)
    assert grown.provenance["history"][-1]["rejection"]["threshold"] == grown.rejection.threshold
    shrunk = remove_products(grown, ["new0", "new1"])
    assert shrunk.rejection is not None and shrunk.rejection.threshold == shop.rejection.threshold
    fewer = remove_products(shop, ["p0", "p1"])
    assert fewer.rejection is not None and len(fewer.labels) < len(shop.labels)
    assert fewer.rejection.threshold == threshold_at_recall(
        calibration_scores(DEFAULT_REJECTION_SCORE, fewer.features, fewer.labels), 0.95)
    assert fewer.provenance["history"][-1]["rejection"]["threshold"] == fewer.rejection.threshold


def test_features_far_from_every_product_are_unknown(shop: Bundle, centres: np.ndarray) -> None:
    rng = np.random.default_rng(6)
    known_x, known_y = clusters(rng, centres[:N_CLASSES], 4, noise=0.2)  # closer to their products than training
    far, _ = clusters(rng, centres[-1:], 6)  # a product that was never enrolled
    predictions = predict_features(shop, np.concatenate([known_x, far]), k=2)
    assert predictions.known is not None and predictions.known_scores is not None
    assert predictions.known.tolist() == [True] * len(known_x) + [False] * len(far)
    assert predictions.answers == [f"p{i}" for i in known_y] + [UNKNOWN] * len(far)
    assert predictions.threshold == shop.rejection.threshold  # type: ignore[union-attr]
    assert [row[0] for row in predictions.names()][-1] != UNKNOWN  # the top-k still name products

    kept = predict_features(shop, far, reject=False)
    assert kept.known is not None and kept.known.all() and UNKNOWN not in kept.answers
    assert kept.threshold is None and np.array_equal(kept.known_scores, predictions.known_scores[-len(far):])


def _without_rejection(src: Path, dst: Path) -> Path:
    """A copy of a bundle file as retailnb wrote it before rejection: no threshold, no rejection settings."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "bundle.json":
                meta = json.loads(data)
                del meta["rejection"], meta["settings"]["rejection_score"], meta["settings"]["recall"]
                data = json.dumps(meta).encode()
            zout.writestr(item, data)
    return dst


def test_an_older_bundle_loads_with_rejection_off(shop: Bundle, centres: np.ndarray, tmp_path: Path) -> None:
    old = load_bundle(_without_rejection(save_bundle(shop, tmp_path / "new.bundle"), tmp_path / "old.bundle"))
    assert old.rejection is None and old.settings == ProbeSettings()
    far, _ = clusters(np.random.default_rng(7), centres[-1:], 3)
    predictions = predict_features(old, far)
    assert UNKNOWN not in predictions.answers and predictions.known_scores is None
    info = describe_bundle(old)["rejection"]
    assert info["active"] is False and "before unknown-product rejection" in info["note"]
    refitted = remove_products(old, ["p4"])  # any refit chooses a threshold
    assert refitted.rejection is not None and refitted.rejection.active


def test_a_product_named_unknown_is_refused(shop: Bundle, base: Bundle) -> None:
    with pytest.raises(ClassNameError, match="cannot be named 'unknown'"):
        check_new_products(shop, ["fresh", UNKNOWN])
    with pytest.raises(ClassNameError, match="cannot be named 'unknown'"):
        add_products(shop, np.ones((1, shop.feature_dim)), [UNKNOWN])
    with pytest.raises(ClassNameError, match="cannot be named 'unknown'"):
        fit_probe(base, np.random.default_rng(0).normal(size=(4, base.feature_dim)), ["a", "a", UNKNOWN, UNKNOWN])


@pytest.mark.parametrize("score", ["prototype", "msp"])
def test_one_packshot_per_product_fits_and_turns_rejection_off_with_a_warning(
        base: Bundle, centres: np.ndarray, score: str, caplog: pytest.LogCaptureFixture) -> None:
    b = dataclasses.replace(base, settings=ProbeSettings(rejection_score=score))
    x, y = clusters(np.random.default_rng(8), centres[:3], 1)
    with caplog.at_level(logging.WARNING, logger="retailnb.bundle"):
        fitted = fit_probe(b, x, [f"p{i}" for i in y], image_kind="catalogue")
    assert fitted.probe is not None and fitted.rejection is not None and not fitted.rejection.active
    assert "rejection is off" in caplog.text and "two or more images" in caplog.text
    entry = fitted.provenance["history"][-1]
    assert entry["enrolled_from"] == {f"p{i}": {"images": "catalogue", "n_images": 1} for i in range(3)}
    assert entry["rejection"]["threshold"] is None
    assert predict_features(fitted, x + 100).known.all()  # type: ignore[union-attr]
    two, labels = clusters(np.random.default_rng(9), centres[3:5], 2)  # two packshots each: scorable
    grown = add_products(fitted, two, [f"q{i}" for i in labels], image_kind="catalogue")
    assert grown.rejection is not None and (grown.rejection.active or score == "msp")
    assert grown.provenance["history"][-1]["enrolled_from"]["q0"] == {"images": "catalogue", "n_images": 2}


def test_an_unknown_image_kind_is_refused(shop: Bundle) -> None:
    with pytest.raises(ValueError, match="kind of enrolment images 'web'"):
        add_products(shop, np.ones((1, shop.feature_dim)), ["fresh"], image_kind="web")

"""The feature scores of retailnb.evaluation.rejection: kNN, Mahalanobis, relative Mahalanobis, and negatives."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from retailnb.evaluation.rejection import (
    Reference,
    background_fit,
    calibration_scores,
    evaluate_rejection,
    known_scores,
    logistic_fit,
    normalize,
    threshold_at_recall,
)
from retailnb.config.score_names import NEGATIVE_SCORES, PROBE_SCORES, SCORES, check_score

FEATURE_SCORES = tuple(s for s in SCORES if s not in PROBE_SCORES)


def clusters(rng: np.random.Generator, centres: np.ndarray, per_class: int, noise: float = 0.5
             ) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(len(centres)), per_class)
    return centres[labels] + noise * rng.normal(size=(len(labels), centres.shape[1])), labels


def test_every_score_is_named_and_an_unknown_one_is_refused_with_the_choices() -> None:
    assert set(SCORES) == {"msp", "energy", "prototype", "knn", "mahalanobis", "relative_mahalanobis"}
    assert set(NEGATIVE_SCORES) <= set(SCORES) and set(PROBE_SCORES) <= set(SCORES)
    with pytest.raises(ValueError, match="knn, mahalanobis, relative_mahalanobis"):
        check_score("knn_distance")


def test_knn_is_the_similarity_to_the_kth_nearest_enrolled_image() -> None:
    train = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x = np.array([[2.0, 0.0]])
    sims = normalize(x) @ normalize(train).T  # [1, 0, 0.707]
    for k, expected in ((1, 1.0), (2, sims[0, 2]), (3, 0.0)):
        reference = Reference(train, np.array([0, 1, 1]), 2, knn_k=k)
        assert known_scores("knn", features=x, reference=reference)[0] == pytest.approx(expected)
    with pytest.raises(ValueError, match="knn_k must be at least 1"):
        Reference(train, np.array([0, 1, 1]), 2, knn_k=0)


def test_mahalanobis_is_minus_the_shared_covariance_distance_to_the_nearest_class_mean() -> None:
    rng = np.random.default_rng(1)
    x, y = clusters(rng, rng.normal(size=(3, 6)) * 3, 20)
    unit = normalize(x)
    means = np.stack([unit[y == k].mean(axis=0) for k in range(3)])
    precision = LedoitWolf(assume_centered=True).fit(unit - means[y]).precision_
    q = rng.normal(size=(5, 6))
    uq = normalize(q)
    expected = -np.min([[(u - m) @ precision @ (u - m) for m in means] for u in uq], axis=1)
    reference = Reference(x, y, 3)
    assert np.allclose(known_scores("mahalanobis", features=q, reference=reference), expected)
    background = LedoitWolf().fit(unit)
    md0 = np.array([(u - background.location_) @ background.precision_ @ (u - background.location_) for u in uq])
    assert np.allclose(known_scores("relative_mahalanobis", features=q, reference=reference), expected + md0)


@pytest.mark.parametrize("score", FEATURE_SCORES)
def test_each_feature_score_separates_far_images_from_the_enrolled_products(score: str) -> None:
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(5, 32)) * 3
    x, y = clusters(rng, centres, 10)
    known, _ = clusters(rng, centres, 4)
    far = rng.normal(size=(30, 32)) * 3
    reference = Reference(x, y, 5)
    s_known = known_scores(score, features=known, reference=reference)
    s_far = known_scores(score, features=far, reference=reference)
    assert roc_auc_score(np.r_[np.ones(len(known)), np.zeros(len(far))], np.r_[s_known, s_far]) > 0.99


@pytest.mark.parametrize("score", FEATURE_SCORES)
def test_out_of_fold_thresholds_hold_their_recall_on_new_images_of_the_products(score: str) -> None:
    """The threshold chosen from the enrolled images' out-of-fold scores accepts about ``recall`` of new
    images of the same products (what the pipeline's known_acceptance measures on test)."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 16)) * 2
    x, y = clusters(rng, centres, 30, noise=1.0)
    new, _ = clusters(rng, centres, 200, noise=1.0)
    calibration = calibration_scores(score, x, y, folds=3)
    assert not np.isnan(calibration).any()
    threshold = threshold_at_recall(calibration, 0.9)
    accepted = (known_scores(score, features=new, reference=Reference(x, y, 6)) >= threshold).mean()
    assert 0.8 <= accepted <= 0.98


@pytest.mark.parametrize("score", NEGATIVE_SCORES)
def test_negatives_lower_the_score_of_images_like_them_and_not_of_the_products(score: str) -> None:
    """Outlier exposure: a store's images it does not sell make images like them score lower, the enrolled
    products' images almost unchanged, so the second set is told apart where it was not."""
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(6, 32)) * 3
    x, y = clusters(rng, centres[:4], 10)
    near = centres[:2] * 0.9 + centres[4:] * 0.1  # products that look like enrolled ones
    negatives, _ = clusters(rng, near, 10)
    lookalikes, _ = clusters(rng, near, 10)
    known, _ = clusters(rng, centres[:4], 5)
    plain, exposed = Reference(x, y, 4), Reference(x, y, 4, negatives=negatives)

    def auroc(reference: Reference) -> float:
        s = [known_scores(score, features=f, reference=reference) for f in (known, lookalikes)]
        return float(roc_auc_score(np.r_[np.ones(len(known)), np.zeros(len(lookalikes))], np.r_[s[0], s[1]]))

    assert auroc(plain) < 0.9 and auroc(exposed) > auroc(plain) + 0.05
    # the calibration subtracts the same nearest-negative similarity, so thresholds stay comparable
    assert np.allclose(calibration_scores(score, x, y, negatives=negatives) + (normalize(x) @ normalize(negatives).T).max(1),
                       calibration_scores(score, x, y), equal_nan=True)


def test_negatives_change_only_the_scores_that_use_them() -> None:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(8, 32)) * 3
    x_train, y_train = clusters(rng, centres, 10)
    x_test, y_test = clusters(rng, centres, 5)
    negatives = rng.normal(size=(20, 32)) * 3
    kw = dict(fit=logistic_fit(1.0), unknown_fraction=0.25, recall=0.9, seed=0, folds=3)
    plain = evaluate_rejection(x_train, y_train, x_test, y_test, **kw)
    exposed = evaluate_rejection(x_train, y_train, x_test, y_test, f_negatives=negatives, **kw)
    for score in SCORES:
        assert (exposed[score]["threshold"] != plain[score]["threshold"]) == (score in NEGATIVE_SCORES), score
    only = evaluate_rejection(x_train, y_train, x_test, y_test, scores=("knn",), **kw)
    assert only["knn"] == plain["knn"] and "msp" not in only


def test_the_knn_neighbour_reaches_the_reference() -> None:
    rng = np.random.default_rng(6)
    centres = rng.normal(size=(8, 32)) * 3
    x_train, y_train = clusters(rng, centres, 10)
    x_test, y_test = clusters(rng, centres, 5)
    kw = dict(fit=logistic_fit(1.0), unknown_fraction=0.25, recall=0.9, seed=0, folds=3, scores=("knn",))
    first = evaluate_rejection(x_train, y_train, x_test, y_test, knn_k=1, **kw)["knn"]
    fifth = evaluate_rejection(x_train, y_train, x_test, y_test, knn_k=5, **kw)["knn"]
    assert first["threshold"] > fifth["threshold"]  # the 5th neighbour is further than the 1st


def test_background_is_one_minus_the_probability_of_the_negatives_class() -> None:
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])  # two products, then the background class
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.allclose(known_scores("background", logits=logits), 1.0 - p[:, 2])
    assert check_score("prototype") and "background" not in SCORES  # no bundle offers it yet
    with pytest.raises(ValueError, match="background score needs the probe's logits"):
        known_scores("background", features=logits)


def test_background_tells_images_like_the_negatives_from_the_products_and_needs_negatives() -> None:
    """The probe with the store's negatives as one more class: held-out products that look like the
    negatives score low, new images of the enrolled products high, and its out-of-fold threshold keeps
    its recall; without negatives it is refused, naming what it needs."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(10, 32)) * 3
    x_train, y_train = clusters(rng, centres[:8], 10)
    x_test, y_test = clusters(rng, centres[:8], 10)
    negatives, _ = clusters(rng, centres[8:], 15)  # two products the store does not sell
    like_negatives, _ = clusters(rng, centres[8:], 10)
    kw = dict(fit=logistic_fit(1.0), unknown_fraction=0.25, recall=0.9, seed=0, folds=3)
    result = evaluate_rejection(x_train, y_train, x_test, y_test, f_negatives=negatives,
                                f_source_unknown=like_negatives, scores=("background", "prototype"), **kw)
    background = result["background"]
    assert background["source_auroc"] > 0.99 and background["source_unknown_rejection"] > 0.9
    assert abs(background["known_acceptance"] - 0.9) < 0.1
    calibration = calibration_scores("background", x_train, y_train, fit=logistic_fit(1.0), negatives=negatives)
    assert not np.isnan(calibration).any() and ((calibration > 0) & (calibration < 1)).all()
    with pytest.raises(ValueError, match="background score needs negatives"):
        evaluate_rejection(x_train, y_train, x_test, y_test, scores=("background",), **kw)
    with pytest.raises(ValueError, match="background score needs negatives"):
        calibration_scores("background", x_train, y_train, fit=logistic_fit(1.0))


def test_background_reads_normalised_features_so_a_feature_vector_s_length_does_not_count() -> None:
    """The background probe is fitted and applied on L2-normalised features: rescaling any image's feature
    vector (enrolled, negative or scored) leaves every background score as it was."""
    rng = np.random.default_rng(8)
    centres = rng.normal(size=(6, 16)) * 3
    x, y = clusters(rng, centres[:4], 8)
    negatives, _ = clusters(rng, centres[4:], 8)
    queries, _ = clusters(rng, centres, 3)

    def scores(scale: float) -> np.ndarray:
        factors = [rng.uniform(0.5, 2.0, size=(len(a), 1)) ** scale for a in (x, negatives, queries)]
        logits_of = background_fit(logistic_fit(1.0), x * factors[0], y, negatives * factors[1])
        return known_scores("background", logits=logits_of(queries * factors[2]))

    assert np.allclose(scores(0.0), scores(1.0), atol=1e-6)

"""Known answers for the logistic and k-NN probes, and C chosen on the training split alone."""

from __future__ import annotations

import numpy as np
import pytest

from retailnb.evaluation.probe import (
    FALLBACK_C,
    cv_folds,
    fit_logistic_probe,
    knn_accuracy,
    probe_accuracy,
)


def blobs(n_per_class: int, n_classes: int, dim: int, seed: int, spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian clusters around fixed class centres (the same centres for every seed)."""
    centres = np.random.default_rng(123).normal(size=(n_classes, dim)) * 3
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centres[y] + np.random.default_rng(seed).normal(size=(len(y), dim)) * spread
    return x, y


def correlated(n: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes one unit apart along feature 0, with noise correlated (``rho``) between features 0 and 1.

    With rho > 0 the best linear rule uses feature 1 to cancel the shared noise (about 94% accuracy at
    rho = 0.95), which a weakly regularised probe finds; a strongly regularised one (tiny C) stays close
    to the class-mean direction, feature 0 alone (about 69%). With rho < 0 the same weight on feature 1
    adds noise instead, so there the tiny C wins.
    """
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    noise = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=len(y))
    return noise + np.c_[y, np.zeros_like(y)].astype(float), y


def test_linearly_separable_set_is_classified_perfectly() -> None:
    x, y = blobs(20, 8, 16, seed=0)
    xt, yt = blobs(30, 8, 16, seed=1)
    result = probe_accuracy(x, y, xt, yt)
    assert result["accuracy"] == 1.0 and result["balanced_accuracy"] == 1.0 and result["top5"] == 1.0
    assert result["n_train"] == 160 and result["n_test"] == 240 and result["n_classes"] == 8
    assert result["cv_folds"] == 3 and result["fit_seconds"] > 0


def test_random_labels_give_chance_accuracy() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 10)), rng.integers(0, 10, 300)
    xt, yt = rng.normal(size=(1000, 10)), rng.integers(0, 10, 1000)
    result = probe_accuracy(x, y, xt, yt, cs=(0.1, 1.0))
    assert 0.05 < result["accuracy"] < 0.16  # chance is 0.10
    assert 0.4 < result["top5"] < 0.6  # chance is 0.50: top-5 really ranks five classes


def test_c_is_chosen_by_cross_validation_on_the_training_split() -> None:
    x, y = correlated(400, rho=0.95, seed=0)
    xt, yt = correlated(1000, rho=-0.95, seed=1)
    xt2, yt2 = correlated(1000, rho=0.95, seed=2)
    cs = (1e-3, 100.0)
    # On the first test split the tiny C scores better, so tuning C on the test data would pick it...
    tiny, large = (fit_logistic_probe(x, y, cs=(c,)).score(xt, yt) for c in cs)
    assert tiny > large + 0.03
    # ...but cross-validation on the training split picks the large C, whichever test split is given.
    assert probe_accuracy(x, y, xt, yt, cs=cs)["c"] == 100.0
    assert probe_accuracy(x, y, xt2, yt2, cs=cs)["c"] == 100.0
    # Other training data, on which every C is perfect, moves C to the tie-break (the smallest C).
    # (21 per class: every training fold is balanced, so a tiny C is not beaten by the intercept alone.)
    xb, yb = blobs(21, 2, 2, seed=0)
    assert probe_accuracy(xb, yb, xt, yt, cs=cs)["c"] == 1e-3


def test_cs_order_does_not_matter_and_ties_go_to_the_smallest_c() -> None:
    x, y = blobs(9, 3, 5, seed=0)  # separable: every C scores 100% in cross-validation
    assert fit_logistic_probe(x, y, cs=(10.0, 0.1, 1.0))[-1].C == 0.1


def test_one_shot_falls_back_to_a_fixed_c() -> None:
    x, y = blobs(1, 6, 8, seed=0)
    xt, yt = blobs(5, 6, 8, seed=1)
    result = probe_accuracy(x, y, xt, yt)
    assert result["c"] == FALLBACK_C and result["cv_folds"] == 0
    assert result["accuracy"] == 1.0
    assert probe_accuracy(x, y, xt, yt, fallback_c=0.5)["c"] == 0.5


def test_folds_shrink_to_the_smallest_class() -> None:
    y = np.array([0, 0, 1, 1, 1, 1])
    assert cv_folds(y, 3) == 2
    x, _ = blobs(2, 2, 4, seed=0)
    assert probe_accuracy(x, np.array([0, 0, 1, 1]), x, np.array([0, 0, 1, 1]))["cv_folds"] == 2


def test_probe_rejects_bad_splits() -> None:
    x, y = blobs(4, 3, 4, seed=0)
    with pytest.raises(ValueError, match="no training image"):
        probe_accuracy(x[y < 2], y[y < 2], x, y)
    with pytest.raises(ValueError, match="two classes"):
        fit_logistic_probe(x[y == 0], y[y == 0])
    with pytest.raises(ValueError, match="must have shape"):
        fit_logistic_probe(x, y[:-1])
    assert "top5" not in probe_accuracy(x, y, x, y)  # three classes: top-5 would always be 1


def test_knn_uses_cosine_similarity() -> None:
    # Test points are near the 45-degree direction of class 1 but close, in Euclidean terms, to class 0.
    x = np.array([[1.0, 0.0], [10.0, 10.0]])
    y = np.array([0, 1])
    xt = np.array([[1.2, 1.0], [0.9, 1.1]])
    yt = np.array([1, 1])
    assert knn_accuracy(x, y, xt, yt, k=1) == 1.0
    assert knn_accuracy(x, y, xt, yt, k=1, metric="euclidean") == 0.0


def test_knn_votes_over_k_neighbours() -> None:
    x = np.array([[1.0, 0.01], [1.0, 0.2], [1.0, 0.25], [1.0, 0.3], [1.0, 0.35], [0.0, 1.0]])
    y = np.array([0, 1, 1, 1, 1, 0])
    xt, yt = np.array([[1.0, 0.0]]), np.array([1])
    assert knn_accuracy(x, y, xt, yt, k=1) == 0.0  # the single nearest is class 0
    assert knn_accuracy(x, y, xt, yt, k=5) == 1.0  # four of the five nearest are class 1
    with pytest.raises(ValueError, match="k must be"):
        knn_accuracy(x, y, xt, yt, k=7)

"""Per-class shot sampling, leakage checks and the few-shot table with its summary."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from retailnb.evaluation.fewshot import (
    draw_seed,
    fewshot_eval,
    sample_shots,
    summarize_fewshot,
)
from retailnb.evaluation.probe import probe_accuracy

LABELS = np.repeat(np.arange(4), [12, 9, 3, 20])  # class 2 has only three images


def test_exact_count_per_class_and_all_of_a_small_class() -> None:
    idx = sample_shots(LABELS, 5, seed=0)
    assert Counter(LABELS[idx].tolist()) == {0: 5, 1: 5, 2: 3, 3: 5}
    assert len(np.unique(idx)) == len(idx)  # without replacement
    assert set(idx[LABELS[idx] == 2]) == set(np.flatnonzero(LABELS == 2))


def test_none_and_all_take_every_image() -> None:
    np.testing.assert_array_equal(sample_shots(LABELS, None, seed=3), np.arange(len(LABELS)))
    np.testing.assert_array_equal(sample_shots(LABELS, "all", seed=3), np.arange(len(LABELS)))


def test_same_seed_same_draw_other_seed_other_draw() -> None:
    a, b, c = sample_shots(LABELS, 2, seed=7), sample_shots(LABELS, 2, seed=7), sample_shots(LABELS, 2, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_smaller_samples_nest_in_larger_ones() -> None:
    one, five = sample_shots(LABELS, 1, seed=4), sample_shots(LABELS, 5, seed=4)
    assert set(one) <= set(five)


def test_no_test_index_is_ever_drawn() -> None:
    # A dataset with a split column: sampling sees the training labels only, and its positions map back.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    is_test = rng.random(200) < 0.4
    train_positions = np.flatnonzero(~is_test)
    for seed in range(20):
        drawn = train_positions[sample_shots(labels[train_positions], 3, seed)]
        assert not is_test[drawn].any()
        assert Counter(labels[drawn].tolist()) == {c: 3 for c in range(5)}


def test_bad_shots_are_rejected() -> None:
    for bad in (0, -1, 2.5, True, "some"):
        with pytest.raises(ValueError, match="shots"):
            sample_shots(LABELS, bad, seed=0)  # type: ignore[arg-type]


def separable(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(99).normal(size=(6, 8)) * 4
    y = np.repeat(np.arange(6), n_per_class)
    return centres[y] + np.random.default_rng(seed).normal(size=(len(y), 8)) * 0.3, y


def test_fewshot_rows_on_a_separable_set() -> None:
    x, y = separable(12, seed=0)
    xt, yt = separable(5, seed=1)
    rows = fewshot_eval(x, y, xt, yt, shots=(1, 4, None), draws=2, seed=0, probe_kw={"cs": (0.1, 1.0)})
    assert [(r["shots"], r["draw"]) for r in rows] == [(1, 0), (1, 1), (4, 0), (4, 1), ("all", 0)]
    assert [r["n_train"] for r in rows] == [6, 6, 24, 24, 72]
    assert all(r["probe_accuracy"] == 1.0 and r["knn_accuracy"] == 1.0 for r in rows)
    assert rows[0]["cv_folds"] == 0 and rows[2]["cv_folds"] == 3
    assert rows[3]["cv_folds"] == 0 and rows[3]["c"] == rows[2]["c"]  # draw 1 reuses draw 0's cross-validated C
    assert "probe_top5" in rows[0]
    # k-NN cannot ask for more neighbours than the six images of a 1-shot sample.
    assert [r["knn_k"] for r in fewshot_eval(x, y, xt, yt, shots=(1, None), draws=1, knn_k=10)] == [6, 10]


def test_draws_differ_and_repeat_with_the_seed() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 6)), np.repeat(np.arange(4), 30)
    xt, yt = rng.normal(size=(200, 6)), rng.integers(0, 4, 200)

    def run(seed: int) -> list[float]:
        rows = fewshot_eval(x, y, xt, yt, shots=(2,), draws=3, seed=seed, probe_kw={"cs": (1.0,)})
        return [r["probe_accuracy"] for r in rows]

    first = run(0)
    assert first == run(0)
    assert len(set(first)) > 1  # each draw is a different sample
    assert first != run(1)
    assert draw_seed(0, 1) != draw_seed(1, 0)  # not seed + draw


def test_an_image_in_both_splits_is_caught() -> None:
    x, y = separable(5, seed=0)
    xt, yt = separable(5, seed=1)
    xt[3] = x[7]  # the same image (features) in the test split
    with pytest.raises(ValueError, match="overlap"):
        fewshot_eval(x, y, xt, yt, shots=(None,))


def test_summary_means_and_standard_deviations() -> None:
    rows = [
        {"shots": 1, "draw": 0, "probe_accuracy": 0.5, "knn_accuracy": 0.2, "note": "x"},
        {"shots": 1, "draw": 1, "probe_accuracy": 0.7, "knn_accuracy": 0.4, "note": "y"},
        {"shots": "all", "draw": 0, "probe_accuracy": 0.9, "knn_accuracy": 0.8, "note": "z"},
    ]
    one, full = summarize_fewshot(rows)
    assert one["shots"] == 1 and one["draws"] == 2
    assert one["probe_accuracy_mean"] == pytest.approx(0.6)
    assert one["probe_accuracy_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert one["knn_accuracy_mean"] == pytest.approx(0.3)
    assert "note_mean" not in one and "draw_mean" not in one
    assert full == {
        "shots": "all",
        "draws": 1,
        "probe_accuracy_mean": 0.9,
        "probe_accuracy_std": 0.0,
        "knn_accuracy_mean": 0.8,
        "knn_accuracy_std": 0.0,
    }


def test_reused_c_is_the_first_draws_choice_and_every_draw_can_cross_validate() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(90, 5)), np.repeat(np.arange(3), 30)
    x[:, 0] += y * 0.6  # weakly separable: the cross-validated C depends on the images drawn
    xt, yt = rng.normal(size=(60, 5)), np.repeat(np.arange(3), 20)
    xt[:, 0] += yt * 0.6
    kw = {"cs": (0.001, 0.01, 0.1, 1.0, 10.0)}
    reused = fewshot_eval(x, y, xt, yt, shots=(6,), draws=4, seed=0, probe_kw=kw)
    each = fewshot_eval(x, y, xt, yt, shots=(6,), draws=4, seed=0, probe_kw=kw, reuse_c=False)
    untimed = lambda row: {k: v for k, v in row.items() if k != "fit_seconds"}  # noqa: E731
    assert untimed(reused[0]) == untimed(each[0])
    assert [r["cv_folds"] for r in reused] == [3, 0, 0, 0] and [r["cv_folds"] for r in each] == [3, 3, 3, 3]
    assert {r["c"] for r in reused} == {each[0]["c"]}
    assert len({r["c"] for r in each}) > 1, "the draws must disagree on C for this test to mean anything"
    # refitting draw d alone with draw 0's C reproduces the reused row: the draws differ only by their images
    for d in range(1, 4):
        idx = sample_shots(y, 6, draw_seed(0, d))
        alone = probe_accuracy(x[idx], y[idx], xt, yt, cs=(each[0]["c"],), seed=draw_seed(0, d))
        assert alone["accuracy"] == reused[d]["probe_accuracy"]

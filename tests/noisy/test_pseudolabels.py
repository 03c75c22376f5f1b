"""Known answers for pseudolabel selection, balancing, quality, the threshold curve, the table and plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from shared_fixtures import default_part  # noqa: E402

from retailnb.config.noisy import PseudolabelSpec  # noqa: E402
from retailnb.noisy.pseudolabels import (  # noqa: E402
    TABLE_COLUMNS,
    balance_cap,
    pseudolabel_quality,
    pseudolabel_table,
    read_pseudolabel_table,
    select_pseudolabels,
    selection_quality,
    sharpen,
    threshold_curve,
    write_pseudolabel_table,
)
from retailnb.plots.pseudolabels import rounds_plot, threshold_plot  # noqa: E402


def pseudo(**fields: object) -> PseudolabelSpec:
    """The params.yaml pseudolabel settings (``noisy.pseudo``) with ``fields`` replaced."""
    return default_part(PseudolabelSpec, "noisy.pseudo", **fields)


# Eight pool images, three classes. Confidence and argmax per row are in the comments.
PROBS = np.array(
    [
        [0.90, 0.05, 0.05],  # 0: class 0, 0.90
        [0.60, 0.30, 0.10],  # 1: class 0, 0.60
        [0.40, 0.35, 0.25],  # 2: class 0, 0.40 (below 0.5)
        [0.10, 0.80, 0.10],  # 3: class 1, 0.80
        [0.20, 0.70, 0.10],  # 4: class 1, 0.70
        [0.30, 0.50, 0.20],  # 5: class 1, 0.50 (exactly at 0.5: kept)
        [0.05, 0.15, 0.80],  # 6: class 2, 0.80
        [0.45, 0.10, 0.45],  # 7: tie between classes 0 and 2 -> class 0, 0.45
    ]
)
TRUTH = np.array([0, 1, 0, 1, 1, -1, 2, 2])  # row 1 and row 7 are wrong, row 5 unknown


def test_threshold_keeps_exactly_the_confident_rows_ordered_by_class_then_confidence() -> None:
    sel = select_pseudolabels(PROBS, pseudo(threshold=0.5, balance=False))
    assert sel.indices.tolist() == [0, 1, 3, 4, 5, 6]
    assert sel.labels.tolist() == [0, 0, 1, 1, 1, 2]
    np.testing.assert_allclose(sel.confidence, [0.9, 0.6, 0.8, 0.7, 0.5, 0.8])
    assert not sel.duplicate.any()


def test_threshold_zero_keeps_everything_and_ties_in_argmax_go_to_the_lower_class() -> None:
    sel = select_pseudolabels(PROBS, pseudo(threshold=0.0, balance=False))
    assert sorted(sel.indices.tolist()) == list(range(8))
    assert sel.labels[sel.indices.tolist().index(7)] == 0


def test_nothing_passes_a_threshold_above_every_confidence() -> None:
    sel = select_pseudolabels(PROBS, pseudo(threshold=0.95, min_per_class=3))
    assert sel.indices.shape == (0,) and sel.targets.shape == (0, 3)


def test_hard_targets_are_one_hot_of_the_label() -> None:
    sel = select_pseudolabels(PROBS, pseudo(threshold=0.5, balance=False))
    np.testing.assert_array_equal(sel.targets, np.eye(3)[sel.labels])


def test_soft_targets_at_temperature_one_are_the_teacher_probabilities() -> None:
    sel = select_pseudolabels(PROBS, pseudo(threshold=0.5, balance=False, soft=True))
    np.testing.assert_allclose(sel.targets, PROBS[sel.indices])
    np.testing.assert_array_equal(sel.labels, PROBS[sel.indices].argmax(axis=1))


def test_soft_targets_sum_to_one_and_are_sharper_for_a_lower_temperature() -> None:
    warm = select_pseudolabels(PROBS, pseudo(threshold=0.5, balance=False, soft=True, temperature=1.0))
    cold = select_pseudolabels(PROBS, pseudo(threshold=0.5, balance=False, soft=True, temperature=0.5))
    np.testing.assert_allclose(cold.targets.sum(axis=1), 1.0)
    assert np.all(cold.targets.max(axis=1) > warm.targets.max(axis=1))
    entropy = lambda p: -(p * np.log(p)).sum(axis=1)  # noqa: E731
    assert np.all(entropy(cold.targets) < entropy(warm.targets))
    np.testing.assert_allclose(cold.confidence, warm.confidence)  # confidence is the teacher's, unsharpened


def test_sharpen_known_answer_and_identity() -> None:
    np.testing.assert_allclose(sharpen(np.array([[0.5, 0.25, 0.25]]), 0.5), [[2 / 3, 1 / 6, 1 / 6]])
    np.testing.assert_allclose(sharpen(PROBS, 1.0), PROBS)
    flat = sharpen(np.array([[0.5, 0.25, 0.25]]), 1e6)
    np.testing.assert_allclose(flat, [[1 / 3] * 3], atol=1e-5)
    tiny = sharpen(np.array([[0.5, 0.49, 0.01, 0.0]]), 1e-4)  # no underflow to NaN
    np.testing.assert_allclose(tiny, [[1.0, 0.0, 0.0, 0.0]], atol=1e-12)
    with pytest.raises(ValueError, match="temperature"):
        sharpen(PROBS, 0.0)


# Class 0 keeps four images (confidences 0.9, 0.6, 0.8, 0.7 at indices 0..3), class 1 two, class 2 one,
# class 3 none (index 7 is below the threshold).
BALANCE_PROBS = np.array(
    [
        [0.90, 0.04, 0.03, 0.03],
        [0.60, 0.20, 0.10, 0.10],
        [0.80, 0.10, 0.05, 0.05],
        [0.70, 0.10, 0.10, 0.10],
        [0.10, 0.60, 0.15, 0.15],  # class 1, 0.60
        [0.05, 0.85, 0.05, 0.05],  # class 1, 0.85
        [0.10, 0.10, 0.70, 0.10],  # class 2, 0.70
        [0.20, 0.20, 0.20, 0.40],  # class 3, 0.40: dropped by the threshold
    ]
)


def test_derived_cap_is_the_median_and_keeps_the_most_confident_per_class() -> None:
    sel = select_pseudolabels(BALANCE_PROBS, pseudo(threshold=0.5))  # counts 4, 2, 1: median 2
    assert sel.indices.tolist() == [0, 2, 5, 4, 6]
    assert sel.labels.tolist() == [0, 0, 1, 1, 2]


def test_explicit_cap_keeps_the_most_confident_and_breaks_ties_by_index() -> None:
    sel = select_pseudolabels(BALANCE_PROBS, pseudo(threshold=0.5, max_per_class=3))
    assert sel.indices.tolist() == [0, 2, 3, 5, 4, 6]
    tied = np.array([[0.8, 0.2], [0.7, 0.3], [0.8, 0.2], [0.8, 0.2]])
    sel = select_pseudolabels(tied, pseudo(threshold=0.5, max_per_class=2))
    assert sel.indices.tolist() == [0, 2]


def test_balance_off_keeps_every_confident_image_once() -> None:
    sel = select_pseudolabels(BALANCE_PROBS, pseudo(threshold=0.5, balance=False, min_per_class=3))
    assert sel.indices.tolist() == [0, 2, 3, 1, 5, 4, 6]


def test_duplication_fills_rare_classes_with_their_most_confident_images_and_never_invents_a_class() -> None:
    sel = select_pseudolabels(BALANCE_PROBS, pseudo(threshold=0.5, max_per_class=10, min_per_class=3))
    # class 0 untouched (4 >= 3), class 1 [5, 4] -> [5, 4, 5], class 2 [6] -> [6, 6, 6], class 3 stays empty
    assert sel.indices.tolist() == [0, 2, 3, 1, 5, 4, 5, 6, 6, 6]
    assert sel.duplicate.tolist() == [False] * 6 + [True, False, True, True]
    assert 3 not in sel.labels
    assert np.bincount(sel.labels, minlength=4).tolist() == [4, 3, 3, 0]
    np.testing.assert_array_equal(sel.labels, BALANCE_PROBS[sel.indices].argmax(axis=1))


def test_derived_cap_never_falls_below_min_per_class() -> None:
    config = pseudo(min_per_class=3)
    assert balance_cap(np.array([5, 1, 1, 0]), config) == 3  # the median alone would be 1
    assert balance_cap(np.array([5, 4, 1, 0]), pseudo()) == 4  # median 4 over non-empty classes
    assert balance_cap(np.array([5, 2, 1, 4]), pseudo()) == 3  # median 3.0
    assert balance_cap(np.array([5, 2]), pseudo()) == 4  # median 3.5, rounded up
    assert balance_cap(np.array([5, 2]), pseudo(balance=False)) is None
    sel = select_pseudolabels(BALANCE_PROBS, pseudo(threshold=0.5, min_per_class=3))
    assert np.bincount(sel.labels, minlength=4).tolist() == [3, 3, 3, 0]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"max_per_class": 0}, "max_per_class"),
        ({"max_per_class": 2.5}, "max_per_class"),
        ({"min_per_class": -1}, "min_per_class"),
        ({"min_per_class": True}, "min_per_class"),
        ({"min_per_class": 5, "max_per_class": 3}, "min_per_class"),
    ],
)
def test_config_rejects_bad_values_naming_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ValidationError, match=name):
        pseudo(**kwargs)


@pytest.mark.parametrize("bad", [np.array([[2.0, -1.0]]), np.array([[0.5, 0.2]]), np.array([0.5, 0.5])])
def test_probs_that_are_not_probability_rows_are_rejected(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="probs"):
        select_pseudolabels(bad, pseudo())


def test_quality_counts_duplicates_once_and_skips_missing_truth() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    indices = np.array([3, 3, 5, 7, 9])  # image 3 twice
    truth = np.array([0, 0, 2, -1, 2])  # 3 right, 5 wrong, 7 unknown, 9 right
    q = pseudolabel_quality(labels, truth, 20, indices=indices)
    assert q["precision"] == pytest.approx(2 / 3)
    assert q["coverage"] == pytest.approx(4 / 20)
    assert q["n_selected"] == 4 and q["n_rows"] == 5 and q["n_with_truth"] == 3
    # the same rows taken as distinct images (no indices): the duplicate counts twice
    q = pseudolabel_quality(labels, truth, 20)
    assert q["precision"] == pytest.approx(3 / 4) and q["coverage"] == pytest.approx(5 / 20)


def test_quality_without_any_truth_has_nan_precision() -> None:
    q = pseudolabel_quality(np.array([0, 1]), np.array([-1, -1]), 4)
    assert math.isnan(q["precision"]) and q["coverage"] == 0.5


def test_quality_rejects_inconsistent_input() -> None:
    with pytest.raises(ValueError, match="different labels"):
        pseudolabel_quality(np.array([0, 1]), np.array([0, 0]), 5, indices=np.array([2, 2]))
    with pytest.raises(ValueError, match="n_pool"):
        pseudolabel_quality(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)
    with pytest.raises(ValueError, match="true_labels_of_selected"):
        pseudolabel_quality(np.array([0, 1]), np.array([0]), 5)


def test_selection_quality_uses_the_pool_truth_of_the_selected_images() -> None:
    sel = select_pseudolabels(PROBS, pseudo(threshold=0.5, max_per_class=10, min_per_class=2))
    assert sel.indices.tolist() == [0, 1, 3, 4, 5, 6, 6]
    q = selection_quality(sel, TRUTH)
    # distinct images 0 1 3 4 5 6; truth known for all but 5; row 1 (truth 1, label 0) is wrong
    assert q["precision"] == pytest.approx(4 / 5)
    assert q["coverage"] == pytest.approx(6 / 8)
    assert q["n_selected"] == 6 and q["n_rows"] == 7


def test_threshold_curve_known_answers() -> None:
    rows = threshold_curve(PROBS, TRUTH, [0.0, 0.5, 0.85, 0.95])
    assert [r["threshold"] for r in rows] == [0.0, 0.5, 0.85, 0.95]
    # t=0: all 8; known truth for 7 of them, right: 0, 2 (label 0 truth 0), 3, 4, 6 -> 5/7
    assert rows[0]["coverage"] == 1.0 and rows[0]["precision"] == pytest.approx(5 / 7)
    assert rows[1]["coverage"] == pytest.approx(6 / 8) and rows[1]["precision"] == pytest.approx(4 / 5)
    assert rows[2]["coverage"] == pytest.approx(1 / 8) and rows[2]["precision"] == 1.0
    assert rows[3]["coverage"] == 0.0 and math.isnan(rows[3]["precision"])


def test_threshold_curve_coverage_never_rises_with_the_threshold() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(5, 0.5), size=200)
    truth = rng.integers(-1, 5, size=200)
    rows = threshold_curve(probs, truth, np.linspace(0, 1, 21))
    coverage = [r["coverage"] for r in rows]
    assert coverage[0] == 1.0
    assert all(a >= b for a, b in zip(coverage, coverage[1:]))
    assert coverage[0] > coverage[-1]


def _table_rows() -> list[dict]:
    sel = select_pseudolabels(PROBS, pseudo(threshold=0.5, max_per_class=10, min_per_class=2))
    paths = [f"pool/img_{i}.png" for i in range(8)]
    true_names = ["cola", "juice", "cola", "juice", "juice", "", "milk, 1L", "milk, 1L"]
    return pseudolabel_table(paths, sel, ["cola", "juice", "milk, 1L"], true_names)


def test_pseudolabel_table_rows() -> None:
    rows = _table_rows()
    assert list(rows[0]) == [*TABLE_COLUMNS, "true_class_name"]
    assert [r["path"] for r in rows] == [f"pool/img_{i}.png" for i in (0, 1, 3, 4, 5, 6, 6)]
    assert [r["duplicate"] for r in rows] == [False] * 6 + [True]
    assert rows[1] == {
        "path": "pool/img_1.png",
        "label": 0,
        "class_name": "cola",
        "confidence": 0.6,
        "duplicate": False,
        "true_class_name": "juice",
    }
    sel = select_pseudolabels(PROBS, pseudo(threshold=0.5))
    assert "true_class_name" not in pseudolabel_table([str(i) for i in range(8)], sel, ["a", "b", "c"])[0]
    with pytest.raises(ValueError, match="class_names"):
        pseudolabel_table([str(i) for i in range(8)], sel, ["a", "b"])


def test_table_csv_round_trip_leaves_no_temporary_file(tmp_path: Path) -> None:
    rows = _table_rows()
    out = write_pseudolabel_table(rows, tmp_path / "sub" / "pseudolabels.csv")
    assert out == tmp_path / "sub" / "pseudolabels.csv"
    assert read_pseudolabel_table(out) == rows  # types, the comma in a name and float confidences survive
    assert sorted(p.name for p in out.parent.iterdir()) == ["pseudolabels.csv"]


def test_failed_write_keeps_the_old_table_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "pseudolabels.csv"
    write_pseudolabel_table(_table_rows()[:2], out)
    before = out.read_text()

    def boom(self: csv.DictWriter, rows: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(csv.DictWriter, "writerows", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_pseudolabel_table(_table_rows(), out)
    assert out.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["pseudolabels.csv"]


def test_rows_with_the_wrong_columns_are_rejected_before_writing(tmp_path: Path) -> None:
    rows = _table_rows()
    del rows[3]["confidence"]
    with pytest.raises(ValueError, match="row 3"):
        write_pseudolabel_table(rows, tmp_path / "t.csv")
    assert list(tmp_path.iterdir()) == []


def test_threshold_plot_draws_precision_coverage_and_the_chosen_threshold() -> None:
    curve = threshold_curve(PROBS, TRUTH, [0.0, 0.5, 0.85, 0.95])
    fig = threshold_plot(curve, 0.5)
    try:
        assert isinstance(fig, Figure)
        (ax,) = fig.axes
        assert len(ax.lines) == 3
        precision, coverage, chosen = ax.lines
        np.testing.assert_allclose(coverage.get_ydata(), [r["coverage"] for r in curve])
        np.testing.assert_allclose(precision.get_ydata(), [r["precision"] for r in curve])
        assert list(chosen.get_xdata()) == [0.5, 0.5]
    finally:
        plt.close(fig)


def test_rounds_plot_draws_accuracy_on_its_own_scale_and_no_pseudolabel_point_at_round_zero() -> None:
    rows = [
        {"round": 0, "probe_accuracy": 0.61},
        {"round": 1, "probe_accuracy": 0.66, "precision": 0.8, "coverage": 0.5},
        {"round": 2, "probe_accuracy": 0.68, "precision": 0.85, "coverage": None},
    ]
    fig = rounds_plot(rows)
    try:
        assert isinstance(fig, Figure)
        left, right = fig.axes
        (accuracy,) = left.lines
        precision, coverage = right.lines
        np.testing.assert_allclose(accuracy.get_xdata(), [0, 1, 2])
        np.testing.assert_allclose(accuracy.get_ydata(), [0.61, 0.66, 0.68])
        np.testing.assert_allclose(precision.get_ydata(), [np.nan, 0.8, 0.85])
        np.testing.assert_allclose(coverage.get_ydata(), [np.nan, 0.5, np.nan])
        # the accuracy axis is scaled to its values (a 7-point gain is visible), the fractions' to 0-1
        low, high = left.get_ylim()
        assert 0.55 < low < 0.61 and 0.68 < high < 0.75
        assert right.get_ylim() == (-0.02, 1.02)
    finally:
        plt.close(fig)

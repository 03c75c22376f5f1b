"""The evaluation figures draw what they promise on small random data, and the confusion ranking is exact."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from retailnb.data.manifest import ManifestRow  # noqa: E402
from retailnb.evaluation.quickprobe import ProbeData  # noqa: E402
from retailnb.plots.evaluation import (  # noqa: E402
    catalogue_gallery,
    class_group,
    confusion_figure,
    confusion_pairs,
    data_limits,
    embed_2d,
    embedding_map,
    product_groups,
    shelf_to_catalogue_figure,
    shot_order,
    shots_figure,
)


@pytest.fixture(autouse=True)
def close_figures() -> None:
    yield
    plt.close("all")


def summary(shots: list[int | str], base: float) -> list[dict]:
    return [{"shots": s, "draws": 5, "probe_accuracy_mean": base + 0.05 * i, "probe_accuracy_std": 0.02}
            for i, s in enumerate(shots)]


def test_shot_order_puts_numbers_first_and_all_last() -> None:
    assert shot_order(["all", 10, 1, 5, 1]) == [1, 5, 10, "all"]
    assert shot_order([5, 1]) == [1, 5]


def test_shots_figure_has_one_errorbar_line_per_method_and_a_finetune_line() -> None:
    summaries = {"random_init": summary([1, 5, 10, "all"], 0.1), "simclr_supcon": summary([1, 5, "all"], 0.5)}
    fig = shots_figure(summaries, 0.9)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.containers) == 2  # one ErrorbarContainer per method
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "5", "10", "all"]
    # a method without 10-shot skips that position rather than shifting "all" left
    x_main = ax.containers[1].lines[0].get_xdata()
    assert list(x_main) == [0, 1, 3]
    finetune = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(finetune) == 1 and finetune[0].get_ydata()[0] == pytest.approx(0.9)
    assert len(ax.get_legend().get_texts()) == 3


def test_the_catalogue_only_probe_is_a_separate_first_point_in_its_methods_colour() -> None:
    assert shot_order(["all", 5, "catalogue", 1]) == ["catalogue", 1, 5, "all"]
    summaries = {"random_init": summary([1, 5, "all"], 0.1), "simclr_supcon": summary([1, 5, "all"], 0.5)}
    summaries["simclr_supcon"].append({"shots": "catalogue", "probe_accuracy_mean": 0.33, "probe_accuracy_std": 0.0})
    fig = shots_figure(summaries, 0.9)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["catalogue\nonly", "1", "5", "all"]
    assert list(ax.containers[1].lines[0].get_xdata()) == [1, 2, 3]  # the shelf-shot line starts at 1 shot
    (diamond,) = [line for line in ax.lines if line.get_marker() == "D"]
    assert list(diamond.get_xdata()) == [0] and list(diamond.get_ydata()) == [0.33]
    assert diamond.get_color() == ax.containers[1].lines[0].get_color()
    plt.close(fig)


def test_shots_figure_scales_the_axis_to_the_data_and_keeps_the_legend_off_it() -> None:
    summaries = {"random_init": summary([1, 5, "all"], 0.1), "simclr_supcon": summary([1, 5, "all"], 0.3)}
    fig = shots_figure(summaries, 0.45)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    # from the lowest error bar (0.08) to the finetuning line (0.45), not 0-1
    assert 0.0 < low < 0.08 and 0.45 < high < 0.6
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # beside the axes, over no point


def test_data_limits_pad_the_span_within_zero_and_one() -> None:
    assert data_limits([0.2, 0.6]) == pytest.approx((0.168, 0.632))
    assert data_limits([0.0, 1.0]) == (0.0, 1.0)
    assert data_limits([0.5]) == pytest.approx((0.49, 0.51))
    assert data_limits([float("nan")]) == (0.0, 1.0)


def clusters(n_per_class: int, n_classes: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    return rng.normal(size=(n_classes, dim))[y] * 4 + rng.normal(size=(len(y), dim)), y


def test_embedding_map_draws_one_scatter_per_class_with_a_legend() -> None:
    x, y = clusters(6, 4)
    fig = embedding_map(x, y, ["a", "b", "c", "d"], seed=0)
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and len(ax.collections) == 4
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c", "d"]
    assert "t-SNE" in ax.get_title()


def test_embedding_map_drops_the_legend_beyond_twenty_classes() -> None:
    x, y = clusters(2, 25)
    fig = embedding_map(x, y, [f"c{i}" for i in range(25)])
    assert len(fig.axes[0].collections) == 25 and fig.axes[0].get_legend() is None


def test_embedding_map_colours_forty_products_by_brand_with_a_legend_of_brands() -> None:
    brands = ["Norla", "Bapras", "Sukoux", "Flimo", "Drenta", "Kavo", "Plisu", "Tromba"]
    classes = sorted(f"{b} {w}" for b in brands for w in ["Cocoa", "Lite", "Mint", "Extra", "Spicy"])
    x, y = clusters(3, 40)
    fig = embedding_map(x, y, classes)
    ax = fig.axes[0]
    assert len(ax.collections) == 40  # every product drawn ...
    colours = {tuple(c.get_facecolor()[0][:3]) for c in ax.collections}
    assert len(colours) == 8  # ... in its brand's colour
    assert [t.get_text() for t in ax.get_legend().get_texts()] == sorted(brands)
    for brand in brands:  # the products of one brand differ by marker
        mine = [c for c, name in zip(ax.collections, classes) if name.startswith(brand)]
        assert len({c.get_paths()[0].vertices.tobytes() for c in mine}) == 5
    assert "40 products in 8 groups" in ax.get_title()


def test_embedding_map_takes_groups_from_the_caller() -> None:
    classes = [f"c{i}" for i in range(24)]
    groups = {name: f"kind {i % 3}" for i, name in enumerate(classes)}
    fig = embedding_map(*clusters(2, 24), classes, groups=groups)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["kind 0", "kind 1", "kind 2"]


def test_product_groups_use_the_first_word_unless_given() -> None:
    assert class_group("Norla Mint") == "Norla" and class_group("Apple") == "Apple"
    assert product_groups(["Norla Mint", "Kavo Lite"], {"Kavo Lite": "tea"}) == ["Norla", "tea"]


def test_embedding_map_falls_back_to_pca_for_a_few_points() -> None:
    x, y = clusters(2, 2)
    xy, method = embed_2d(x)
    assert method == "PCA" and xy.shape == (4, 2)
    fig = embedding_map(x, y, ["a", "b"])
    assert "PCA" in fig.axes[0].get_title()


def test_embedding_is_deterministic_for_a_seed() -> None:
    x, _ = clusters(5, 3)
    np.testing.assert_array_equal(embed_2d(x, seed=1)[0], embed_2d(x, seed=1)[0])


def test_confusion_pairs_known_answer() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    y_pred = np.array([1, 1, 0, 0, 2, 0, 0, 1, 3])
    assert confusion_pairs(y_true, y_pred, 3) == [(0, 1, 2), (2, 0, 2), (1, 0, 1)]
    assert confusion_pairs(y_true, y_pred, 10)[-1] == (2, 1, 1)
    assert confusion_pairs(y_true, y_true, 4) == []


def probe_data(features_train: np.ndarray, y_train: np.ndarray, features_test: np.ndarray,
               y_test: np.ndarray) -> ProbeData:
    rng = np.random.default_rng(0)
    img = lambda n: rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)  # noqa: E731
    return ProbeData(train=[], test=[], x_train=img(len(y_train)), x_test=img(len(y_test)), y_train=y_train,
                     y_test=y_test, classes=["apple", "pear", "plum"])


def test_confusion_figure_shows_three_panels_per_confused_pair_of_the_predictions_it_is_given() -> None:
    # the images are noise, so nothing but the predictions passed in can place pear's test images with plum
    y = np.repeat([0, 1, 2], 6)
    predicted = np.array([0] * 6 + [1, 2, 2, 2, 2, 2] + [2, 2, 0, 0, 2, 2])
    data = probe_data(np.zeros((18, 2)), y, np.zeros((18, 2)), y)
    fig = confusion_figure(data, predicted, n_pairs=4)
    assert len(fig.axes) == 6  # two kinds of mistake, three panels each
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "test: pear\ntaken for plum (5×)"
    assert titles[1] == "train: pear\n(6 test images)" and titles[2] == "train: plum\n(9 predicted)"
    assert titles[3] == "test: plum\ntaken for apple (2×)"
    # the mistaken image shown is the first test image with that mistake, not the first of its product
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), data.x_test[7])
    np.testing.assert_array_equal(fig.axes[3].images[0].get_array(), data.x_test[14])
    assert fig.texts[0].get_text().startswith("Most frequent probe confusions (7 of 18")


def test_confusion_figure_says_so_when_there_are_no_confusions() -> None:
    y = np.repeat([0, 1, 2], 6)
    fig = confusion_figure(probe_data(np.zeros((18, 2)), y, np.zeros((18, 2)), y), y.copy())
    assert len(fig.axes) == 1 and "No confusions" in fig.axes[0].texts[0].get_text()


def test_confusion_figure_needs_one_prediction_per_test_image() -> None:
    y = np.repeat([0, 1, 2], 2)
    with pytest.raises(ValueError, match="same shape"):
        confusion_figure(probe_data(np.zeros((6, 2)), y, np.zeros((6, 2)), y), y[:-1])


def record(label: int, domain: str) -> ManifestRow:
    return ManifestRow(path=f"{label}-{domain}.png", label=label, class_name=str(label), split="train",
                  role="probe_train", domain=domain)


def test_shelf_queries_are_matched_against_catalogue_images_only() -> None:
    # train: one catalogue and two shelf images per class; a shelf image sits exactly on each test query,
    # so a gallery that wrongly included shelf images would show it as the first neighbour
    y_train = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    domains = ["catalogue", "shelf", "shelf"] * 3
    centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    f_train = centres[y_train] + np.array([[0.3, 0.3, 0.3] if d == "catalogue" else [0.0, 0.0, 0.0] for d in domains])
    y_test = np.array([0, 1, 2])
    data = probe_data(f_train, y_train, centres[y_test], y_test)
    data = ProbeData(train=[record(int(l), d) for l, d in zip(y_train, domains)], test=[], x_train=data.x_train,
                     x_test=data.x_test, y_train=y_train, y_test=y_test, classes=data.classes)
    assert list(catalogue_gallery(data)) == [0, 3, 6]
    fig = shelf_to_catalogue_figure((f_train, centres[y_test]), data, n_queries=3, k=2)
    assert len(fig.axes) == 3 * 3
    rows = [[ax.get_title() for ax in fig.axes[i * 3:(i + 1) * 3]] for i in range(3)]
    for row in rows:
        query = row[0].removeprefix("shelf: ")
        assert row[1] == f"#1 {query}", "the nearest catalogue image is the query's own product"
    # the frame colour says whether a neighbour is the query's product
    assert fig.axes[1].spines["left"].get_edgecolor()[:3] == matplotlib.colors.to_rgb("tab:green")
    assert fig.axes[2].spines["left"].get_edgecolor()[:3] == matplotlib.colors.to_rgb("tab:red")


def test_a_target_without_catalogue_images_uses_every_training_image() -> None:
    y = np.array([0, 1, 2])
    data = probe_data(np.eye(3), y, np.eye(3), y)
    data = ProbeData(train=[record(int(l), "shelf") for l in y], test=[], x_train=data.x_train, x_test=data.x_test,
                     y_train=y, y_test=y, classes=data.classes)
    assert list(catalogue_gallery(data)) == [0, 1, 2]
    fig = shelf_to_catalogue_figure((np.eye(3), np.eye(3)), data, n_queries=2, k=5)
    assert len(fig.axes) == 2 * 4  # k capped at the gallery's 3 images

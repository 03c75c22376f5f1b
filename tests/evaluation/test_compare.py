"""The comparison table's backbone loop: features cached per backbone, probes the same in any number of processes;
the plot data records the probe predictions it is given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from retailnb.config.evaluate import RejectionSpec
from retailnb.data.manifest import ManifestRow
from retailnb.evaluation.compare import (
    backbone_results,
    backbones_features,
    catalogue_mask,
    collect_backbones,
    evaluate_backbones,
    probe_predictions,
    results_table,
    write_plot_data,
)
from retailnb.evaluation.finetune import FinetuneResult
from retailnb.evaluation.probe import fit_logistic_probe
from retailnb.evaluation.quickprobe import ProbeData
from retailnb.models.checkpoint import save_backbone

ARCH = "test_resnet"


def tiny_probe_data() -> ProbeData:
    """Three products told apart by colour: 4 training and 3 test images each, 32 px."""
    rng = np.random.default_rng(0)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])

    def images(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(3), per_class)
        x = colours[y][:, None, None, :] + rng.normal(0, 20, (len(y), 32, 32, 3))
        return np.clip(x, 0, 255).astype(np.uint8), y

    x_train, y_train = images(4)
    x_test, y_test = images(3)
    return ProbeData(train=[], test=[], x_train=x_train, x_test=x_test, y_train=y_train, y_test=y_test,
                     classes=["red", "green", "blue"])


def test_backbones_are_probed_alike_in_one_or_two_processes_and_features_are_cached(tmp_path: Path) -> None:
    torch.manual_seed(1)
    (tmp_path / "pretrain" / "simclr").mkdir(parents=True)
    save_backbone(tmp_path / "pretrain" / "simclr" / "backbone.pt", timm.create_model(ARCH, num_classes=0))
    backbones = collect_backbones(tmp_path / "pretrain", tmp_path / "noisy", variants=["simclr"])
    assert list(backbones) == ["random_init", "simclr"]
    data = tiny_probe_data()
    kw = dict(architecture=ARCH, shots=[1, 2, None], draws=2, seed=0)
    one, features, rejections = evaluate_backbones(backbones, data, cache_dir=tmp_path / "features", workers=1, **kw)
    two, _, _ = evaluate_backbones(backbones, data, cache_dir=tmp_path / "features", workers=2, **kw)
    assert rejections == {}  # not asked for
    untimed = lambda rows: [{k: v for k, v in r.items() if not k.startswith("fit_seconds")} for r in rows]  # noqa: E731
    assert {n: untimed(r) for n, r in one.items()} == {n: untimed(r) for n, r in two.items()}
    assert [s["shots"] for s in one["simclr"]] == [1, 2, "all"]
    assert sorted(p.name for p in (tmp_path / "features").glob("*.npz")) == ["random_init.npz", "simclr.npz"]
    assert features["simclr"][0].shape[0] == 12 and features["simclr"][1].shape[0] == 9
    # the colours separate the products even for random weights
    assert one["random_init"][-1]["probe_accuracy_mean"] == 1.0


def test_the_photos_no_backbone_saw_reach_every_backbone_s_rejection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    from retailnb.evaluation import compare

    seen: list[object] = []
    real = compare.evaluate_rejection

    def spy(*args: object, calibrate: object = None, **kwargs: object) -> dict[str, object]:
        seen.append(calibrate)
        return real(*args, calibrate=calibrate, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(compare, "evaluate_rejection", spy)
    data = tiny_probe_data()
    unseen = np.arange(len(data.y_train)) % 4 == 0
    rejection = RejectionSpec(unknown_fraction=0.34, recall=0.9, folds=3, knn_k=1, source_unknowns=False)
    evaluate_backbones({"random_init": "none"}, data, architecture=ARCH, shots=[None], draws=1, seed=0,
                       cache_dir=tmp_path, workers=1, rejection=rejection, calibrate=unseen)
    assert len(seen) == 1 and seen[0] is unseen


def four_products(domains: list[str]) -> tuple[ProbeData, np.ndarray, np.ndarray]:
    """Four products as feature clusters; training image ``i`` of each product has domain ``domains[i]``."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 4
    y_train, y_test = np.repeat(np.arange(4), len(domains)), np.repeat(np.arange(4), 5)
    train = [ManifestRow(path=f"{c}_{i}.png", label=int(c), class_name=f"p{c}", split="train", role="probe_train",
                    domain=domains[i]) for c in range(4) for i in range(len(domains))]
    data = ProbeData(train=train, test=[], x_train=np.zeros(1), x_test=np.zeros(1), y_train=y_train, y_test=y_test,
                     classes=[f"p{c}" for c in range(4)])
    # the catalogue images sit off their cluster's centre (another domain), the shelf ones around it
    shift = np.array([[3.0 if d == "catalogue" else 0.0] * 8 for d in domains * 4])
    return data, centres[y_train] + rng.normal(size=(len(y_train), 8)) + shift, centres[y_test] + rng.normal(size=(20, 8))


def test_the_catalogue_row_trains_on_the_packshots_alone_and_rejection_is_measured_per_backbone() -> None:
    data, f_train, f_test = four_products(["catalogue", "shelf", "shelf", "shelf", "shelf", "shelf"])
    mask = catalogue_mask(data)
    assert mask is not None and mask.sum() == 4 and mask[::6].all()
    rejection = RejectionSpec(unknown_fraction=0.25, recall=0.9, folds=3, knn_k=1, source_unknowns=False)
    rows, result = backbone_results(f_train, data.y_train, f_test, data.y_test, shots=[1, None], draws=2, seed=0,
                                    knn_k=1, catalogue=mask, rejection=rejection)
    catalogue = [r for r in rows if r["shots"] == "catalogue"]
    assert len(catalogue) == 1 and catalogue[0]["n_train"] == 4  # one packshot per product, nothing else
    # a probe on one shifted packshot per product is not the all-images probe
    all_images = next(r for r in rows if r["shots"] == "all")
    assert all_images["n_train"] == 24
    assert result is not None and result["n_known"] == 3 and result["n_unknown"] == 1
    assert set(result) >= {"msp", "energy", "prototype"}
    from retailnb.evaluation.fewshot import summarize_fewshot
    table = results_table({"simclr": summarize_fewshot(rows)}, 0.9, main="simclr", rejections={"simclr": result})
    cells = table["simclr"]
    assert cells["probe_catalogue"] == catalogue[0]["probe_accuracy"]
    assert cells["reject_prototype_auroc"] == result["prototype"]["auroc"]
    assert 0.0 <= cells["reject_msp_unknown_rejection"] <= 1.0
    # a product without a packshot: no catalogue row (it could never be named)
    data2, _, _ = four_products(["shelf"] * 3)
    assert catalogue_mask(data2) is None


def test_probe_predictions_are_those_of_a_probe_fitted_on_the_training_features() -> None:
    data = tiny_probe_data()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3
    f_train = centres[data.y_train] + rng.normal(size=(12, 8))
    f_test = centres[data.y_test] + rng.normal(size=(9, 8))
    predicted = probe_predictions((f_train, f_test), data)
    np.testing.assert_array_equal(predicted, fit_logistic_probe(f_train, data.y_train).predict(f_test))
    np.testing.assert_array_equal(predicted, data.y_test)  # the clusters are far apart
    # features of other products' clusters are predicted as those products: the test features are used
    np.testing.assert_array_equal(probe_predictions((f_train, f_test[::-1]), data), data.y_test[::-1])


def test_plot_data_records_the_predictions_it_is_given(tmp_path: Path) -> None:
    data = tiny_probe_data()
    # mistakes no probe on these colour-separated products would make: only the predictions passed in can explain them
    predicted = np.array([1, 0, 0, 2, 2, 1, 2, 0, 2])
    summaries = {name: [{"shots": s, "probe_accuracy_mean": base + 0.1 * i} for i, s in enumerate([1, "all"])]
                 for name, base in (("random_init", 0.2), ("simclr", 0.5))}
    finetuned = FinetuneResult(model=torch.nn.Identity(), accuracy=0.9, seconds=1.0, lr=0.001, best_epoch=1,
                               val_accuracy=0.9, grid=[])
    write_plot_data(summaries, finetuned, data, predicted, tmp_path / "plots")
    confusion = json.loads((tmp_path / "plots" / "confusion.json").read_text())
    names = [(data.classes[a], data.classes[p]) for a, p in zip(data.y_test, predicted)]
    assert confusion == [{"actual": a, "predicted": p} for a, p in names]
    assert confusion[0] == {"actual": "red", "predicted": "green"}
    shots = json.loads((tmp_path / "plots" / "shots.json").read_text())
    # one row per method and shot count, "all" at the 4 training images per product of tiny_probe_data
    assert [(r["method"], r["shots"], r["images_per_product"], r["accuracy"]) for r in shots] == [
        ("random_init", "1", 1.0, 0.2), ("random_init", "all", 4.0, pytest.approx(0.3)),
        ("simclr", "1", 1.0, 0.5), ("simclr", "all", 4.0, 0.6),
        ("finetuned (end to end)", "1", 1.0, 0.9), ("finetuned (end to end)", "all", 4.0, 0.9)]
    with pytest.raises(ValueError, match="one class per test image"):
        write_plot_data(summaries, finetuned, data, predicted[:-1], tmp_path / "short")
    assert not (tmp_path / "short").exists()


def test_the_rejection_knn_k_reaches_the_knn_score_alone() -> None:
    """evaluate.rejection.knn_k: the knn score's neighbour; a further one lowers its threshold, and no other
    score changes."""
    data, f_train, f_test = four_products(["shelf"] * 6)
    results = []
    for k in (1, 3):
        rejection = RejectionSpec(unknown_fraction=0.25, recall=0.9, folds=3, knn_k=k, source_unknowns=False)
        results.append(backbone_results(f_train, data.y_train, f_test, data.y_test, shots=[None], draws=1, seed=0,
                                        knn_k=1, rejection=rejection)[1])
    first, third = results
    assert first is not None and third is not None
    assert third["knn"]["threshold"] < first["knn"]["threshold"]
    assert all(first[s] == third[s] for s in ("msp", "energy", "prototype", "mahalanobis", "relative_mahalanobis"))


def test_a_student_larger_than_its_teacher_is_built_as_its_backbone_json_says(tmp_path: Path) -> None:
    """``noisy.student.architecture`` may name a larger model than ``backbone.architecture``: each round's
    features come from the architecture its ``backbone.json`` records, not the teacher's."""
    from retailnb.models.backbone_info import write_backbone_info

    torch.manual_seed(1)
    teacher_dir, round_dir = tmp_path / "pretrain" / "simclr", tmp_path / "noisy" / "round_1"
    teacher_dir.mkdir(parents=True)
    round_dir.mkdir(parents=True)
    save_backbone(teacher_dir / "backbone.pt", timm.create_model(ARCH, num_classes=0))
    student = timm.create_model("resnet10t", num_classes=0)
    save_backbone(round_dir / "backbone.pt", student)
    write_backbone_info(round_dir / "backbone.json", architecture="resnet10t", image_size=32,
                        feature_dim=student.num_features, weights=round_dir / "backbone.pt")
    backbones = collect_backbones(tmp_path / "pretrain", tmp_path / "noisy", variants=["simclr"])
    features, _ = backbones_features(backbones, tiny_probe_data(), architecture=ARCH, seed=0,
                                     cache_dir=tmp_path / "features")
    assert features["noisy_round_1"][0].shape[1] == student.num_features
    assert features["simclr"][0].shape[1] == timm.create_model(ARCH, num_classes=0).num_features
    assert student.num_features != features["simclr"][0].shape[1]

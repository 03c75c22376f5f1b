"""The evaluation table: every backbone the pipeline produced, probed few-shot, against finetuning.

Rows are computed, never typed in: ``random_init``, one row per pretraining variant of
``pretrain.variants`` (its backbone in the pretraining folder), one per noisy-student round, an optional
local weights file, and the finetuned network's accuracy as the reference each probe is divided by.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits
from torch import nn

from retailnb.config.compute import BackboneSpec, ComputeSpec
from retailnb.config.evaluate import FinetuneSpec, RejectionSpec
from retailnb.data.cache import DiskArray
from retailnb.data.manifest import Manifest, ManifestRow
from retailnb.evaluation.features import load_features, save_features
from retailnb.evaluation.fewshot import CATALOGUE, catalogue_eval, fewshot_eval, summarize_fewshot
from retailnb.evaluation.finetune import FinetuneResult, finetune
from retailnb.evaluation.probe import DEFAULT_THREADS, FALLBACK_C, fit_logistic_probe
from retailnb.evaluation.quickprobe import ProbeData
from retailnb.models.backbone import create_backbone
from retailnb.models.backbone_info import WEIGHTS_NONE, read_backbone_info
from retailnb.models.sharded import process_group, sharded_features
from retailnb.util.hashing import file_sha256
from retailnb.util.parallel import default_workers
from retailnb.evaluation.rejection import evaluate_rejection, logistic_fit, rejection_cells

Features = tuple[np.ndarray, np.ndarray]

SOURCE_UNKNOWN_DIR = "source_unknown"
"""The sub-folder of the feature cache holding each backbone's features of the source's unlabelled-only
products (:func:`source_unknown_features`), beside the train/test files of :func:`backbone_features`."""


def source_unknown_records(manifest: Manifest) -> list[ManifestRow]:
    """The rows of the source's unlabelled-only products, in manifest order: a second unknown set.

    A row is kept when its role is ``unlabelled``, it names a product (non-empty ``class_name``), and that
    product has no ``labelled`` row (pretraining never saw its label) nor a ``probe_train``/``probe_test``
    row (it is not one of the target's products, enrolled or held out). On the synthetic data these are
    the unlabelled-only SKUs, whose rows keep their true product; a real dataset's unlabelled split
    repeats its labelled products and gives none.
    """
    excluded = {r.class_name for r in manifest.select("labelled", "probe_train", "probe_test")}
    return [r for r in manifest.select("unlabelled") if r.class_name and r.class_name not in excluded]


@dataclass(frozen=True)
class SourceUnknownData:
    """The images of the source's unlabelled-only products: the second unknown set of the rejection
    evaluation (:func:`source_unknown_records`).

    Attributes:
        records: their manifest rows, in manifest order.
        x: (N, S, S, 3) uint8 images, in memory or on the disk cache (as :class:`ProbeData`'s).
        y: (N,) product indices into ``classes``.
        classes: the products' names, sorted.
    """

    records: list[ManifestRow]
    x: np.ndarray | DiskArray
    y: np.ndarray
    classes: list[str]

    @property
    def n_products(self) -> int:
        """How many products the set holds."""
        return len(self.classes)


def collect_backbones(pretrain_dir: str | os.PathLike[str], noisy_dir: str | os.PathLike[str],
                      extra_weights: str = "", *, variants: Sequence[str]) -> dict[str, str]:
    """Backbone name -> weights (``none`` or a file), in table order.

    Pretraining variants are ``pretrain_dir/<variant>/backbone.pt`` for each of ``variants`` (those of
    ``pretrain.variants``, in name order), and only those: DVC leaves the folder of a variant removed from
    ``params.yaml`` on disk, and its backbone must not come back as a row. Noisy rounds are
    ``noisy_dir/round_<r>/backbone.pt`` (the noisy stage's output, replaced whole at each run).

    Raises:
        FileNotFoundError: a variant has no backbone (its pretraining has not run).
    """
    found = {"random_init": "none"}
    for variant in sorted(variants):
        path = Path(pretrain_dir) / variant / "backbone.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no backbone of pretraining variant {variant!r} (pretrain.variants); "
                                    f"run its pretraining first (dvc repro pretrain@{variant}-<seed>)")
        found[variant] = str(path)
    rounds = sorted(Path(noisy_dir).glob("round_*/backbone.pt"), key=lambda p: int(p.parent.name.split("_")[1]))
    for path in rounds:
        found[f"noisy_{path.parent.name}"] = str(path)
    if extra_weights:
        if not Path(extra_weights).is_file():
            raise FileNotFoundError(f"evaluate.extra_weights: no file at {extra_weights!r}")
        found["local_weights"] = extra_weights
    return found


def backbone_features(name: str, model: nn.Module, data: ProbeData, cache_dir: str | os.PathLike[str],
                      weights: str) -> Features:
    """Frozen train and test features of one backbone, read from the cache when its weights are unchanged.

    In a distributed run the processes share the forward passes (:mod:`retailnb.models.sharded`: the same
    features as one process) and rank 0 writes the cache.
    """
    path = Path(cache_dir) / f"{name}.npz"
    key = _weights_key(weights)
    if path.is_file():
        cached = load_features(path)
        if cached.meta.get("weights_key") == key and len(cached.labels) == len(data.y_train) + len(data.y_test):
            n = len(data.y_train)
            return cached.features[:n], cached.features[n:]
    f_train, f_test = sharded_features(model, data.x_train), sharded_features(model, data.x_test)
    if process_group()[0] == 0:
        save_features(path, np.concatenate([f_train, f_test]), np.concatenate([data.y_train, data.y_test]),
                      data.classes, weights_key=key, n_train=len(data.y_train))
    return f_train, f_test


def _weights_key(weights: str) -> str:
    """Identifies a weights file by its content's SHA-256 (``none`` for random init): the same in every
    clone and every run, so that the cached features, a DVC output, are the same bytes too."""
    if weights == "none":
        return "none"
    return f"sha256:{file_sha256(weights)}"


def source_unknown_features(name: str, model: nn.Module, source: SourceUnknownData,
                            cache_dir: str | os.PathLike[str], weights: str) -> np.ndarray:
    """Frozen features of the source's unlabelled-only products for one backbone, cached like
    :func:`backbone_features` (in ``cache_dir/source_unknown/<name>.npz``, read back when the weights, the
    number of images and the products are unchanged; rank 0 writes it in a distributed run)."""
    path = Path(cache_dir) / SOURCE_UNKNOWN_DIR / f"{name}.npz"
    key = _weights_key(weights)
    if path.is_file():
        cached = load_features(path)
        if (cached.meta.get("weights_key") == key and len(cached.labels) == len(source.y)
                and cached.class_names == source.classes):
            return cached.features
    features = sharded_features(model, source.x)
    if process_group()[0] == 0:
        save_features(path, features, source.y, source.classes, weights_key=key)
    return features


def backbones_features(backbones: Mapping[str, str], data: ProbeData, *, architecture: str, seed: int,
                       cache_dir: str | os.PathLike[str], source: SourceUnknownData | None = None,
                       ) -> tuple[dict[str, Features], dict[str, np.ndarray]]:
    """Train and test features of every backbone (cached: see :func:`backbone_features`), in table order;
    and, when ``source`` is given, its features of the source's unlabelled-only products
    (:func:`source_unknown_features`; an empty dict otherwise).

    Each backbone is built as the ``backbone.json`` beside its weights says (a noisy student may be larger
    than its teacher, ``noisy.student.architecture``); ``architecture`` for weights without one and for
    random weights.
    """
    features, source_features = {}, {}
    for name, weights in backbones.items():
        torch.manual_seed(seed)  # random_init: the same random weights every run
        info = read_backbone_info(weights) if weights != WEIGHTS_NONE else None
        model = create_backbone(info.architecture if info is not None else architecture, weights=weights)
        features[name] = backbone_features(name, model, data, cache_dir, weights)
        if source is not None:
            source_features[name] = source_unknown_features(name, model, source, cache_dir, weights)
    return features, source_features


def catalogue_mask(data: ProbeData) -> np.ndarray | None:
    """Which training images are catalogue packshots (manifest domain ``catalogue``), or None when some
    product has none: the catalogue-only probe then cannot name every product, and is left out."""
    mask = np.array([r.domain == "catalogue" for r in data.train], dtype=bool)
    if not mask.any() or len(np.unique(data.y_train[mask])) < len(np.unique(data.y_train)):
        return None
    return mask


def backbone_results(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray, *,
                     shots: Sequence[int | None], draws: int, seed: int, knn_k: int,
                     catalogue: np.ndarray | None = None, rejection: RejectionSpec | None = None,
                     f_source_unknown: np.ndarray | None = None, calibrate: np.ndarray | None = None,
                     ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """One backbone's few-shot rows (plus the catalogue-only row when ``catalogue`` is given) and its
    unknown-product rejection result (when ``rejection`` is given; see
    :func:`retailnb.evaluation.rejection.evaluate_rejection`), the latter's probe at the C the all-images probe chose,
    measured on the source's unlabelled-only products too when their features ``f_source_unknown`` are
    given, its thresholds chosen on the training photos ``calibrate`` marks (those no training saw:
    :func:`~retailnb.evaluation.rejection.unseen_photos`) when given."""
    rows = fewshot_eval(f_train, y_train, f_test, y_test, shots=shots, draws=draws, seed=seed, knn_k=knn_k)
    if catalogue is not None:
        rows.append(catalogue_eval(f_train, y_train, f_test, y_test, catalogue, seed=seed, knn_k=knn_k))
    if rejection is None:
        return rows, None
    c = next((r["c"] for r in rows if r["shots"] == "all"), FALLBACK_C)
    result = evaluate_rejection(f_train, y_train, f_test, y_test, fit=logistic_fit(c, seed=seed),
                                unknown_fraction=rejection.unknown_fraction, recall=rejection.recall,
                                seed=seed, folds=rejection.folds, knn_k=rejection.knn_k,
                                f_source_unknown=f_source_unknown, calibrate=calibrate)
    return rows, result


def evaluate_backbones(backbones: Mapping[str, str], data: ProbeData, *, architecture: str,
                       shots: Sequence[int | None], draws: int, seed: int, knn_k: int = 1,
                       cache_dir: str | os.PathLike[str], workers: int | None = None,
                       rejection: RejectionSpec | None = None, source: SourceUnknownData | None = None,
                       calibrate: np.ndarray | None = None,
                       ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Features], dict[str, dict[str, Any]]]:
    """Few-shot summaries, features and unknown-product rejection results of every backbone.

    Features are extracted backbone by backbone (torch uses every core for that); then the few-shot
    probes of the backbones, independent single-threaded scikit-learn fits, run in ``workers``
    processes side by side (None: one per core). The results do not depend on ``workers``. When every
    product has a catalogue packshot (:func:`catalogue_mask`) the summaries hold a ``catalogue`` row too.
    With ``rejection`` and ``source`` given, rejection is also measured on the source's unlabelled-only
    products (their features cached beside the others'). ``calibrate`` marks the training photos the rejection
    thresholds are chosen on (:func:`~retailnb.evaluation.rejection.unseen_photos`), or None: every one, out of
    fold.
    """
    features, source_features = backbones_features(backbones, data, architecture=architecture, seed=seed,
                                                   cache_dir=cache_dir, source=source)
    catalogue = catalogue_mask(data)
    jobs = [delayed(backbone_results)(f_train, data.y_train, f_test, data.y_test, shots=shots, draws=draws,
                                      seed=seed, knn_k=knn_k, catalogue=catalogue, rejection=rejection,
                                      f_source_unknown=source_features.get(name), calibrate=calibrate)
            for name, (f_train, f_test) in features.items()]
    n_jobs = min(len(jobs), workers or default_workers())
    results = Parallel(n_jobs=n_jobs)(jobs)  # n_jobs=1 runs them in this process, one after the other
    summaries = {name: summarize_fewshot(rows) for name, (rows, _) in zip(features, results)}
    rejections = {name: result for name, (_, result) in zip(features, results) if result is not None}
    return summaries, features, rejections


FINETUNE_INITS = ("pretrained", "random_init")
"""The finetuning baselines: from the main pretrained backbone, and (``evaluate.finetune.random_init``) from
random weights."""


def finetune_baselines(backbone: BackboneSpec, backbone_path: str | os.PathLike[str], data: ProbeData, *,
                       spec: FinetuneSpec, compute: ComputeSpec,
                       state_dir: str | os.PathLike[str]) -> dict[str, FinetuneResult]:
    """Finetune end to end on ``probe_train`` (with its validation split), from the main backbone and, when
    ``spec.random_init`` is on, from random weights; each scored once on ``probe_test`` (see
    :func:`retailnb.evaluation.finetune.finetune`). Keys: those of :data:`FINETUNE_INITS` that ran."""
    states = {"pretrained": torch.load(backbone_path, map_location="cpu", weights_only=True), "random_init": None}
    inits = FINETUNE_INITS if spec.random_init else ("pretrained",)
    return {init: finetune(backbone.architecture, states[init], data.x_train, data.y_train, data.x_test, data.y_test,
                           spec=spec, compute=compute, state_dir=Path(state_dir) / init,
                           image_size=backbone.image_size)
            for init in inits}


def results_table(summaries: Mapping[str, Sequence[Mapping[str, Any]]], finetuned_accuracy: float,
                  main: str, rejections: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, float]]:
    """One row per method: probe accuracy per shot count (mean and std; ``probe_catalogue`` for the
    catalogue-only probe), kNN, ratio to finetuning, and the rejection cells of ``rejections``
    (:func:`retailnb.evaluation.rejection.rejection_cells`)."""
    table: dict[str, dict[str, float]] = {}
    for name, rows in summaries.items():
        row: dict[str, float] = {}
        for s in rows:
            row[f"probe_{s['shots']}"] = s["probe_accuracy_mean"]
            row[f"probe_{s['shots']}_std"] = s["probe_accuracy_std"]
            if s["shots"] == "all":
                row["knn_all"] = s["knn_accuracy_mean"]
        if "probe_all" in row and finetuned_accuracy > 0:
            row["ratio_to_finetune"] = row["probe_all"] / finetuned_accuracy
        if rejections and name in rejections:
            row.update(rejection_cells(rejections[name]))
        table[name] = row
    if main not in table:
        raise ValueError(f"the main variant {main!r} is not among the evaluated backbones {sorted(table)}")
    return table


def probe_predictions(features: Features, data: ProbeData) -> np.ndarray:
    """Test predictions of a logistic probe fitted on all of one backbone's training features.

    The evaluate stage calls it once for the main backbone and hands the result to both
    :func:`write_plot_data` and :func:`retailnb.plots.evaluation.confusion_figure`: choosing C by
    cross-validation (:func:`retailnb.evaluation.probe.fit_logistic_probe`) takes seconds, and the plot
    data and the figure must show the same confusions.

    Args:
        features: (train, test) features, rows aligned with ``data.y_train`` and ``data.y_test``.
        data: the labels the features belong to.

    Returns:
        (M,) the predicted class index of every test image, indexing ``data.classes``.
    """
    f_train, f_test = features
    probe = fit_logistic_probe(f_train, data.y_train)
    with threadpool_limits(limits=DEFAULT_THREADS):
        predicted: np.ndarray = probe.predict(f_test)
    return predicted


FINETUNED_SERIES = "finetuned (end to end)"
"""The method name of the finetuning baseline in ``shots.json``: one flat line across every shot count."""


def images_per_product(labels: np.ndarray) -> float:
    """Mean number of training images per product: where the ``"all"`` point sits on a numeric shots axis.

    Rounded to one decimal so that the plot data stays readable; a target with the same count for every
    product (the synthetic default) gives a whole number.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ValueError("no training labels: the 'all' point has no images per product")
    return round(float(labels.size / np.unique(labels).size), 1)


def shots_rows(summaries: Mapping[str, Sequence[Mapping[str, Any]]], finetuned_accuracy: float,
               all_images: float) -> list[dict[str, Any]]:
    """The rows of ``shots.json``: one per (method, shot count), the finetuning baseline as one more method.

    The file is long (a ``method`` column) rather than one column per method, so that ``dvc plots show``
    draws every method whatever the pipeline's variants and rounds are, with nothing to list in
    ``dvc.yaml``; the template ``.dvc/plots/shots.json`` colours the lines by ``method``. The x field
    ``images_per_product`` is numeric, ``"all"`` placed at the mean training images per product, so the
    line is not broken by a string among numbers; ``shots`` keeps the label (``"1"``, ``"all"``).

    Args:
        summaries: method name -> rows of :func:`retailnb.evaluation.fewshot.summarize_fewshot` (keys
            ``shots``, ``probe_accuracy_mean``, optionally ``probe_accuracy_std``).
        finetuned_accuracy: test accuracy of the finetuned main backbone, the same at every shot count.
        all_images: the x of the ``"all"`` point (:func:`images_per_product`).

    Returns:
        Rows with the same fields (``method``, ``shots``, ``images_per_product``, ``accuracy``,
        ``accuracy_std``), methods in the order given and shots in their summary order.
    """
    def point(method: str, shots: int | str, accuracy: float, std: float) -> dict[str, Any]:
        x = all_images if shots == "all" else float(shots)
        return {"method": method, "shots": str(shots), "images_per_product": x, "accuracy": accuracy,
                "accuracy_std": std}

    on_axis = [[r for r in summary if r["shots"] != CATALOGUE] for summary in summaries.values()]
    rows = [point(name, r["shots"], r["probe_accuracy_mean"], r.get("probe_accuracy_std", 0.0))
            for name, summary in zip(summaries, on_axis) for r in summary if "probe_accuracy_mean" in r]
    shots = list(dict.fromkeys(r["shots"] for summary in on_axis for r in summary))
    return rows + [point(FINETUNED_SERIES, s, finetuned_accuracy, 0.0) for s in shots]


def write_plot_data(summaries: Mapping[str, Sequence[Mapping[str, Any]]], finetuned: FinetuneResult,
                    data: ProbeData, predicted: np.ndarray, out_dir: str | os.PathLike[str]) -> None:
    """Data files ``dvc plots`` renders: accuracy against shots per method, and the probe's confusions.

    Args:
        summaries: method name -> rows of :func:`retailnb.evaluation.fewshot.summarize_fewshot`.
        finetuned: the finetuning baseline from the main backbone, drawn as a constant on the shots curve.
        data: the target whose test labels and class names the confusions use.
        predicted: (M,) the probe's predicted class of every test image (:func:`probe_predictions`).
        out_dir: folder of ``shots.json`` (:func:`shots_rows`) and ``confusion.json``.

    Raises:
        ValueError: ``predicted`` does not have one class per test image.
    """
    predicted = np.asarray(predicted)
    if predicted.shape != data.y_test.shape:
        raise ValueError(f"predicted must have shape {data.y_test.shape}, one class per test image, "
                         f"got {predicted.shape}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    curve = shots_rows(summaries, finetuned.accuracy, images_per_product(data.y_train))
    (out / "shots.json").write_text(json.dumps(curve, indent=2) + "\n")
    confusion = [{"actual": data.classes[a], "predicted": data.classes[p]} for a, p in zip(data.y_test, predicted)]
    (out / "confusion.json").write_text(json.dumps(confusion) + "\n")

"""The evaluation stage: every backbone probed few-shot on one target, against full finetuning.

With ``compute.devices > 1`` (or several nodes) :func:`run` first runs the network work under ``torchrun``
through :func:`retailnb.train.launch.launch`, as ``python -m retailnb.stages.evaluate RUN.json``: the
processes share the feature extraction of every backbone (the same features as one process; rank 0 writes
the cache) and train the finetuning baselines with DDP (rank 0 saves their best weights). The calling
process then runs the stage as usual, reading the cached features and the finished finetuning runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from retailnb.config.base import Spec
from retailnb.config.evaluate import EvaluateStageSpec, shot_counts
from retailnb.data.cache import DiskArray, cached_images
from retailnb.data.images import decode_images
from retailnb.data.manifest import encode_labels, read_manifest
from retailnb.evaluation.compare import (
    Features,
    SourceUnknownData,
    backbones_features,
    collect_backbones,
    evaluate_backbones,
    finetune_baselines,
    probe_predictions,
    results_table,
    source_unknown_records,
    write_plot_data,
)
from retailnb.evaluation.finetune import FinetuneResult
from retailnb.evaluation.overlap import resolve_overlap
from retailnb.evaluation.quickprobe import ProbeData, load_probe_data
from retailnb.evaluation.rejection import unseen_photos
from retailnb.evaluation.targets import target_manifest
from retailnb.results.records import EvaluateRecord, FinetuneRecord, GridRecord, RejectionSetup
from retailnb.train.engine import make_fabric
from retailnb.train.launch import launch, under_torchrun, worker_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluatePaths:
    """Where the stage reads and writes (``dvc.yaml`` passes them).

    Attributes:
        manifest: the data stage's manifest (the ``prepared`` target's images).
        pretrain_dir: one folder per pretraining variant, each with ``backbone.pt``.
        noisy_dir: ``round_<r>/backbone.pt`` per noisy-student round.
        features_dir: the target's feature cache, its manifest (real targets) and finetuning state.
        metrics: the record's JSON file.
        plots_dir: ``shots.json`` and ``confusion.json`` for ``dvc plots``.
    """

    manifest: str
    pretrain_dir: str
    noisy_dir: str
    features_dir: str
    metrics: str
    plots_dir: str


@dataclass(frozen=True)
class EvaluateResult:
    """The record, and what the report's figures draw: the data, per-backbone features and summaries."""

    record: EvaluateRecord
    data: ProbeData
    summaries: dict[str, list[dict[str, Any]]]
    rejections: dict[str, dict[str, Any]]
    features: dict[str, Features]
    finetuned: dict[str, FinetuneResult]
    main_predictions: np.ndarray


def finetune_record(result: FinetuneResult) -> FinetuneRecord:
    """The record of one finetuning baseline."""
    log.info("finetuning grid (%d learning rates) took %.0f s", len(result.grid), result.seconds)
    return FinetuneRecord(accuracy=result.accuracy, lr=result.lr, best_epoch=result.best_epoch,
                          val_accuracy=result.val_accuracy,
                          grid=[GridRecord(**vars(run)) for run in result.grid])


def rejection_setup(rejections: dict[str, dict[str, Any]], recall: float,
                    n_source_unknown: int = 0) -> RejectionSetup | None:
    """How many products the rejection evaluation enrolled and held out (the same for every backbone), and
    how many source products it was also measured on (``n_source_unknown``; 0: none)."""
    first = next(iter(rejections.values()), None)
    if first is None:
        return None
    return RejectionSetup(n_known=first["n_known"], n_unknown=first["n_unknown"], recall=recall,
                          n_source_unknown=n_source_unknown)


class LoadedTarget(NamedTuple):
    """What :func:`load_target` gives: the images, the training images dropped as copies of test images, and
    which training images no training stage read (:func:`~retailnb.evaluation.rejection.unseen_photos`)."""

    data: ProbeData
    n_dropped: int
    unseen: np.ndarray | None


def load_target(spec: EvaluateStageSpec, name: str, paths: EvaluatePaths) -> LoadedTarget:
    """The target's training and test images, decoded at the backbone's size, with ``evaluate.on_overlap``
    applied; the number of training images dropped because they are test images too (identical, or a
    copy within ``evaluate.overlap_distance``); and which training images the data stage's manifest
    (``paths.manifest``) trains no backbone on, the photos the rejection thresholds are chosen on."""
    manifest = read_manifest(target_manifest(name, spec.target, paths.manifest, Path(paths.features_dir) / "target",
                                             on_error=spec.on_error, min_size=spec.min_size))
    data = load_probe_data(manifest, spec.backbone.image_size, "probe_train", "probe_test",
                           storage=spec.compute.images)
    data, n_dropped = resolve_overlap(data, name, spec.on_overlap, spec.overlap_distance)
    trained = read_manifest(paths.manifest).training_paths()
    unseen = unseen_photos([manifest.resolve(r).resolve() for r in data.train], trained)
    if unseen is None:
        log.warning("%s: every training photo of the target also trained the backbones, so the unknown-product "
                    "thresholds are chosen on photos they know and accept fewer new photos than asked; "
                    "data.calibration_folds (e.g. 3) keeps some out of training for them", name)
    return LoadedTarget(data, n_dropped, unseen)


def load_source_unknowns(spec: EvaluateStageSpec, paths: EvaluatePaths) -> SourceUnknownData | None:
    """The source's unlabelled-only products' images (:func:`source_unknown_records`), decoded like the
    target's (``compute.images``, the backbone's image size): the second unknown set of the rejection
    evaluation. None unless ``evaluate.rejection.source_unknowns`` is on, the target is ``prepared`` (the
    data stage's manifest) and that manifest has such products."""
    if not spec.rejection.source_unknowns or spec.target.source != "prepared":
        return None
    manifest = read_manifest(paths.manifest)
    records = source_unknown_records(manifest)
    if not records:
        return None
    y, classes = encode_labels(records)
    files, size = manifest.paths(records), spec.backbone.image_size
    x = DiskArray(cached_images(files, size)) if spec.compute.images == "disk" else decode_images(files, size)
    return SourceUnknownData(records=records, x=x, y=np.asarray(y), classes=classes)


class EvaluateRunSpec(Spec):
    """The stage's spec, target name and paths, as JSON for the ``torchrun`` workers."""

    spec: EvaluateStageSpec
    name: str
    paths: EvaluatePaths


def run(spec: EvaluateStageSpec, name: str, paths: EvaluatePaths) -> EvaluateResult:
    """Probe every backbone few-shot, finetune the main one (and random weights: ``evaluate.finetune.random_init``),
    write the record and plot data.

    When ``spec.compute`` is distributed the features and the finetuning runs come from ``torchrun`` first
    (:func:`network_work`); what they leave is then reused here, whatever ``compute.resume`` says.
    """
    if spec.compute.distributed and not under_torchrun():
        launch("retailnb.stages.evaluate", EvaluateRunSpec(spec=spec, name=name, paths=paths),
               Path(paths.features_dir) / "run.json", spec.compute)
        spec = spec.model_copy(update={"compute": spec.compute.model_copy(update={"resume": "auto"})})
    data, n_dropped, unseen = load_target(spec, name, paths)
    source = load_source_unknowns(spec, paths)
    backbones = collect_backbones(paths.pretrain_dir, paths.noisy_dir, spec.extra_weights,
                                  variants=list(spec.variants))
    probe = spec.probe
    summaries, features, rejections = evaluate_backbones(
        backbones, data, architecture=spec.backbone.architecture, shots=shot_counts(probe.shots),
        draws=probe.draws, seed=probe.seed, knn_k=probe.knn_k, cache_dir=paths.features_dir,
        rejection=spec.rejection, source=source, calibrate=unseen,
    )
    finetuned = finetune_baselines(spec.backbone, Path(paths.pretrain_dir) / spec.main_variant / "backbone.pt", data,
                                   spec=spec.finetune, compute=spec.compute,
                                   state_dir=Path(paths.features_dir) / "finetune")
    record = EvaluateRecord(
        target=name, target_source=spec.target.source,
        methods=results_table(summaries, finetuned["pretrained"].accuracy, main=spec.main_variant,
                              rejections=rejections),
        finetune={init: finetune_record(result) for init, result in finetuned.items()},
        main_variant=spec.main_variant,
        n_classes=len(data.classes), n_train=len(data.y_train), n_test=len(data.y_test), n_overlap_dropped=n_dropped,
        rejection=rejection_setup(rejections, spec.rejection.recall,
                                  n_source_unknown=source.n_products if source is not None else 0),
    )
    record.write(paths.metrics)
    # one probe on all of the main backbone's training features: the confusion data and its figure
    main_predictions = probe_predictions(features[spec.main_variant], data)
    write_plot_data(summaries, finetuned["pretrained"], data, main_predictions, paths.plots_dir)
    return EvaluateResult(record=record, data=data, summaries=summaries, rejections=rejections, features=features,
                          finetuned=finetuned,
                          main_predictions=main_predictions)


def network_work(spec: EvaluateStageSpec, name: str, paths: EvaluatePaths) -> None:
    """What a distributed run does under ``torchrun``: every backbone's features (cached; the source's
    unlabelled-only products' too, when :func:`load_source_unknowns` finds them) and the finetuning
    baselines (their best weights saved), leaving the probes and the record to :func:`run`."""
    data = load_target(spec, name, paths).data
    backbones = collect_backbones(paths.pretrain_dir, paths.noisy_dir, spec.extra_weights,
                                  variants=list(spec.variants))
    backbones_features(backbones, data, architecture=spec.backbone.architecture, seed=spec.probe.seed,
                       cache_dir=paths.features_dir, source=load_source_unknowns(spec, paths))
    finetune_baselines(spec.backbone, Path(paths.pretrain_dir) / spec.main_variant / "backbone.pt", data,
                       spec=spec.finetune, compute=spec.compute, state_dir=Path(paths.features_dir) / "finetune")


def main(argv: list[str] | None = None) -> None:
    """Command line used under ``torchrun``: ``python -m retailnb.stages.evaluate RUN.json``."""
    job = worker_run(EvaluateRunSpec, argv, __doc__)
    make_fabric(job.spec.compute)  # joins the process group before the shared feature extraction
    network_work(job.spec, job.name, job.paths)


if __name__ == "__main__":
    main()

"""The noisy-student stage: every round trained, scored on the target, and written with its plot data."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from retailnb.atomic import atomic_write_text
from retailnb.config.noisy import NoisyStage
from retailnb.data.manifest import read_manifest
from retailnb.evaluation.quickprobe import load_probe_data
from retailnb.noisy.pseudolabels import threshold_curve
from retailnb.noisy.rounds import first_teacher, load_source, plot_rows, run_noisy_student
from retailnb.records import NoisyRecord


@dataclass(frozen=True)
class NoisyPaths:
    """Where the stage reads and writes (``dvc.yaml`` passes them).

    Attributes:
        manifest: the data stage's manifest.
        teacher_backbone: the main pretraining variant's ``backbone.pt``.
        out_dir: receives ``round_<r>/``.
        metrics: the record's JSON file.
        rounds_plot: probe and kNN accuracy per round (``dvc plots``).
        pseudolabels_plot: pseudolabel precision and coverage from round 1 (``dvc plots``).
    """

    manifest: str
    teacher_backbone: str
    out_dir: str
    metrics: str
    rounds_plot: str
    pseudolabels_plot: str


@dataclass(frozen=True)
class NoisyResult:
    """The stage's record, and round 1's teacher's precision and coverage against the threshold."""

    record: NoisyRecord
    threshold_curve: list[dict[str, float]]


CURVE_THRESHOLDS = [float(t) for t in np.linspace(0.0, 0.95, 20)]


def run(spec: NoisyStage, paths: NoisyPaths) -> NoisyResult:
    """Decode the source once, fit round 1's teacher once, run every round, write record and plot data."""
    source = load_source(paths.manifest, spec.backbone.image_size, storage=spec.compute.images)
    probe = load_probe_data(read_manifest(paths.manifest), spec.backbone.image_size, "probe_train", "probe_test")
    backbone, teacher = first_teacher(spec, paths.teacher_backbone, source)
    probs = teacher.predict_proba(source.unlabelled)
    curve = threshold_curve(probs, source.truth, CURVE_THRESHOLDS)
    rounds = run_noisy_student(spec, paths.out_dir, source, probe, backbone, probs)
    record = NoisyRecord(rounds=rounds, best_round=max(rounds, key=lambda row: row.probe_accuracy).round)
    record.write(paths.metrics)
    accuracy, quality = plot_rows(rounds)
    atomic_write_text(paths.rounds_plot, json.dumps(accuracy, indent=2) + "\n")
    atomic_write_text(paths.pseudolabels_plot, json.dumps(quality, indent=2) + "\n")
    return NoisyResult(record=record, threshold_curve=curve)

"""The noisy-student stage: every round trained, scored on the target, and written with its plot data.

With ``compute.devices > 1`` (or several nodes) :func:`run` starts the stage under ``torchrun`` through
:func:`retailnb.train.launch.launch`, as ``python -m retailnb.stages.noisy RUN.json``: every process decodes
the images, the teacher's forward passes over the unlabelled pool are shared out among them and gathered in
order (the pseudolabel table is the one-process run's), each student trains with DDP, and rank 0 alone
writes the outputs, which the calling process then reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retailnb.util.atomic import atomic_write_text
from retailnb.config.base import Spec
from retailnb.config.noisy import NoisyStageSpec
from retailnb.data.manifest import read_manifest
from retailnb.evaluation.quickprobe import load_probe_data
from retailnb.models.sharded import process_group
from retailnb.noisy.pseudolabels import threshold_curve
from retailnb.noisy.rounds import first_teacher, load_source, plot_rows, run_noisy_student
from retailnb.results.records import NoisyRecord, read_record
from retailnb.train.engine import make_fabric
from retailnb.train.launch import launch, under_torchrun, worker_run


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


class NoisyRunSpec(Spec):
    """The stage's spec and paths, as JSON for the ``torchrun`` workers."""

    spec: NoisyStageSpec
    paths: NoisyPaths


CURVE_THRESHOLDS = [float(t) for t in np.linspace(0.0, 0.95, 20)]

CURVE_FILE = "threshold_curve.json"
"""Round 1's teacher's precision and coverage per threshold, in ``out_dir`` (read back after a distributed run)."""


def run(spec: NoisyStageSpec, paths: NoisyPaths) -> NoisyResult:
    """Run the stage here, or under ``torchrun`` when ``spec.compute`` is distributed; see :func:`run_here`."""
    if spec.compute.distributed and not under_torchrun():
        launch("retailnb.stages.noisy", NoisyRunSpec(spec=spec, paths=paths), Path(paths.out_dir) / "run.json",
               spec.compute)
        curve = json.loads((Path(paths.out_dir) / CURVE_FILE).read_text())
        return NoisyResult(record=read_record(NoisyRecord, paths.metrics), threshold_curve=curve)
    return run_here(spec, paths)


def run_here(spec: NoisyStageSpec, paths: NoisyPaths) -> NoisyResult:
    """Decode the source once, fit round 1's teacher once, run every round, write record and plot data.

    In a distributed run every process calls it; rank 0 alone writes.
    """
    source = load_source(paths.manifest, spec.backbone.image_size, storage=spec.compute.images)
    pool = len(source.labels) + len(source.unlabelled_paths)
    if spec.noisy.batch_size > pool:
        raise ValueError(f"noisy.batch_size: {spec.noisy.batch_size} is more than the {pool} labelled and unlabelled "
                         f"images of {paths.manifest} a student can ever train on: a batch would hold copies of an "
                         "image; lower it to at most the number of images")
    probe = load_probe_data(read_manifest(paths.manifest), spec.backbone.image_size, "probe_train", "probe_test",
                            storage=spec.compute.images)
    backbone, teacher = first_teacher(spec, paths.teacher_backbone, source)
    probs = teacher.predict_proba(source.unlabelled)
    curve = threshold_curve(probs, source.truth, CURVE_THRESHOLDS)
    rounds = run_noisy_student(spec, paths.out_dir, source, probe, backbone, probs)
    record = NoisyRecord(rounds=rounds, best_round=max(rounds, key=lambda row: row.probe_accuracy).round)
    if process_group()[0] == 0:
        record.write(paths.metrics)
        accuracy, quality = plot_rows(rounds)
        atomic_write_text(paths.rounds_plot, json.dumps(accuracy, indent=2) + "\n")
        atomic_write_text(paths.pseudolabels_plot, json.dumps(quality, indent=2) + "\n")
        Path(paths.out_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(paths.out_dir) / CURVE_FILE, json.dumps(curve, indent=2) + "\n")
    return NoisyResult(record=record, threshold_curve=curve)


def main(argv: list[str] | None = None) -> None:
    """Command line used under ``torchrun``: ``python -m retailnb.stages.noisy RUN.json``."""
    job = worker_run(NoisyRunSpec, argv, __doc__)
    make_fabric(job.spec.compute)  # joins the process group before the teacher's shared inference
    run_here(job.spec, job.paths)


if __name__ == "__main__":
    main()

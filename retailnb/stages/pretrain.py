"""The pretraining stage: one contrastive variant trained, then scored on held-out source products.

:func:`train_here` trains in this process (CPU or one GPU); with ``compute.devices > 1`` (or several nodes)
:func:`train` starts it under ``torchrun`` through :func:`retailnb.train.launch.launch`, as
``python -m retailnb.stages.pretrain RUN.json``: every process decodes the images and trains its share of
each batch with DDP, and rank 0 alone writes the backbone, which the calling process then reads. The
training itself is :func:`retailnb.train.contrastive.train_contrastive`; the stage decides which images,
whether a saved state is resumed, the curves' logger and ``backbone.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retailnb.config.base import Spec
from retailnb.config.pretrain import ObjectivesSpec, PretrainStageSpec
from retailnb.data.manifest import read_manifest
from retailnb.evaluation.quickprobe import ProbeData, load_probe_data, probe_scores
from retailnb.models.backbone import create_backbone, feature_dim
from retailnb.models.backbone_info import BACKBONE_INFO, write_backbone_info
from retailnb.results.records import PretrainRecord, ProbeScores, TrainSummary
from retailnb.train.contrastive import train_contrastive, training_rows
from retailnb.train.datasets import load_images
from retailnb.train.engine import FitResult, can_resume, data_digest, make_fabric
from retailnb.train.launch import launch, under_torchrun, worker_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainPaths:
    """Where the stage reads and writes (``dvc.yaml`` passes them).

    Attributes:
        manifest: the data stage's manifest; roles ``labelled`` and ``unlabelled`` are trained on.
        out_dir: the model folder (``backbone.pt``, a timm state dict; ``backbone.json``; ``train_state.pt``).
        live_dir: dvclive's folder for the curves; empty for none.
        metrics: the record's JSON file (written by :func:`run` only).
    """

    manifest: str
    out_dir: str
    live_dir: str
    metrics: str


class PretrainRunSpec(Spec):
    """The variant's spec and the stage's paths, as JSON for the ``torchrun`` workers.

    Attributes:
        spec: everything the variant reads from ``params.yaml``.
        paths: inputs and outputs.
        decode_workers: processes decoding images; None uses every core.
    """

    spec: PretrainStageSpec
    paths: PretrainPaths
    decode_workers: int | None = None


def monitor_data(spec: PretrainStageSpec, manifest: str) -> ProbeData:
    """The monitor split: held-out source products, decoded at the backbone's image size."""
    return load_probe_data(read_manifest(manifest), spec.backbone.image_size, "monitor_train", "monitor_test",
                           storage=spec.compute.images)


def run(spec: PretrainStageSpec, name: str, paths: PretrainPaths, *, monitor: ProbeData | None = None) -> PretrainRecord:
    """Train variant ``name`` (or resume it), score it against random weights, write its record.

    Args:
        spec: the variant's parameters (``load_stage(PretrainStageSpec, key=name)``).
        name: the variant's key in ``pretrain.variants``.
        paths: inputs and outputs.
        monitor: the decoded monitor split, when the caller has it already.
    """
    info = train(spec, paths)
    data = monitor or monitor_data(spec, paths.manifest)
    trained = create_backbone(spec.backbone.architecture, weights=str(Path(paths.out_dir) / "backbone.pt"))
    torch.manual_seed(spec.engine.seed)  # the same random weights in every run
    random_init = create_backbone(spec.backbone.architecture)
    record = PretrainRecord(
        variant=name,
        objectives={field.removesuffix("_weight"): weight for field, weight in spec.variant.model_dump().items()},
        monitor={"pretrained": ProbeScores(**probe_scores(trained, data)),
                 "random_init": ProbeScores(**probe_scores(random_init, data))},
        train=TrainSummary(final_loss=info["history"]["loss"][-1]),
        history=info["history"],
    )
    record.write(paths.metrics)
    return record


def train(spec: PretrainStageSpec, paths: PretrainPaths, *, decode_workers: int | None = None) -> dict[str, Any]:
    """Pretrain (in this process, or under torchrun when ``spec.compute`` is distributed) and return the run's info.

    Returns:
        The content of ``out_dir/backbone.json``: backbone, sizes and loss history.

    Raises:
        subprocess.CalledProcessError: a distributed run failed (its output names the cause).
    """
    out_dir = Path(paths.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec.compute.distributed and not under_torchrun():
        launch("retailnb.stages.pretrain", PretrainRunSpec(spec=spec, paths=paths, decode_workers=decode_workers),
               out_dir / "run.json", spec.compute)
    else:
        train_here(spec, paths, decode_workers=decode_workers)
    info: dict[str, Any] = json.loads((out_dir / "backbone.json").read_text())
    return info


def train_here(spec: PretrainStageSpec, paths: PretrainPaths, *, decode_workers: int | None = None,
               stop_after_epoch: int | None = None) -> FitResult:
    """Run (or resume) the variant's pretraining in this process; write ``backbone.pt`` and ``backbone.json``.

    In a distributed run every process calls it; rank 0 alone writes.

    Args:
        spec: the variant's parameters.
        paths: inputs and outputs (``metrics`` is not written here).
        decode_workers: processes decoding images; None uses every core.
        stop_after_epoch: stop after this epoch as if interrupted (tests of resumption).
    """
    out_dir = Path(paths.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, labels, classes = training_rows(paths.manifest, spec.variant)
    if spec.sampler.batch_size > len(files):
        raise ValueError(f"pretrain.sampler.batch_size: {spec.sampler.batch_size} is more than the {len(files)} images "
                         f"pretraining reads from {paths.manifest}: a batch would hold copies of an image, each the "
                         "other's contrastive negative; lower it to at most the number of images")
    log.info("pretraining on %d images (%d labelled, %d classes)", len(files), int((labels >= 0).sum()), len(classes))
    images = load_images(files, spec.backbone.image_size, spec.compute.images, workers=decode_workers)
    # the parameters and the data: a finished state of other images must not be "resumed" (see data_digest)
    run_key = json.dumps({"spec": spec.model_dump(mode="json"), "data": data_digest(images, labels)}, sort_keys=True)
    resuming = can_resume(out_dir / "train_state.pt", run_key, spec.compute.resume)
    if resuming:
        log.info("resuming from %s", out_dir / "train_state.pt")
    fabric = make_fabric(spec.compute)
    live = _live(paths.live_dir, resume=resuming) if paths.live_dir and fabric.is_global_zero else None
    try:
        result, model = train_contrastive(
            fabric, images, labels, out_dir,
            backbone=spec.backbone, model=spec.model, objectives=spec.variant, sampler=spec.sampler,
            views=spec.views, engine=spec.engine, compute=spec.compute,
            run_key=run_key, live=live, stop_after_epoch=stop_after_epoch,
            label=f"pretrain {out_dir.name} ({_weights(spec.variant)})",
        )
    finally:
        if live is not None:
            live.end()
    if fabric.is_global_zero:
        log.info("%.1f images/s (decoding %.0f s, training steps %.0f s)", result.images_per_second,
                 result.data_seconds, result.step_seconds)
        write_backbone_info(out_dir / BACKBONE_INFO, architecture=spec.backbone.architecture,
                            image_size=spec.backbone.image_size, feature_dim=feature_dim(model.backbone),
                            weights=out_dir / "backbone.pt", images=len(files), labelled_classes=len(classes),
                            history=result.history, spec=spec.model_dump(mode="json"))
    return result


def _weights(objectives: ObjectivesSpec) -> str:
    """The switched-on objectives and their weights, for the progress label: ``simclr 1, supcon 1``."""
    return ", ".join(f"{field.removesuffix('_weight')} {weight:g}"
                     for field, weight in objectives.model_dump().items() if weight > 0)


def _live(live_dir: str, resume: bool) -> Any:
    """A dvclive logger that leaves dvc.yaml alone; it continues its curves when the run resumes."""
    from dvclive import Live

    return Live(live_dir, dvcyaml=None, save_dvc_exp=False, resume=resume, report=None)


def main(argv: list[str] | None = None) -> None:
    """Command line used under ``torchrun``: ``python -m retailnb.stages.pretrain RUN.json``."""
    job = worker_run(PretrainRunSpec, argv, __doc__)
    train_here(job.spec, job.paths, decode_workers=job.decode_workers)


if __name__ == "__main__":
    main()

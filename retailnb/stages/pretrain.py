"""The pretraining stage: one contrastive variant trained, then scored on held-out source products."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from retailnb.config.pretrain import PretrainStageSpec
from retailnb.data.manifest import read_manifest
from retailnb.evaluation.quickprobe import ProbeData, load_probe_data, probe_scores
from retailnb.models.backbone import create_backbone
from retailnb.results.records import PretrainRecord, ProbeScores, TrainSummary
from retailnb.train.pretraining import PretrainRunSpec, run_pretrain


@dataclass(frozen=True)
class PretrainPaths:
    """Where the stage reads and writes (``dvc.yaml`` passes them).

    Attributes:
        manifest: the data stage's manifest.
        out_dir: the model folder (``backbone.pt``, ``backbone.json``, ``train_state.pt``).
        live_dir: dvclive's folder for the curves.
        metrics: the record's JSON file.
    """

    manifest: str
    out_dir: str
    live_dir: str
    metrics: str


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
    info = run_pretrain(PretrainRunSpec(spec=spec, manifest=paths.manifest, out_dir=paths.out_dir,
                                    live_dir=paths.live_dir))
    data = monitor or monitor_data(spec, paths.manifest)
    trained = create_backbone(spec.backbone.architecture, weights=str(Path(paths.out_dir) / "backbone.pt"))
    torch.manual_seed(spec.engine.seed)  # the same random weights in every run
    random_init = create_backbone(spec.backbone.architecture)
    record = PretrainRecord(
        variant=name,
        objectives={field.removesuffix("_weight"): weight for field, weight in spec.variant.model_dump().items()},
        monitor={"pretrained": ProbeScores(**probe_scores(trained, data)),
                 "random_init": ProbeScores(**probe_scores(random_init, data))},
        train=TrainSummary(images_per_second=info["images_per_second"], final_loss=info["history"]["loss"][-1]),
        history=info["history"],
    )
    record.write(paths.metrics)
    return record

"""The noisy-student loop: teacher labels the unlabelled pool, a noised student learns, and repeats.

Each round writes ``round_<r>/``: the pseudolabel table a person can inspect (``pseudolabels.csv``),
the student (``student.pt``, a full timm classifier state dict; ``backbone.pt``, the same without its
classifier, which timm loads with ``num_classes=0``; ``backbone.json``, its architecture, image size and
feature width, as pretraining writes beside its backbone) and the training state it resumes from. Round 0 is
the contrastive backbone alone, so the per-round probe accuracy shows what each round adds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from retailnb.config.noisy import NoisyStageSpec
from retailnb.data.manifest import encode_labels, portable_path, read_manifest
from retailnb.evaluation.quickprobe import ProbeData, probe_scores
from retailnb.models.backbone import create_backbone, feature_dim
from retailnb.models.backbone_info import BACKBONE_INFO, write_backbone_info
from retailnb.models.checkpoint import atomic_torch_save
from retailnb.models.sharded import broadcast_state, sharded_rows
from retailnb.models.classifier import (
    EmbeddingStudent,
    StudentObjective,
    backbone_state,
    build_student,
    network_probabilities,
)
from retailnb.noisy.pseudolabels import (
    Selection,
    pseudolabel_table,
    select_pseudolabels,
    selection_quality,
    write_pseudolabel_table,
)
from retailnb.noisy.student import FeatureTeacher, fit_feature_teacher
from retailnb.results.records import RoundRecord
from retailnb.train.datasets import (
    ImageSource,
    ImageStorage,
    TargetDataset,
    concat_images,
    load_images,
    select_images,
)
from retailnb.train.engine import data_digest, fit, make_fabric
from retailnb.train.sampler import EpochBatchSampler
from retailnb.transforms.views import randaugment_transform

log = logging.getLogger(__name__)


def round_key(spec: NoisyStageSpec, round_: int, data: str) -> str:
    """Identifies round ``round_``: its parameters and ``data``, the digest of its training images, targets
    and initial weights (:func:`~retailnb.train.engine.data_digest`), so that a stale training state (of
    other parameters, another teacher or other data) is never resumed."""
    return json.dumps({"round": round_, "data": data, **spec.model_dump(mode="json")}, sort_keys=True)


@dataclass(frozen=True)
class SourceImages:
    """Decoded labelled and unlabelled source images, with labels over the labelled classes."""

    labelled: ImageSource
    labels: np.ndarray
    unlabelled: ImageSource
    unlabelled_paths: list[str]
    truth: np.ndarray  # teacher-class index of each unlabelled image; len(classes) for a product outside
    # the teacher's classes (an unlabelled-only product: every pseudolabel of it is wrong); -1 unknown
    truth_names: list[str]
    classes: list[str]


def load_source(manifest_path: str, image_size: int, decode_workers: int | None = None,
                storage: ImageStorage = "memory") -> SourceImages:
    """Decode the labelled and unlabelled rows once for every round, held as ``storage`` says.

    Both are decoded together, so that on disk they are two views of one cache file (a round's training
    set joins the labelled images with a selection of the unlabelled ones).
    """
    manifest = read_manifest(manifest_path)
    labelled, unlabelled = manifest.select("labelled"), manifest.select("unlabelled")
    if not labelled or not unlabelled:
        raise ValueError(f"{manifest_path}: the noisy student needs 'labelled' and 'unlabelled' rows")
    y, classes = encode_labels(labelled)
    index = {c: i for i, c in enumerate(classes)}
    truth = np.array([index.get(r.class_name, len(classes)) if r.class_name else -1 for r in unlabelled])
    images = load_images(manifest.paths(labelled) + manifest.paths(unlabelled), image_size, storage,
                         workers=decode_workers)
    return SourceImages(
        labelled=images[: len(labelled)] if isinstance(images, torch.Tensor) else images.select(slice(0, len(labelled))),
        labels=np.asarray(y),
        unlabelled=images[len(labelled) :] if isinstance(images, torch.Tensor) else images.select(slice(len(labelled), None)),
        # as the person inspecting pseudolabels.csv sees them: relative to the folder the stage runs in
        unlabelled_paths=[portable_path(p, Path.cwd()) for p in manifest.paths(unlabelled)],
        truth=truth,
        truth_names=[r.class_name for r in unlabelled],
        classes=classes,
    )


def student_dataset(source: SourceImages, probs: np.ndarray, spec: NoisyStageSpec) -> tuple[TargetDataset, Selection]:
    """Labelled images with one-hot targets plus the selected pseudolabelled images, under RandAugment."""
    noisy = spec.noisy
    selection = select_pseudolabels(probs, noisy.pseudo)
    n_classes = len(source.classes)
    onehot = np.eye(n_classes, dtype=np.float32)[source.labels]
    images = concat_images(source.labelled, select_images(source.unlabelled, selection.indices))
    targets = torch.from_numpy(np.concatenate([onehot, selection.targets.astype(np.float32)]))
    transform = randaugment_transform(spec.backbone.image_size, noisy.randaugment.magnitude, noisy.randaugment.ops)
    return TargetDataset(images, targets, transform), selection


def target_backbone(spec: NoisyStageSpec, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A feature extractor (``num_classes=0``) with a student's backbone weights."""
    model = timm.create_model(spec.student_architecture, num_classes=0)
    model.load_state_dict(state)
    return model


def first_teacher(spec: NoisyStageSpec, teacher_backbone: str, source: SourceImages) -> tuple[torch.nn.Module, FeatureTeacher]:
    """Round 1's teacher: the contrastive backbone (frozen) and a classifier fitted on its features."""
    backbone = create_backbone(spec.backbone.architecture, weights=teacher_backbone)
    teacher = fit_feature_teacher(backbone, source.labelled, source.labels, classifier=spec.noisy.teacher_classifier,
                                  seed=spec.noisy.engine.seed)
    return backbone, teacher


def run_noisy_student(spec: NoisyStageSpec, out_dir: str, source: SourceImages, probe: ProbeData,
                      teacher_backbone: torch.nn.Module, teacher_probs: np.ndarray) -> list[RoundRecord]:
    """Run every round; return one record per round (round 0: the contrastive backbone alone).

    Args:
        spec: the stage's settings.
        out_dir: receives ``round_<r>/``.
        source: the decoded labelled and unlabelled source images (:func:`load_source`).
        probe: target-catalogue images each round's backbone is scored on.
        teacher_backbone: round 1's teacher backbone (:func:`first_teacher`).
        teacher_probs: its teacher's class probabilities on ``source.unlabelled``.
    """
    noisy = spec.noisy
    out = Path(out_dir)
    rows = [RoundRecord.model_validate({"round": 0, **probe_scores(teacher_backbone, probe)})]
    probs = teacher_probs
    backbone_weights = teacher_backbone.state_dict()
    fabric = make_fabric(spec.compute)
    for r in range(1, noisy.rounds + 1):
        folder = out / f"round_{r}"
        folder.mkdir(parents=True, exist_ok=True)
        dataset, selection = student_dataset(source, probs, spec)
        if len(dataset) < noisy.batch_size:
            log.warning("noisy.batch_size: %d is more than the %d images of round %d (labelled and selected "
                        "pseudolabelled): its one batch holds copies of images", noisy.batch_size, len(dataset), r)
        # NaN (no selected image with known truth) is written as null: JSON has no NaN
        quality = {k: None if v != v else v for k, v in selection_quality(selection, source.truth).items()}
        table = pseudolabel_table(source.unlabelled_paths, selection, source.classes, source.truth_names)
        if fabric.is_global_zero:
            write_pseudolabel_table(table, folder / "pseudolabels.csv")
        data = data_digest(dataset.images, dataset.targets, backbone_weights)
        fabric.seed_everything(noisy.engine.seed + r, verbose=False)
        student = build_student(
            spec.student_architecture,
            len(source.classes),
            drop_rate=noisy.student.drop_rate,
            drop_path_rate=noisy.student.drop_path_rate,
            init=noisy.student.init,
            teacher_backbone_state=backbone_weights,
        )
        # with SupCon, a share of each batch is groups of images sharing a (pseudo)label: its positives
        supcon = noisy.supcon.weight > 0
        sampler = EpochBatchSampler(
            dataset.targets.argmax(dim=1).numpy() if supcon else np.full(len(dataset), -1),
            rank=fabric.global_rank, world_size=fabric.world_size, batch_size=noisy.batch_size,
            images_per_class=noisy.supcon.images_per_class if supcon else 2,
            supcon_fraction=noisy.supcon.batch_fraction if supcon else 0.0, seed=noisy.engine.seed + r,
        )
        objective = StudentObjective(noisy.supcon.weight, noisy.supcon.temperature,
                                     gather_distributed=fabric.world_size > 1)
        result = fit(
            fabric, EmbeddingStudent(student) if supcon else student, dataset, sampler, objective,
            noisy.engine, spec.compute, state_path=folder / "train_state.pt", run_key=round_key(spec, r, data),
            label=f"noisy student round {r}",
        )
        broadcast_state(student)  # every process scores and pseudolabels with the network rank 0 saves
        backbone_weights = backbone_state(student)
        if fabric.is_global_zero:
            atomic_torch_save(student.state_dict(), folder / "student.pt")
            atomic_torch_save(backbone_weights, folder / "backbone.pt")
            write_backbone_info(folder / BACKBONE_INFO, architecture=spec.student_architecture,
                                image_size=spec.backbone.image_size, feature_dim=feature_dim(student),
                                weights=folder / "backbone.pt", round=r)
        pseudo_targets = dataset.targets[len(source.labels):]
        rows.append(RoundRecord.model_validate({
            "round": r,
            **probe_scores(target_backbone(spec, backbone_weights), probe),
            **quality,
            "target_confidence": float(pseudo_targets.max(dim=1).values.mean()) if len(pseudo_targets) else None,
            "train_loss": result.history["loss"][-1],
            "images": len(dataset),
        }))
        log.info("round %d: %s", r, rows[-1])
        probs = student_probabilities(student, source.unlabelled)
    return rows


def student_probabilities(student: torch.nn.Module, images: ImageSource, batch_size: int = 256) -> np.ndarray:
    """The next teacher's probabilities on ``images``, batches shared out among the processes of a distributed
    run (:func:`~retailnb.models.sharded.sharded_rows`), every row in every process."""
    return sharded_rows(lambda start, stop: network_probabilities(student, images[start:stop]),
                        int(images.shape[0]), batch_size)


PLOTTED_ACCURACY = ("round", "probe_accuracy", "knn_accuracy")
PLOTTED_QUALITY = ("round", "precision", "coverage")


def plot_rows(rows: list[RoundRecord]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of :func:`run_noisy_student` cut into the two files ``dvc plots show`` draws.

    DVC renders a plot file only when every row has the same fields, and round 0 (the teacher before
    any pseudolabels) has no precision or coverage. So: the probe and kNN accuracy of every round, and
    the pseudolabels' precision and coverage from round 1 on.
    """
    accuracy = [row.model_dump(include=set(PLOTTED_ACCURACY)) for row in rows]
    quality = [row.model_dump(include=set(PLOTTED_QUALITY)) for row in rows if row.round > 0]
    return accuracy, quality

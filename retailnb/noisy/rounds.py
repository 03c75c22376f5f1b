"""The noisy-student loop: teacher labels the unlabelled pool, a noised student learns, and repeats.

Each round writes ``round_<r>/``: the pseudolabel table a person can inspect (``pseudolabels.csv``),
the student (``student.pt``, a full timm classifier state dict; ``backbone.pt``, the same without its
classifier, which timm loads with ``num_classes=0``) and the training state it resumes from. Round 0 is
the contrastive backbone alone, so the per-round probe accuracy shows what each round adds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from retailnb.data.images import decode_images
from retailnb.data.manifest import encode_labels, read_manifest
from retailnb.evaluation.quickprobe import ProbeData, load_probe_data, probe_scores
from retailnb.models.backbone import create_backbone
from retailnb.models.checkpoint import atomic_torch_save
from retailnb.noisy.pseudolabels import (
    PseudolabelConfig,
    pseudolabel_table,
    select_pseudolabels,
    selection_quality,
    write_pseudolabel_table,
)
from retailnb.noisy.student import (
    EmbeddingStudent,
    StudentObjective,
    backbone_state,
    build_student,
    fit_feature_teacher,
    network_probabilities,
)
from retailnb.train.datasets import TargetDataset, to_chw_uint8
from retailnb.train.engine import EngineConfig, fit, make_fabric
from retailnb.train.sampler import EpochBatchSampler
from retailnb.transforms.views import randaugment_transform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NoisyStudentSpec:
    """Everything the noisy-student stage needs.

    Attributes:
        manifest: the data stage's manifest (roles ``labelled``, ``unlabelled``, ``probe_*``).
        teacher_backbone: the contrastive backbone file (timm state dict).
        teacher_architecture: its timm name.
        out_dir: receives ``round_<r>/`` folders.
        image_size: side of the square images.
        rounds: teacher-student rounds.
        teacher_classifier: round 1's classifier on frozen features: ``logreg`` or ``linear``.
        student_architecture: timm name of the student; empty for the teacher's.
        student_init: ``teacher`` (start from the teacher's backbone) or ``scratch``.
        drop_rate: dropout before the student's classifier (noise).
        drop_path_rate: stochastic depth of the student (noise).
        randaugment_magnitude: RandAugment strength (noise), 0 to 30.
        randaugment_ops: RandAugment operations per image.
        supcon_weight: weight of SupCon on the student's features over the labelled and pseudolabelled
            images (0: cross-entropy only).
        supcon_temperature: SupCon's temperature.
        batch_size: images per batch and process.
        pseudo: pseudolabel selection.
        engine: optimisation and devices, shared with the contrastive stage's engine.
        decode_workers: processes decoding images; None uses every core.
    """

    manifest: str
    teacher_backbone: str
    teacher_architecture: str
    out_dir: str
    image_size: int = 64
    rounds: int = 2
    teacher_classifier: str = "logreg"
    student_architecture: str = ""
    student_init: str = "teacher"
    drop_rate: float = 0.2
    drop_path_rate: float = 0.1
    randaugment_magnitude: int = 9
    randaugment_ops: int = 2
    supcon_weight: float = 0.0
    supcon_temperature: float = 0.1
    batch_size: int = 128
    pseudo: PseudolabelConfig = field(default_factory=PseudolabelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    decode_workers: int | None = None

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"noisy.rounds must be at least 1, got {self.rounds}")

    @property
    def architecture(self) -> str:
        """The student's timm architecture."""
        return self.student_architecture or self.teacher_architecture

    def round_key(self, round_: int) -> str:
        """Identifies round ``round_``'s parameters, so a stale training state is never resumed."""
        return json.dumps({"round": round_, **asdict(self)}, sort_keys=True, default=str)


@dataclass(frozen=True)
class SourceImages:
    """Decoded labelled and unlabelled source images, with labels over the labelled classes."""

    labelled: torch.Tensor
    labels: np.ndarray
    unlabelled: torch.Tensor
    unlabelled_paths: list[str]
    truth: np.ndarray  # teacher-class index of each unlabelled image; len(classes) for a product outside
    # the teacher's classes (an unlabelled-only product: every pseudolabel of it is wrong); -1 unknown
    truth_names: list[str]
    classes: list[str]


def load_source(spec: NoisyStudentSpec) -> SourceImages:
    """Decode the labelled and unlabelled rows once for every round."""
    manifest = read_manifest(spec.manifest)
    labelled, unlabelled = manifest.select("labelled"), manifest.select("unlabelled")
    if not labelled or not unlabelled:
        raise ValueError(f"{spec.manifest}: the noisy student needs 'labelled' and 'unlabelled' rows")
    y, classes = encode_labels(labelled)
    index = {c: i for i, c in enumerate(classes)}
    truth = np.array([index.get(r.class_name, len(classes)) if r.class_name else -1 for r in unlabelled])
    decode = lambda rows: to_chw_uint8(decode_images(manifest.paths(rows), spec.image_size, workers=spec.decode_workers))  # noqa: E731
    return SourceImages(
        labelled=decode(labelled),
        labels=np.asarray(y),
        unlabelled=decode(unlabelled),
        unlabelled_paths=[str(p) for p in manifest.paths(unlabelled)],
        truth=truth,
        truth_names=[r.class_name for r in unlabelled],
        classes=classes,
    )


def student_dataset(source: SourceImages, probs: np.ndarray, spec: NoisyStudentSpec) -> tuple[TargetDataset, Any]:
    """Labelled images with one-hot targets plus the selected pseudolabelled images, under RandAugment."""
    selection = select_pseudolabels(probs, spec.pseudo)
    n_classes = len(source.classes)
    onehot = np.eye(n_classes, dtype=np.float32)[source.labels]
    images = torch.cat([source.labelled, source.unlabelled[torch.tensor(selection.indices, dtype=torch.long)]])
    targets = torch.from_numpy(np.concatenate([onehot, selection.targets.astype(np.float32)]))
    transform = randaugment_transform(spec.image_size, spec.randaugment_magnitude, spec.randaugment_ops)
    return TargetDataset(images, targets, transform), selection


def target_backbone(spec: NoisyStudentSpec, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A feature extractor (``num_classes=0``) with a student's backbone weights."""
    model = timm.create_model(spec.architecture, num_classes=0)
    model.load_state_dict(state)
    return model


def run_noisy_student(spec: NoisyStudentSpec, probe: ProbeData | None = None) -> list[dict[str, Any]]:
    """Run every round; return one metrics row per round (round 0: the contrastive backbone alone).

    Args:
        spec: the stage's settings.
        probe: target-catalogue images to score each round's backbone on; loaded from the manifest's
            ``probe_train``/``probe_test`` roles when None.
    """
    out = Path(spec.out_dir)
    source = load_source(spec)
    probe = probe or load_probe_data(read_manifest(spec.manifest), spec.image_size, "probe_train", "probe_test")
    teacher_backbone = create_backbone(spec.teacher_architecture, weights=spec.teacher_backbone)
    rows: list[dict[str, Any]] = [{"round": 0, **probe_scores(teacher_backbone, probe)}]
    teacher = fit_feature_teacher(teacher_backbone, source.labelled, source.labels, classifier=spec.teacher_classifier, seed=spec.engine.seed)
    probs = teacher.predict_proba(source.unlabelled)
    backbone_weights = teacher_backbone.state_dict()
    fabric = make_fabric(spec.engine)
    for r in range(1, spec.rounds + 1):
        folder = out / f"round_{r}"
        folder.mkdir(parents=True, exist_ok=True)
        dataset, selection = student_dataset(source, probs, spec)
        # NaN (no selected image with known truth) is written as null: JSON has no NaN
        quality = {k: None if v != v else v for k, v in selection_quality(selection, source.truth).items()}
        table = pseudolabel_table(source.unlabelled_paths, selection, source.classes, source.truth_names)
        write_pseudolabel_table(table, folder / "pseudolabels.csv")
        fabric.seed_everything(spec.engine.seed + r, verbose=False)
        student = build_student(
            spec.architecture,
            len(source.classes),
            drop_rate=spec.drop_rate,
            drop_path_rate=spec.drop_path_rate,
            init=spec.student_init,
            teacher_backbone_state=backbone_weights,
        )
        # with SupCon, half of each batch is groups of 4 images sharing a (pseudo)label: its positives
        supcon = spec.supcon_weight > 0
        sampler = EpochBatchSampler(
            dataset.targets.argmax(dim=1).numpy() if supcon else np.full(len(dataset), -1),
            rank=fabric.global_rank, world_size=fabric.world_size, batch_size=spec.batch_size,
            images_per_class=4 if supcon else 2, supcon_fraction=0.5 if supcon else 0.0, seed=spec.engine.seed + r,
        )
        objective = StudentObjective(spec.supcon_weight, spec.supcon_temperature,
                                     gather_distributed=fabric.world_size > 1)
        result = fit(
            fabric, EmbeddingStudent(student) if supcon else student, dataset, sampler, objective,
            spec.engine, state_path=folder / "train_state.pt", run_key=spec.round_key(r),
        )
        backbone_weights = backbone_state(student)
        if fabric.is_global_zero:
            atomic_torch_save(student.state_dict(), folder / "student.pt")
            atomic_torch_save(backbone_weights, folder / "backbone.pt")
        rows.append(
            {
                "round": r,
                **probe_scores(target_backbone(spec, backbone_weights), probe),
                **quality,
                "train_loss": result.history["loss"][-1],
                "images": len(dataset),
            }
        )
        log.info("round %d: %s", r, rows[-1])
        probs = network_probabilities(student, source.unlabelled)
    return rows


PLOTTED_ACCURACY = ("round", "probe_accuracy", "knn_accuracy")
PLOTTED_QUALITY = ("round", "precision", "coverage")


def plot_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of :func:`run_noisy_student` cut into the two files ``dvc plots show`` draws.

    DVC renders a plot file only when every row has the same fields, and round 0 (the teacher before
    any pseudolabels) has no precision or coverage. So: the probe and kNN accuracy of every round, and
    the pseudolabels' precision and coverage from round 1 on.
    """
    accuracy = [{k: row[k] for k in PLOTTED_ACCURACY} for row in rows]
    quality = [{k: row[k] for k in PLOTTED_QUALITY} for row in rows if row["round"] > 0]
    return accuracy, quality

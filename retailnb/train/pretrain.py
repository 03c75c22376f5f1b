"""The contrastive pretraining run: manifest in, a timm-loadable backbone checkpoint out.

``pretrain(spec)`` runs in the calling process (CPU or one GPU). For several GPUs (or several CPU
processes) the same spec is written to JSON and run under ``torchrun`` through this module's command
line, ``python -m retailnb.train.pretrain SPEC.json``; :func:`retailnb.train.launch.run_spec` does that.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retailnb.data.images import decode_images
from retailnb.data.manifest import encode_labels, read_manifest
from retailnb.models.backbone import feature_dim
from retailnb.models.checkpoint import save_backbone
from retailnb.train.contrastive import (
    ContrastiveConfig,
    ContrastiveObjective,
    build_model,
)
from retailnb.train.datasets import MultiViewDataset, TargetDataset, to_chw_uint8
from retailnb.train.engine import EngineConfig, FitResult, can_resume, fit, make_fabric
from retailnb.train.sampler import EpochBatchSampler
from retailnb.transforms.batch_views import BatchViews
from retailnb.transforms.views import retail_view_transform

log = logging.getLogger(__name__)
VIEWS_ON = ("batch", "worker")


@dataclass(frozen=True)
class ViewConfig:
    """Strengths of the catalogue-to-shelf augmentations (see ``retail_view_transform``)."""

    crop_scale_min: float = 0.3
    perspective: float = 0.3
    rotation: float = 10.0
    color_jitter: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    occlusion_p: float = 0.5
    hflip_p: float = 0.0
    # where views are drawn: "batch" (kornia, whole batch on its device, in the training step) or
    # "worker" (torchvision, image by image in DataLoader workers)
    on: str = "batch"

    def __post_init__(self) -> None:
        if self.on not in VIEWS_ON:
            raise ValueError(f"pretrain.views.on must be one of {VIEWS_ON}, got {self.on!r}")

    def strengths(self) -> dict[str, Any]:
        """The keyword arguments shared by ``retail_view_transform`` and ``BatchViews``."""
        return dict(
            crop_scale=(self.crop_scale_min, 1.0),
            perspective=self.perspective,
            rotation=self.rotation,
            color_jitter=self.color_jitter,
            hue=self.hue,
            grayscale_p=self.grayscale_p,
            blur_p=self.blur_p,
            occlusion_p=self.occlusion_p,
            hflip_p=self.hflip_p,
        )


@dataclass(frozen=True)
class PretrainSpec:
    """Everything one pretraining run needs; JSON-serialisable so ``torchrun`` workers get it too.

    Attributes:
        manifest: the data stage's manifest; roles ``labelled`` and ``unlabelled`` are trained on.
        out_dir: receives ``backbone.pt`` (timm state dict), ``backbone.json`` and ``train_state.pt``.
        live_dir: dvclive folder for the curves; empty for none.
        image_size: side of the square training images.
        batch_size: images per batch and process (each seen in ``n_views`` views).
        images_per_class: labelled images of one class placed together for SupCon.
        supcon_fraction: share of each batch given to such labelled groups.
        model: backbone, head and objectives.
        engine: optimisation and devices.
        views: augmentation strengths.
        decode_workers: processes decoding images; None uses every core.
    """

    manifest: str
    out_dir: str
    live_dir: str = ""
    image_size: int = 64
    batch_size: int = 128
    images_per_class: int = 4
    supcon_fraction: float = 0.5
    model: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    decode_workers: int | None = None

    def to_json(self) -> str:
        """The spec as JSON (nested dataclasses as objects)."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> PretrainSpec:
        """The spec written by :meth:`to_json`."""
        data: dict[str, Any] = json.loads(text)
        return cls(
            **{k: v for k, v in data.items() if k not in ("model", "engine", "views")},
            model=ContrastiveConfig(**data["model"]),
            engine=EngineConfig(**data["engine"]),
            views=ViewConfig(**data["views"]),
        )


def training_rows(spec: PretrainSpec) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image paths and labels (-1 for unlabelled) the run trains on, and the labelled class names.

    SimCLR uses every source image; with SimCLR switched off only the labelled images remain.
    """
    manifest = read_manifest(spec.manifest)
    labelled = manifest.select("labelled")
    unlabelled = manifest.select("unlabelled") if spec.model.simclr_weight > 0 else []
    if not labelled and spec.model.supcon_weight > 0:
        raise ValueError(f"{spec.manifest}: SupCon needs rows with role 'labelled', found none")
    if not labelled and not unlabelled:
        raise ValueError(f"{spec.manifest}: no 'labelled' or 'unlabelled' rows to pretrain on")
    y, classes = encode_labels(labelled)
    labels = np.concatenate([np.asarray(y, dtype=np.int64), np.full(len(unlabelled), -1, dtype=np.int64)])
    return manifest.paths(labelled) + manifest.paths(unlabelled), labels, classes


def training_dataset(spec: PretrainSpec, images: torch.Tensor, labels: np.ndarray) -> tuple[Any, BatchViews | None]:
    """The dataset and, for batch views, the module that draws them in the training step.

    With ``views.on == "worker"`` the dataset yields augmented views (image by image, in DataLoader
    workers); with ``"batch"`` it yields uint8 images and :class:`BatchViews` augments whole batches.
    """
    if spec.views.on == "worker":
        transform = retail_view_transform(spec.image_size, **spec.views.strengths())
        return MultiViewDataset(images, labels, transform, n_views=spec.model.n_views), None
    return TargetDataset(images, torch.as_tensor(labels)), BatchViews(spec.image_size, **spec.views.strengths())


def pretrain(spec: PretrainSpec, *, stop_after_epoch: int | None = None) -> FitResult:
    """Run (or resume) contrastive pretraining and write the backbone; see :class:`PretrainSpec`."""
    out_dir = Path(spec.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, labels, classes = training_rows(spec)
    log.info("pretraining on %d images (%d labelled, %d classes)", len(paths), int((labels >= 0).sum()), len(classes))
    images = to_chw_uint8(decode_images(paths, spec.image_size, workers=spec.decode_workers))
    fabric = make_fabric(spec.engine)
    fabric.seed_everything(spec.engine.seed, verbose=False)
    model = build_model(spec.model)
    dataset, augment = training_dataset(spec, images, labels)
    sampler = EpochBatchSampler(
        labels,
        rank=fabric.global_rank,
        world_size=fabric.world_size,
        batch_size=spec.batch_size,
        images_per_class=spec.images_per_class,
        supcon_fraction=spec.supcon_fraction if spec.model.supcon_weight > 0 else 0.0,
        seed=spec.engine.seed,
    )
    objective = ContrastiveObjective(
        spec.model, distributed=fabric.world_size > 1, augment=augment.to(fabric.device) if augment else None
    )
    run_key = spec.to_json()
    resuming = can_resume(out_dir / "train_state.pt", run_key)
    if resuming:
        log.info("resuming from %s", out_dir / "train_state.pt")
    live = _live(spec.live_dir, resume=resuming) if spec.live_dir and fabric.is_global_zero else None
    try:
        result = fit(
            fabric,
            model,
            dataset,
            sampler,
            objective,
            spec.engine,
            state_path=out_dir / "train_state.pt",
            live=live,
            stop_after_epoch=stop_after_epoch,
            run_key=run_key,
        )
    finally:
        if live is not None:
            live.end()
    if fabric.is_global_zero:
        save_backbone(out_dir / "backbone.pt", model.backbone)
        info = {
            "backbone": spec.model.backbone,
            "image_size": spec.image_size,
            "feature_dim": feature_dim(model.backbone),
            "images": len(paths),
            "labelled_classes": len(classes),
            "images_per_second": result.images_per_second,
            "data_seconds": result.data_seconds,
            "step_seconds": result.step_seconds,
            "history": result.history,
            "spec": asdict(spec),
        }
        (out_dir / "backbone.json").write_text(json.dumps(info, indent=2) + "\n")
    return result


def _live(live_dir: str, resume: bool) -> Any:
    """A dvclive logger that leaves dvc.yaml alone; it continues its curves when the run resumes."""
    from dvclive import Live

    return Live(live_dir, dvcyaml=None, save_dvc_exp=False, resume=resume, report=None)


def main(argv: list[str] | None = None) -> None:
    """Command line used under ``torchrun``: ``python -m retailnb.train.pretrain SPEC.json``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec", type=Path, help="JSON written by PretrainSpec.to_json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    pretrain(PretrainSpec.from_json(args.spec.read_text()))


if __name__ == "__main__":
    main()

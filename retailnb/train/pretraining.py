"""The contrastive pretraining run: manifest in, a timm-loadable backbone checkpoint out.

``pretrain(run)`` runs in the calling process (CPU or one GPU). For several GPUs (or several CPU
processes) the same run is written to JSON and run under ``torchrun`` through this module's command
line, ``python -m retailnb.train.pretraining RUN.json``; :func:`run_pretrain` does that.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retailnb.util.atomic import atomic_write_text
from retailnb.config.base import Spec
from retailnb.config.pretrain import PretrainStageSpec
from retailnb.data.manifest import encode_labels, read_manifest
from retailnb.models.backbone import feature_dim
from retailnb.models.checkpoint import save_backbone
from retailnb.train.contrastive import ContrastiveObjective, build_model
from retailnb.train.datasets import ImageSource, MultiViewDataset, TargetDataset, load_images
from retailnb.train.engine import FitResult, can_resume, data_digest, fit, make_fabric
from retailnb.train.launch import launch, under_torchrun, worker_run
from retailnb.train.sampler import EpochBatchSampler
from retailnb.transforms.batch_views import BatchViews
from retailnb.transforms.views import retail_view_transform

log = logging.getLogger(__name__)


class PretrainRunSpec(Spec):
    """One pretraining run: the variant's spec and its paths; JSON so ``torchrun`` workers get it too.

    Attributes:
        spec: everything the variant reads from ``params.yaml``.
        manifest: the data stage's manifest; roles ``labelled`` and ``unlabelled`` are trained on.
        out_dir: receives ``backbone.pt`` (timm state dict), ``backbone.json`` and ``train_state.pt``.
        live_dir: dvclive folder for the curves; empty for none.
        decode_workers: processes decoding images; None uses every core.
    """

    spec: PretrainStageSpec
    manifest: str
    out_dir: str
    live_dir: str
    decode_workers: int | None = None


def training_rows(run: PretrainRunSpec) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image paths and labels (-1 for unlabelled) the run trains on, and the labelled class names.

    SimCLR and SimSiam use every source image; with both switched off only the labelled images remain.
    """
    manifest = read_manifest(run.manifest)
    labelled = manifest.select("labelled")
    unlabelled = manifest.select("unlabelled") if run.spec.variant.self_supervised else []
    if not labelled and run.spec.variant.supcon_weight > 0:
        raise ValueError(f"{run.manifest}: SupCon needs rows with role 'labelled', found none")
    if not labelled and not unlabelled:
        raise ValueError(f"{run.manifest}: no 'labelled' or 'unlabelled' rows to pretrain on")
    y, classes = encode_labels(labelled)
    labels = np.concatenate([np.asarray(y, dtype=np.int64), np.full(len(unlabelled), -1, dtype=np.int64)])
    return manifest.paths(labelled) + manifest.paths(unlabelled), labels, classes


def training_dataset(spec: PretrainStageSpec, images: ImageSource, labels: np.ndarray) -> tuple[Any, BatchViews | None]:
    """The dataset and, for batch views, the module that draws them in the training step.

    With ``views.on == "worker"`` the dataset yields augmented views (image by image, in DataLoader
    workers); with ``"batch"`` it yields uint8 images and :class:`BatchViews` augments whole batches.
    """
    size = spec.backbone.image_size
    if spec.views.on == "worker":
        transform = retail_view_transform(size, spec.views)
        return MultiViewDataset(images, labels, transform, n_views=spec.model.n_views), None
    return TargetDataset(images, torch.as_tensor(labels)), BatchViews(size, spec.views)


def pretrain(run: PretrainRunSpec, *, stop_after_epoch: int | None = None) -> FitResult:
    """Run (or resume) contrastive pretraining and write the backbone; see :class:`PretrainRunSpec`."""
    spec = run.spec
    out_dir = Path(run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, labels, classes = training_rows(run)
    log.info("pretraining on %d images (%d labelled, %d classes)", len(paths), int((labels >= 0).sum()), len(classes))
    images = load_images(paths, spec.backbone.image_size, spec.compute.images, workers=run.decode_workers)
    fabric = make_fabric(spec.compute)
    fabric.seed_everything(spec.engine.seed, verbose=False)
    model = build_model(spec.backbone.architecture, spec.model, spec.variant)
    dataset, augment = training_dataset(spec, images, labels)
    sampler = EpochBatchSampler(
        labels,
        rank=fabric.global_rank,
        world_size=fabric.world_size,
        batch_size=spec.sampler.batch_size,
        images_per_class=spec.sampler.images_per_class,
        supcon_fraction=spec.sampler.supcon_fraction if spec.variant.supcon_weight > 0 else 0.0,
        seed=spec.engine.seed,
    )
    objective = ContrastiveObjective(
        spec.variant, spec.model, distributed=fabric.world_size > 1,
        augment=augment.to(fabric.device) if augment else None,
    )
    # the parameters and the data: a finished state of other images must not be "resumed" (see data_digest)
    run_key = json.dumps({"spec": spec.model_dump(mode="json"), "data": data_digest(images, labels)}, sort_keys=True)
    resuming = can_resume(out_dir / "train_state.pt", run_key, spec.compute.resume)
    if resuming:
        log.info("resuming from %s", out_dir / "train_state.pt")
    live = _live(run.live_dir, resume=resuming) if run.live_dir and fabric.is_global_zero else None
    try:
        result = fit(
            fabric,
            model,
            dataset,
            sampler,
            objective,
            spec.engine,
            spec.compute,
            state_path=out_dir / "train_state.pt",
            live=live,
            stop_after_epoch=stop_after_epoch,
            run_key=run_key,
            label=f"pretrain {Path(run.out_dir).name} ({_weights(spec)})",
        )
    finally:
        if live is not None:
            live.end()
    if fabric.is_global_zero:
        save_backbone(out_dir / "backbone.pt", model.backbone)
        info = {
            "backbone": spec.backbone.architecture,
            "image_size": spec.backbone.image_size,
            "feature_dim": feature_dim(model.backbone),
            "images": len(paths),
            "labelled_classes": len(classes),
            "images_per_second": result.images_per_second,
            "data_seconds": result.data_seconds,
            "step_seconds": result.step_seconds,
            "history": result.history,
            "spec": spec.model_dump(mode="json"),
        }
        atomic_write_text(out_dir / "backbone.json", json.dumps(info, indent=2) + "\n")
    return result


def _weights(spec: PretrainStageSpec) -> str:
    """The switched-on objectives and their weights, for the progress label: ``simclr 1, supcon 1``."""
    return ", ".join(f"{field.removesuffix('_weight')} {weight:g}"
                     for field, weight in spec.variant.model_dump().items() if weight > 0)


def run_pretrain(run: PretrainRunSpec) -> dict[str, Any]:
    """Pretrain (in this process, or under torchrun when ``compute`` is distributed) and return the run's info.

    Returns:
        The content of ``out_dir/backbone.json``: backbone, sizes, throughput and loss history.

    Raises:
        subprocess.CalledProcessError: a distributed run failed (its output names the cause).
    """
    out_dir = Path(run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if run.spec.compute.distributed and not under_torchrun():
        launch("retailnb.train.pretraining", run, out_dir / "run.json", run.spec.compute)
    else:
        pretrain(run)
    info: dict[str, Any] = json.loads((out_dir / "backbone.json").read_text())
    return info


def _live(live_dir: str, resume: bool) -> Any:
    """A dvclive logger that leaves dvc.yaml alone; it continues its curves when the run resumes."""
    from dvclive import Live

    return Live(live_dir, dvcyaml=None, save_dvc_exp=False, resume=resume, report=None)


def main(argv: list[str] | None = None) -> None:
    """Command line used under ``torchrun``: ``python -m retailnb.train.pretraining SPEC.json``."""
    pretrain(worker_run(PretrainRunSpec, argv, __doc__))


if __name__ == "__main__":
    main()

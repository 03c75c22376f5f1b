"""Contrastive pretraining: SimCLR on every source image plus SupCon on the labelled ones, or SimSiam.

The model is a timm backbone with lightly's SimCLR projection head. One forward pass per batch serves
both objectives: NT-Xent (lightly) contrasts the two views of every image, labelled or not; SupCon
(:mod:`retailnb.losses.supcon`) pulls together every view of every image of a labelled class. The batch
sampler puts several images of a few labelled classes into each batch so SupCon has real positives.
SimSiam (lightly's heads and negative cosine similarity) is a third objective with heads of its own,
built only when its weight is > 0: it predicts one view's projection from the other's, without negatives.

:func:`train_contrastive` is the training itself, in this process (CPU, one GPU, or one ``torchrun``
worker): decoded images in, ``backbone.pt`` (a timm state dict) out. The pretraining stage
(:mod:`retailnb.stages.pretrain`) decides the rest: which images, whether a saved state is resumed, the
curves' logger, ``backbone.json`` and the launch under ``torchrun``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead, SimSiamPredictionHead, SimSiamProjectionHead
from lightning_fabric import Fabric
from torch import nn

from retailnb.config.compute import BackboneSpec, ComputeSpec, EngineSpec
from retailnb.config.pretrain import ContrastiveModelSpec, ObjectivesSpec, SamplerSpec
from retailnb.config.views import PretrainViewsSpec
from retailnb.data.manifest import encode_labels, read_manifest
from retailnb.losses.supcon import SupConLoss
from retailnb.models.backbone import create_backbone, feature_dim
from retailnb.models.checkpoint import save_backbone
from retailnb.train.datasets import ImageSource, MultiViewDataset, TargetDataset
from retailnb.train.engine import FitResult, MetricLogger, fit
from retailnb.train.sampler import EpochBatchSampler
from retailnb.transforms.batch_views import BatchViews
from retailnb.transforms.views import retail_view_transform


class SimSiamHeads(nn.Module):
    """SimSiam's projection head and the prediction head on top of it (lightly's), as in lightly's example."""

    def __init__(self, input_dim: int, proj_hidden_dim: int, proj_dim: int, pred_hidden_dim: int) -> None:
        super().__init__()
        self.projection = SimSiamProjectionHead(input_dim, proj_hidden_dim, proj_dim)
        self.prediction = SimSiamPredictionHead(proj_dim, pred_hidden_dim, proj_dim)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The projection ``z`` (SimSiam's target, not yet detached) and the prediction ``p`` from it."""
        z = self.projection(features)
        return z, self.prediction(z)


class ContrastiveModel(nn.Module):
    """A backbone (the representation we keep) and the heads its objectives need (discarded after pretraining).

    Args:
        backbone: a timm model without classifier; only its state dict is saved after pretraining.
        proj_hidden_dim: hidden width of the projection heads.
        proj_dim: output width of the projection heads.
        contrastive: build the SimCLR projection head (SimCLR or SupCon is on).
        simsiam_pred_hidden_dim: build SimSiam's heads with this prediction bottleneck; None: no SimSiam.
            A head no objective uses is left out, so every parameter gets a gradient (DDP requires it).
    """

    def __init__(self, backbone: nn.Module, proj_hidden_dim: int = 512, proj_dim: int = 128, *,
                 contrastive: bool = True, simsiam_pred_hidden_dim: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        dim = feature_dim(backbone)
        self.head = SimCLRProjectionHead(dim, proj_hidden_dim, proj_dim) if contrastive else None
        self.simsiam = (SimSiamHeads(dim, proj_hidden_dim, proj_dim, simsiam_pred_hidden_dim)
                        if simsiam_pred_hidden_dim is not None else None)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The heads' outputs: ``projection`` (SimCLR head), ``simsiam_z`` and ``simsiam_p`` (SimSiam heads)."""
        features = self.backbone(x)
        out: dict[str, torch.Tensor] = {}
        if self.head is not None:
            out["projection"] = self.head(features)
        if self.simsiam is not None:
            out["simsiam_z"], out["simsiam_p"] = self.simsiam(features)
        return out


def build_model(architecture: str, config: ContrastiveModelSpec, objectives: ObjectivesSpec) -> ContrastiveModel:
    """The model of ``objectives``: a timm ``architecture`` initialised and noised as ``config`` says, with
    only the heads the switched-on objectives need, on the CPU."""
    backbone = create_backbone(
        architecture, drop_rate=config.drop_rate, drop_path_rate=config.drop_path_rate, weights=config.weights
    )
    return ContrastiveModel(
        backbone, config.proj_hidden_dim, config.proj_dim, contrastive=objectives.contrastive,
        simsiam_pred_hidden_dim=config.pred_hidden_dim if objectives.simsiam_weight > 0 else None,
    )


class ContrastiveObjective:
    """The weighted sum of NT-Xent, SupCon and SimSiam on one multi-view batch; callable as the engine's loss.

    Args:
        objectives: which objectives, and their weights.
        model: the losses' temperature and the number of views per image.
        distributed: gather projections across processes so negatives come from the global batch.
        augment: draws the views of a batch of plain uint8 images (``BatchViews``); None when the batch
            arrives as views already (drawn in DataLoader workers).
    """

    def __init__(self, objectives: ObjectivesSpec, model: ContrastiveModelSpec, distributed: bool = False,
                 augment: nn.Module | None = None) -> None:
        self.objectives = objectives
        self.n_views = model.n_views
        self.ntxent = NTXentLoss(temperature=model.temperature, gather_distributed=distributed)
        self.supcon = SupConLoss(temperature=model.temperature, gather_distributed=distributed)
        self.negative_cosine = NegativeCosineSimilarity()
        self.augment = augment

    def __call__(
        self, model: nn.Module, batch: tuple[Sequence[torch.Tensor] | torch.Tensor, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Losses of a batch of views (a list, augmented in workers) or of uint8 images (augmented here).

        With ``augment`` (``BatchViews``) the batch holds plain uint8 images and the views are drawn here,
        for the whole batch at once on its device.
        """
        images, labels = batch
        if isinstance(images, torch.Tensor):
            if self.augment is None:
                raise ValueError("a batch of plain images needs an augment module to draw views")
            with torch.no_grad():
                views: Sequence[torch.Tensor] = [self.augment(images) for _ in range(self.n_views)]
        else:
            views = images
        n = views[0].shape[0]
        out = model(torch.cat(list(views)))
        losses: dict[str, torch.Tensor] = {}
        total = next(iter(out.values())).new_zeros((), dtype=torch.float32)
        if self.objectives.contrastive:
            projections = out["projection"].float().split(n)
            if self.objectives.simclr_weight > 0:
                losses["simclr"] = self.ntxent(projections[0], projections[1])
                total = total + self.objectives.simclr_weight * losses["simclr"]
            if self.objectives.supcon_weight > 0:
                losses["supcon"] = self.supcon_on_labelled(projections, labels)
                total = total + self.objectives.supcon_weight * losses["supcon"]
        if self.objectives.simsiam_weight > 0:
            losses["simsiam"] = self.simsiam(out["simsiam_z"].float().split(n), out["simsiam_p"].float().split(n))
            total = total + self.objectives.simsiam_weight * losses["simsiam"]
        losses["loss"] = total
        return losses

    def simsiam(self, z: Sequence[torch.Tensor], p: Sequence[torch.Tensor]) -> torch.Tensor:
        """SimSiam's symmetric loss on the first two views, as in lightly's example: each view's prediction
        against the other view's projection, with the gradient stopped at the projection (the target);
        the stop-gradient is what keeps SimSiam from collapsing without negatives."""
        return 0.5 * (self.negative_cosine(p[0], z[1].detach()) + self.negative_cosine(p[1], z[0].detach()))

    def supcon_on_labelled(self, projections: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """SupCon over the labelled rows of the batch (label >= 0).

        Under DDP every process must call the gathering loss with the same shape, so unlabelled rows are
        kept but given labels unique across processes (negative, offset by rank): they then act as plain
        SimCLR pairs, as in the SupCon paper when labels are missing, rather than being dropped.
        """
        labels = labels.clone()
        unlabelled = labels < 0
        if unlabelled.any():
            offset = dist.get_rank() * len(labels) if dist.is_available() and dist.is_initialized() else 0
            rows = torch.arange(len(labels), device=labels.device)[unlabelled]
            labels[unlabelled] = -1 - offset - rows
        return self.supcon(torch.stack(list(projections), dim=1), labels)


def training_rows(manifest: str | Path, objectives: ObjectivesSpec) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image paths and labels (-1 for unlabelled) that ``objectives`` train on, and the labelled class names.

    SimCLR and SimSiam use every source image (roles ``labelled`` and ``unlabelled`` of the data stage's
    ``manifest``); with both switched off only the labelled images remain.
    """
    rows = read_manifest(manifest)
    labelled = rows.select("labelled")
    unlabelled = rows.select("unlabelled") if objectives.self_supervised else []
    if not labelled and objectives.supcon_weight > 0:
        raise ValueError(f"{manifest}: SupCon needs rows with role 'labelled', found none")
    if not labelled and not unlabelled:
        raise ValueError(f"{manifest}: no 'labelled' or 'unlabelled' rows to pretrain on")
    y, classes = encode_labels(labelled)
    labels = np.concatenate([np.asarray(y, dtype=np.int64), np.full(len(unlabelled), -1, dtype=np.int64)])
    return rows.paths(labelled) + rows.paths(unlabelled), labels, classes


def training_dataset(images: ImageSource, labels: np.ndarray, views: PretrainViewsSpec, *, image_size: int,
                     n_views: int) -> tuple[Any, BatchViews | None]:
    """The dataset and, for batch views, the module that draws them in the training step.

    With ``views.on == "worker"`` the dataset yields ``n_views`` augmented views (image by image, in
    DataLoader workers); with ``"batch"`` it yields uint8 images and :class:`BatchViews` augments whole batches.
    """
    if views.on == "worker":
        transform = retail_view_transform(image_size, views)
        return MultiViewDataset(images, labels, transform, n_views=n_views), None
    return TargetDataset(images, torch.as_tensor(labels)), BatchViews(image_size, views)


def train_contrastive(
    fabric: Fabric,
    images: ImageSource,
    labels: np.ndarray,
    out_dir: str | Path,
    *,
    backbone: BackboneSpec,
    model: ContrastiveModelSpec,
    objectives: ObjectivesSpec,
    sampler: SamplerSpec,
    views: PretrainViewsSpec,
    engine: EngineSpec,
    compute: ComputeSpec,
    run_key: str,
    live: MetricLogger | None = None,
    stop_after_epoch: int | None = None,
    label: str = "",
) -> tuple[FitResult, ContrastiveModel]:
    """Pretrain a backbone on ``images`` (or resume it) and save it as ``out_dir/backbone.pt`` (rank 0).

    Args:
        fabric: a launched Fabric (:func:`~retailnb.train.engine.make_fabric` of ``compute``); it is
            seeded here with ``engine.seed`` before the model is built.
        images: the decoded training images.
        labels: one per image; -1 for unlabelled (see :func:`training_rows`).
        out_dir: receives ``backbone.pt`` (timm state dict) and ``train_state.pt`` (the resume state).
        backbone: architecture and image size.
        model: initialisation, noise, heads, temperature and views per image.
        objectives: the objectives' weights.
        sampler: how batches are drawn.
        views: the augmentations.
        engine: optimisation and seed.
        compute: placement (DataLoader workers, memory layout).
        run_key: identifies the run; a saved state with another key is trained afresh
            (:func:`~retailnb.train.engine.can_resume`).
        live: logger of the curves (rank 0 only).
        stop_after_epoch: stop after this epoch as if interrupted (tests of resumption).
        label: what is training, at the head of each epoch's progress line.

    Returns:
        The engine's result, and the trained model (its ``backbone`` is what ``backbone.pt`` holds).
    """
    out_dir = Path(out_dir)
    fabric.seed_everything(engine.seed, verbose=False)
    network = build_model(backbone.architecture, model, objectives)
    dataset, augment = training_dataset(images, labels, views, image_size=backbone.image_size, n_views=model.n_views)
    batches = EpochBatchSampler(
        labels,
        rank=fabric.global_rank,
        world_size=fabric.world_size,
        batch_size=sampler.batch_size,
        images_per_class=sampler.images_per_class,
        supcon_fraction=sampler.supcon_fraction if objectives.supcon_weight > 0 else 0.0,
        seed=engine.seed,
    )
    objective = ContrastiveObjective(
        objectives, model, distributed=fabric.world_size > 1,
        augment=augment.to(fabric.device) if augment else None,
    )
    result = fit(
        fabric,
        network,
        dataset,
        batches,
        objective,
        engine,
        compute,
        state_path=out_dir / "train_state.pt",
        live=live,
        stop_after_epoch=stop_after_epoch,
        run_key=run_key,
        label=label,
    )
    if fabric.is_global_zero:
        save_backbone(out_dir / "backbone.pt", network.backbone)
    return result, network

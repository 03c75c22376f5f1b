"""Contrastive pretraining: SimCLR on every source image plus SupCon on the labelled ones.

The model is a timm backbone with lightly's SimCLR projection head. One forward pass per batch serves
both objectives: NT-Xent (lightly) contrasts the two views of every image, labelled or not; SupCon
(:mod:`retailnb.losses.supcon`) pulls together every view of every image of a labelled class. The batch
sampler puts several images of a few labelled classes into each batch so SupCon has real positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import nn

from retailnb.losses.supcon import SupConLoss
from retailnb.models.backbone import create_backbone, feature_dim

OBJECTIVES = ("simclr", "supcon")


@dataclass(frozen=True)
class ContrastiveConfig:
    """The model and objective of the contrastive stage.

    Attributes:
        backbone: timm model name.
        weights: ``none`` (random init), a local checkpoint file, or ``hub`` (timm's weights; network).
        drop_rate: dropout before the (removed) classifier.
        drop_path_rate: stochastic depth.
        proj_hidden_dim: hidden width of the SimCLR projection head.
        proj_dim: output width of the projection head (the space the losses compare in).
        simclr_weight: weight of NT-Xent over all images; 0 switches SimCLR off.
        supcon_weight: weight of SupCon over labelled images; 0 switches SupCon off.
        temperature: softmax temperature of both losses.
        n_views: augmented views per image (SimCLR uses the first two; SupCon all).
    """

    backbone: str = "resnet18"
    weights: str = "none"
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    proj_hidden_dim: int = 512
    proj_dim: int = 128
    simclr_weight: float = 1.0
    supcon_weight: float = 1.0
    temperature: float = 0.1
    n_views: int = 2

    def __post_init__(self) -> None:
        if self.simclr_weight < 0 or self.supcon_weight < 0:
            raise ValueError("simclr_weight and supcon_weight must be non-negative")
        if self.simclr_weight == 0 and self.supcon_weight == 0:
            raise ValueError("switch on at least one objective: simclr_weight or supcon_weight must be > 0")
        if self.n_views < 2:
            raise ValueError(f"n_views must be at least 2, got {self.n_views}")


class ContrastiveModel(nn.Module):
    """A backbone (the representation we keep) and a projection head (discarded after pretraining)."""

    def __init__(self, backbone: nn.Module, proj_hidden_dim: int = 512, proj_dim: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = SimCLRProjectionHead(feature_dim(backbone), proj_hidden_dim, proj_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_model(config: ContrastiveConfig) -> ContrastiveModel:
    """The contrastive model for ``config``, on the CPU."""
    backbone = create_backbone(
        config.backbone, drop_rate=config.drop_rate, drop_path_rate=config.drop_path_rate, weights=config.weights
    )
    return ContrastiveModel(backbone, config.proj_hidden_dim, config.proj_dim)


class ContrastiveObjective:
    """The weighted sum of NT-Xent and SupCon on one multi-view batch; callable as the engine's loss.

    Args:
        config: which objectives and their weights.
        distributed: gather projections across processes so negatives come from the global batch.
    """

    def __init__(self, config: ContrastiveConfig, distributed: bool = False, augment: nn.Module | None = None) -> None:
        self.config = config
        self.ntxent = NTXentLoss(temperature=config.temperature, gather_distributed=distributed)
        self.supcon = SupConLoss(temperature=config.temperature, gather_distributed=distributed)
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
                views: Sequence[torch.Tensor] = [self.augment(images) for _ in range(self.config.n_views)]
        else:
            views = images
        n = views[0].shape[0]
        projections = model(torch.cat(list(views))).float().split(n)
        losses: dict[str, torch.Tensor] = {}
        total = projections[0].new_zeros(())
        if self.config.simclr_weight > 0:
            losses["simclr"] = self.ntxent(projections[0], projections[1])
            total = total + self.config.simclr_weight * losses["simclr"]
        if self.config.supcon_weight > 0:
            losses["supcon"] = self.supcon_on_labelled(projections, labels)
            total = total + self.config.supcon_weight * losses["supcon"]
        losses["loss"] = total
        return losses

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

"""Contrastive pretraining: SimCLR on every source image plus SupCon on the labelled ones.

The model is a timm backbone with lightly's SimCLR projection head. One forward pass per batch serves
both objectives: NT-Xent (lightly) contrasts the two views of every image, labelled or not; SupCon
(:mod:`retailnb.losses.supcon`) pulls together every view of every image of a labelled class. The batch
sampler puts several images of a few labelled classes into each batch so SupCon has real positives.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import nn

from retailnb.config.pretrain import ContrastiveModelSpec, Objectives
from retailnb.losses.supcon import SupConLoss
from retailnb.models.backbone import create_backbone, feature_dim

class ContrastiveModel(nn.Module):
    """A backbone (the representation we keep) and a projection head (discarded after pretraining)."""

    def __init__(self, backbone: nn.Module, proj_hidden_dim: int = 512, proj_dim: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = SimCLRProjectionHead(feature_dim(backbone), proj_hidden_dim, proj_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_model(architecture: str, config: ContrastiveModelSpec) -> ContrastiveModel:
    """The contrastive model: a timm ``architecture`` initialised and noised as ``config`` says, on the CPU."""
    backbone = create_backbone(
        architecture, drop_rate=config.drop_rate, drop_path_rate=config.drop_path_rate, weights=config.weights
    )
    return ContrastiveModel(backbone, config.proj_hidden_dim, config.proj_dim)


class ContrastiveObjective:
    """The weighted sum of NT-Xent and SupCon on one multi-view batch; callable as the engine's loss.

    Args:
        objectives: which objectives, and their weights.
        model: the losses' temperature and the number of views per image.
        distributed: gather projections across processes so negatives come from the global batch.
        augment: draws the views of a batch of plain uint8 images (``BatchViews``); None when the batch
            arrives as views already (drawn in DataLoader workers).
    """

    def __init__(self, objectives: Objectives, model: ContrastiveModelSpec, distributed: bool = False,
                 augment: nn.Module | None = None) -> None:
        self.objectives = objectives
        self.n_views = model.n_views
        self.ntxent = NTXentLoss(temperature=model.temperature, gather_distributed=distributed)
        self.supcon = SupConLoss(temperature=model.temperature, gather_distributed=distributed)
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
        projections = model(torch.cat(list(views))).float().split(n)
        losses: dict[str, torch.Tensor] = {}
        total = projections[0].new_zeros(())
        if self.objectives.simclr_weight > 0:
            losses["simclr"] = self.ntxent(projections[0], projections[1])
            total = total + self.objectives.simclr_weight * losses["simclr"]
        if self.objectives.supcon_weight > 0:
            losses["supcon"] = self.supcon_on_labelled(projections, labels)
            total = total + self.objectives.supcon_weight * losses["supcon"]
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

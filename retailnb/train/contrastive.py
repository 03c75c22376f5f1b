"""Contrastive pretraining: SimCLR on every source image plus SupCon on the labelled ones, or SimSiam.

The model is a timm backbone with lightly's SimCLR projection head. One forward pass per batch serves
both objectives: NT-Xent (lightly) contrasts the two views of every image, labelled or not; SupCon
(:mod:`retailnb.losses.supcon`) pulls together every view of every image of a labelled class. The batch
sampler puts several images of a few labelled classes into each batch so SupCon has real positives.
SimSiam (lightly's heads and negative cosine similarity) is a third objective with heads of its own,
built only when its weight is > 0: it predicts one view's projection from the other's, without negatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead, SimSiamPredictionHead, SimSiamProjectionHead
from torch import nn

from retailnb.config.pretrain import ContrastiveModelSpec, ObjectivesSpec
from retailnb.losses.supcon import SupConLoss
from retailnb.models.backbone import create_backbone, feature_dim


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

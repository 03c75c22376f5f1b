"""The reference loop: lightly's plain SimCLR loop, the one baseline the benchmarks hold retailnb against.

:func:`reference_loop` trains the way lightly's own example does (``examples/pytorch/simclr.py``): each
batch brings two views of its images, made image by image in the DataLoader (its workers, if any); the model
(:class:`ReferenceSimCLR`) is a backbone and lightly's ``SimCLRProjectionHead``, run once per view; the loss
is lightly's ``NTXentLoss``; then backward, SGD step, zero_grad. It is the only copy of that loop; the three
benchmarks that run it keep their own data, views and settings, as they were measured:

==================  =====================================  ==========================  ======  ====  ============
benchmark           backbone                               views                       temp.   wd    stops after
==================  =====================================  ==========================  ======  ====  ============
bench_pretrain (a)  timm ``--backbone``                    ``SimCLRTransform`` on      0.5     0     ``--steps``
                                                           JPEGs opened every step
bench_transfer      torchvision resnet18, no ``fc``        :class:`ReferenceViews`     0.2     5e-4  the budget
plain                                                      (decoded once to 72 px)                   (seconds)
device_check (a)    timm ``--backbone``, bf16 on CUDA      :class:`ReferenceViews`     0.2     5e-4  ``--steps``
==================  =====================================  ==========================  ======  ====  ============

(:data:`EXAMPLE_RECIPE` and :data:`PLAIN_RECIPE`: SGD lr 0.06, momentum 0.9 in both.) Each step is timed by
:func:`common.timed_steps`, as bench_pretrain.py times retailnb's own pipelines.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import timm
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models import resnet18
from torchvision.transforms import v2

from common import Step, timed_steps
from retailnb.models.backbone import feature_dim


@dataclass(frozen=True)
class Recipe:
    """The loss and the optimiser of the reference loop."""

    temperature: float = 0.2
    lr: float = 0.06
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def criterion(self) -> NTXentLoss:
        """lightly's NT-Xent loss at :attr:`temperature`."""
        return NTXentLoss(temperature=self.temperature)

    def optimizer(self, model: nn.Module) -> torch.optim.SGD:
        """SGD over ``model``'s parameters."""
        return torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)


PLAIN_RECIPE = Recipe()
"""The 60-line loop of issue 13 (bench_transfer.py, device_check.py): NT-Xent at 0.2, SGD with weight decay 5e-4."""

EXAMPLE_RECIPE = Recipe(temperature=0.5, weight_decay=0.0)
"""lightly's example as bench_pretrain.py times it: ``NTXentLoss()``'s default temperature, no weight decay."""


class ReferenceSimCLR(nn.Module):
    """lightly's example model: backbone, flatten, ``SimCLRProjectionHead(dim, 512, 128)``."""

    def __init__(self, backbone: nn.Module, dim: int | None = None) -> None:
        """``dim``: the backbone's feature width (default: :func:`~retailnb.models.backbone.feature_dim`)."""
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(feature_dim(backbone) if dim is None else dim, 512, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))


def timm_simclr(architecture: str) -> ReferenceSimCLR:
    """The reference model on timm's ``architecture`` (random weights, no classifier)."""
    return ReferenceSimCLR(timm.create_model(architecture, pretrained=False, num_classes=0))


def resnet18_simclr() -> ReferenceSimCLR:
    """The reference model on torchvision's resnet18 without its classifier (issue 13's plain loop)."""
    backbone = resnet18()
    backbone.fc = nn.Identity()
    return ReferenceSimCLR(backbone, 512)


class ReferenceViews(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Two SimCLR views of each uint8 (3, H, W) image, drawn image by image (lightly's example's recipe):
    ``RandomResizedCrop(size, scale=(0.2, 1))``, horizontal flip, ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` with
    p=0.8, ``RandomGrayscale(0.2)``, ImageNet normalisation."""

    def __init__(self, images: torch.Tensor, size: int) -> None:
        self.images = images
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return self.transform(image), self.transform(image)


def reference_loop(model: ReferenceSimCLR, loader: DataLoader[Any], recipe: Recipe, *,
                   device: torch.device | None = None, bf16: bool = False) -> Generator[Step, None, None]:
    """Train ``model`` with lightly's SimCLR loop, epoch after epoch of ``loader``, until the caller stops.

    Each batch's first two entries are the two views (further entries ride along in :attr:`Step.batch`);
    ``model`` goes to ``device`` (default CPU) and is put in training mode at each epoch's start. Each
    :class:`~common.Step` holds the step's loss (detached) as ``out``; close the generator to shut the
    loader's workers down.

    Args:
        model: the backbone and projection head.
        loader: batches of two views.
        recipe: NT-Xent's temperature and SGD's settings.
        device: where the model trains; the views are moved there (``non_blocking``).
        bf16: forward passes and the loss under bf16 autocast (as retailnb's mixed precision on CUDA).
    """
    device = device or torch.device("cpu")
    model.to(device)
    criterion = recipe.criterion()
    optimizer = recipe.optimizer(model)

    def step(batch: Any) -> torch.Tensor:
        x0, x1 = (x.to(device, non_blocking=True) for x in batch[:2])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(x0), model(x1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.detach()

    return timed_steps(loader, step, on_epoch=lambda _: model.train())

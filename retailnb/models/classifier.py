"""Classifier networks trained end to end: timm classifiers under model noise, their loss and probabilities.

:func:`build_student` makes a timm classifier with dropout before the classifier and stochastic depth,
from scratch or on a backbone's weights (:data:`STUDENT_INITS`); :class:`StudentObjective` is its loss
for the training engine, a soft cross-entropy (:func:`soft_cross_entropy`) against probability targets,
optionally plus SupCon on its pre-logit features (through :class:`EmbeddingStudent`);
:func:`network_probabilities` gives its softmax outputs in eval mode; :func:`classifier_keys` and
:func:`backbone_state` split its weights into classifier and a plain timm backbone.

Two stages train such a network: the noisy student (:mod:`retailnb.noisy.rounds`), whose students learn
under noise from labelled plus pseudolabelled images and become the next round's teacher, and the
finetuning baseline (:mod:`retailnb.evaluation.finetune`). The module sits in :mod:`retailnb.models`,
below both, so that evaluation does not import from the noisy-student package.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from retailnb.data.cache import DiskImages
from retailnb.losses.supcon import SupConLoss
from retailnb.models.backbone import check_model_name
from retailnb.models.inference import imagenet_normalize

STUDENT_INITS = ("teacher", "scratch")


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against probability targets (one-hot rows give the usual hard-label loss)."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


class EmbeddingStudent(nn.Module):
    """A timm classifier whose forward returns (logits, pre-logit features), for cross-entropy plus SupCon.

    One forward call serves both losses, so the wrapper works unchanged under DDP (which synchronises
    gradients only through ``forward``). The classifier is shared, not copied: training the wrapper
    trains ``net``, whose state dict stays a plain timm one.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net: Any = net  # a timm model: forward_features and forward_head are not nn.Module's

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net.forward_features(images)
        return self.net.forward_head(features), self.net.forward_head(features, pre_logits=True)


class StudentObjective:
    """The engine's loss for a student batch of (noised images, target probabilities).

    Soft cross-entropy against the targets; with ``supcon_weight > 0`` plus SupCon (Khosla et al. 2020)
    on the student's pre-logit features, each image labelled by its target's most probable class, so
    images sharing a (pseudo)label in a batch are pulled together. The model must then be an
    :class:`EmbeddingStudent`.
    """

    def __init__(self, supcon_weight: float = 0.0, temperature: float = 0.1, gather_distributed: bool = False) -> None:
        if supcon_weight < 0:
            raise ValueError(f"noisy.supcon_weight must be non-negative, got {supcon_weight}")
        self.supcon_weight = supcon_weight
        self.supcon = SupConLoss(temperature, gather_distributed=gather_distributed) if supcon_weight > 0 else None

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, targets = batch
        if self.supcon is None:
            return {"loss": soft_cross_entropy(model(images), targets)}
        logits, embeddings = model(images)
        ce = soft_cross_entropy(logits, targets)
        supcon = self.supcon(embeddings.float(), targets.argmax(dim=1))
        return {"loss": ce + self.supcon_weight * supcon, "cross_entropy": ce.detach(), "supcon": supcon.detach()}


@torch.inference_mode()
def network_probabilities(model: nn.Module, images: np.ndarray | torch.Tensor | DiskImages, *,
                          batch_size: int = 256) -> np.ndarray:
    """Softmax outputs of a student network used as the next teacher (eval mode: no dropout/drop-path)."""
    was_training = model.training
    model.eval()
    try:
        return np.concatenate(
            [torch.softmax(logits, dim=1).double().numpy() for logits in _logits(model, images, batch_size)]
        )
    finally:
        model.train(was_training)


def _logits(model: nn.Module, images: np.ndarray | torch.Tensor | DiskImages, batch_size: int) -> list[torch.Tensor]:
    """Logits batch by batch (an on-disk cache is read one batch at a time)."""
    device = next(model.parameters()).device
    t = images if isinstance(images, DiskImages) else torch.as_tensor(images)
    if t.shape[-1] == 3 and isinstance(t, torch.Tensor):
        t = t.permute(0, 3, 1, 2)
    return [model(imagenet_normalize(t[i : i + batch_size].to(device))).float().cpu() for i in range(0, len(t), batch_size)]


def build_student(
    architecture: str,
    n_classes: int,
    *,
    drop_rate: float,
    drop_path_rate: float,
    init: str,
    teacher_backbone_state: dict[str, torch.Tensor] | None = None,
) -> nn.Module:
    """A timm classifier with dropout and stochastic depth, from scratch or from the teacher's backbone.

    Raises:
        ValueError: an unknown ``init``, or ``init='teacher'`` without a teacher state or with an
            architecture whose backbone does not match it.
    """
    if init not in STUDENT_INITS:
        raise ValueError(f"noisy.student_init must be one of {STUDENT_INITS}, got {init!r}")
    check_model_name(architecture)
    model = timm.create_model(architecture, num_classes=n_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    if init == "teacher":
        if teacher_backbone_state is None:
            raise ValueError("noisy.student_init='teacher' needs the teacher's backbone weights")
        mismatch = f"the student architecture {architecture!r} does not match the teacher backbone"
        try:
            missing, unexpected = model.load_state_dict(teacher_backbone_state, strict=False)
        except RuntimeError as err:  # tensors of other shapes
            raise ValueError(f"{mismatch}; use student_init=scratch ({str(err).splitlines()[1].strip()})") from None
        head = set(classifier_keys(model))
        if unexpected or set(missing) - head:
            raise ValueError(
                f"{mismatch} ({len(set(missing) - head)} missing, {len(unexpected)} unexpected weights); "
                "use student_init=scratch"
            )
    return model


def classifier_keys(model: nn.Module) -> list[str]:
    """State-dict keys of a timm model's classifier (what a feature backbone does not have)."""
    name = getattr(model, "pretrained_cfg", {}).get("classifier", "fc")
    return [k for k in model.state_dict() if k == name or k.startswith(f"{name}.")]


def backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The student's weights without its classifier: a state dict timm loads with ``num_classes=0``."""
    drop = set(classifier_keys(model))
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k not in drop}

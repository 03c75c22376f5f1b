"""Round 1's teacher of the noisy-student stage: the frozen contrastive backbone plus a fitted classifier.

A teacher turns images into class probabilities over the labelled source products, without noise (eval
mode, un-augmented images). Round 1's teacher is the frozen contrastive backbone with a classifier fitted
on the labelled images' features (a logistic regression or a linear head); later rounds' teacher is the
previous round's student network. The students themselves, timm classifiers trained under noise
(RandAugment, dropout before the classifier, stochastic depth) on labelled plus pseudolabelled images with
a soft cross-entropy, optionally plus SupCon on their (pseudo)labels, are built and scored by
:mod:`retailnb.models.classifier`, which the finetuning baseline shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retailnb.data.cache import DiskImages
from retailnb.evaluation.probe import fit_logistic_probe
from retailnb.models.sharded import sharded_features

TEACHER_CLASSIFIERS = ("logreg", "linear")


@dataclass
class FeatureTeacher:
    """Round 1's teacher: a frozen backbone plus a classifier fitted on its features of labelled images."""

    backbone: nn.Module
    classifier: object  # an sklearn pipeline with predict_proba, or a torch linear head
    kind: str
    stats: tuple[np.ndarray, np.ndarray] | None = None  # feature mean and std for the linear head

    def predict_proba(self, images: np.ndarray | torch.Tensor | DiskImages) -> np.ndarray:
        """Class probabilities of un-augmented ``images`` (uint8), rows summing to 1.

        In a distributed run the processes share the forward passes (:mod:`retailnb.models.sharded`) and
        each gets every row, identical to a one-process run's.
        """
        features = sharded_features(self.backbone, images)
        if self.kind == "logreg":
            return np.asarray(self.classifier.predict_proba(features), dtype=np.float64)  # type: ignore[attr-defined]
        with torch.no_grad():
            logits = self.classifier(torch.from_numpy(_standardise(features, self.stats)))  # type: ignore[operator,arg-type]
        return torch.softmax(logits, dim=1).double().numpy()


def _standardise(x: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return ((x - stats[0]) / stats[1]).astype(np.float32)


def fit_linear_head(x: np.ndarray, y: np.ndarray, n_classes: int, *, epochs: int = 200, lr: float = 0.05, seed: int = 0) -> nn.Linear:
    """A linear softmax head trained full-batch with Adam on standardised features."""
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        head.weight.normal_(0, 0.01, generator=generator)
        head.bias.zero_()
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(np.asarray(y, dtype=np.int64))
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(head(xt), yt).backward()
        opt.step()
    return head.eval()


def fit_feature_teacher(
    backbone: nn.Module, images: np.ndarray | torch.Tensor | DiskImages, labels: Sequence[int] | np.ndarray, *, classifier: str = "logreg", seed: int = 0
) -> FeatureTeacher:
    """Fit round 1's teacher on the labelled images.

    Raises:
        ValueError: an unknown ``classifier``.
    """
    if classifier not in TEACHER_CLASSIFIERS:
        raise ValueError(f"noisy.teacher_classifier must be one of {TEACHER_CLASSIFIERS}, got {classifier!r}")
    features = sharded_features(backbone, images)
    y = np.asarray(labels)
    if classifier == "logreg":
        return FeatureTeacher(backbone, fit_logistic_probe(features, y, seed=seed), "logreg")
    stats = (features.mean(0), features.std(0) + 1e-6)
    head = fit_linear_head(_standardise(features, stats), y, int(y.max()) + 1, seed=seed)
    return FeatureTeacher(backbone, head, "linear", stats)

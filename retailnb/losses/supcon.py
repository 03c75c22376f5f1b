"""Supervised contrastive loss (SupCon), as the label-masked form of SimCLR's NT-Xent loss.

lightly (as installed, 1.6) ships NT-Xent but no supervised contrastive loss, so it is written here, in
the same shape as lightly's :class:`~lightly.loss.NTXentLoss`: an ``nn.Module`` with a ``temperature``
and a ``gather_distributed`` switch. With every label distinct and two views it *is* NT-Xent; labels
only add positives: every other view of every sample that shares the anchor's label.

- Khosla et al., Supervised Contrastive Learning, 2020, https://arxiv.org/abs/2004.11362 (Eq. 2, L_out)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightly.utils import dist
from torch import Tensor, nn
from torch import distributed as torch_dist

_EPS = 1e-8


def stack_views(features: Tensor | Sequence[Tensor]) -> Tensor:
    """Bring the accepted input forms to one (B, V, D) tensor.

    Args:
        features: a (B, V, D) tensor of V views per sample, a (B, D) tensor (one view), or a sequence of
            V (B, D) tensors, one per view (``[out0, out1]`` as lightly's losses take them).

    Returns:
        A (B, V, D) tensor.

    Raises:
        ValueError: the shapes fit none of the forms.
    """
    if isinstance(features, Tensor):
        if features.dim() == 2:
            return features.unsqueeze(1)
        if features.dim() == 3:
            return features
        raise ValueError(f"features must be (B, V, D) or (B, D), got shape {tuple(features.shape)}")
    views = list(features)
    shapes = {tuple(v.shape) for v in views}
    if not views or len(shapes) != 1 or views[0].dim() != 2:
        raise ValueError(f"view batches must be equally shaped (B, D) tensors, got shapes {sorted(shapes)}")
    return torch.stack(views, dim=1)


def supcon_loss(
    anchors: Tensor,
    anchor_labels: Tensor,
    contrast: Tensor,
    contrast_labels: Tensor,
    self_index: Tensor,
    temperature: float,
) -> Tensor:
    """SupCon (L_out) of each anchor against a contrast set that contains the anchors themselves.

    For anchor i with positives P(i) (contrast samples of the same label, itself excluded) and A(i)
    (every contrast sample but itself): ``-1/|P(i)| sum_{p in P(i)} log softmax_{a in A(i)}(z_i.z_a/t)[p]``,
    averaged over the anchors that have at least one positive.

    Args:
        anchors: (N, D) unit-length features whose loss is computed.
        anchor_labels: (N,) their labels.
        contrast: (M, D) unit-length features compared against (M >= N).
        contrast_labels: (M,) their labels.
        self_index: (N,) position of each anchor within ``contrast``, left out of its own softmax.
        temperature: the logits are similarities divided by this.

    Returns:
        The mean loss, a scalar; zero (still attached to the graph) when no anchor has a positive.
    """
    logits = anchors @ contrast.T / temperature
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(len(anchors), device=anchors.device), self_index] = True
    log_prob = torch.log_softmax(logits.masked_fill(is_self, float("-inf")), dim=1)
    positive = (anchor_labels[:, None] == contrast_labels[None, :]) & ~is_self
    n_positive = positive.sum(dim=1)
    # where() rather than a product: log_prob is -inf at the anchor itself and -inf * 0 is nan.
    mean_log_prob_pos = torch.where(positive, log_prob, 0.0).sum(dim=1) / n_positive.clamp(min=1)
    has_positive = n_positive > 0
    if not bool(has_positive.any()):
        return logits.sum() * 0.0
    return -mean_log_prob_pos[has_positive].mean()


class SupConLoss(nn.Module):
    """Supervised contrastive loss (Khosla et al. 2020, L_out), NT-Xent with a label mask.

    Each of the B * V views is an anchor; its positives are all other views that share its label (its
    own other views included) and the softmax runs over all other views in the batch. Features are
    normalised to unit length first. With distinct labels and V = 2 this equals lightly's
    ``NTXentLoss(temperature)`` on the two view batches.

    Attributes:
        temperature: scale the logits (cosine similarities) by the inverse of this.
        gather_distributed: under ``torch.distributed`` with more than one process, contrast each
            process's anchors against the views of all processes (every process must pass batches
            of the same shape), as lightly's ``NTXentLoss(gather_distributed=True)`` does.

    Examples:
        >>> loss_fn = SupConLoss(temperature=0.1)
        >>> out0, out1 = model(view0), model(view1)  # (B, D) projections of two views
        >>> loss = loss_fn([out0, out1], labels)      # or loss_fn(torch.stack([out0, out1], 1), labels)
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = False) -> None:
        """Initialise the loss.

        Args:
            temperature: logits are cosine similarities divided by this; 0.1 as in the SupCon paper.
            gather_distributed: gather the views of all processes before computing the loss.

        Raises:
            ValueError: ``abs(temperature) < 1e-8``, or ``gather_distributed`` without
                ``torch.distributed`` support in this torch build.
        """
        super().__init__()
        if abs(temperature) < _EPS:
            raise ValueError(f"illegal temperature: abs({temperature}) < {_EPS}")
        if gather_distributed and not torch_dist.is_available():
            raise ValueError("gather_distributed is True but torch.distributed is not available")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, features: Tensor | Sequence[Tensor], labels: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            features: projections as a (B, V, D) tensor, a (B, D) tensor, or a sequence of V (B, D)
                tensors (one batch per view).
            labels: (B,) integer class labels, one per sample (shared by its views).

        Returns:
            The loss averaged over all anchors that have a positive; a scalar tensor.

        Raises:
            ValueError: the feature shapes are invalid or ``labels`` does not have shape (B,).
        """
        views = stack_views(features)
        batch_size, n_views, dim = views.shape
        if labels.shape != (batch_size,):
            raise ValueError(f"labels must have shape ({batch_size},), got {tuple(labels.shape)}")
        # View-major flattening: row v * B + b is view v of sample b.
        anchors = nn.functional.normalize(views.transpose(0, 1).reshape(n_views * batch_size, dim), dim=1)
        anchor_labels = labels.to(anchors.device).repeat(n_views)
        self_index = torch.arange(len(anchors), device=anchors.device)
        if self.gather_distributed and dist.world_size() > 1:
            contrast = torch.cat(dist.gather(anchors), dim=0)
            contrast_labels = torch.cat(dist.gather(anchor_labels), dim=0)
            self_index = self_index + dist.rank() * len(anchors)
        else:
            contrast, contrast_labels = anchors, anchor_labels
        return supcon_loss(anchors, anchor_labels, contrast, contrast_labels, self_index, self.temperature)

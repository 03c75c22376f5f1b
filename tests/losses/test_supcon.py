"""Tests for retailnb.losses.supcon: SupCon is NT-Xent with a label mask."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from lightly.loss import NTXentLoss
from torch import Tensor

from retailnb.losses import SupConLoss
from retailnb.losses import supcon as supcon_module


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """One thread: tiny tensors, and OpenMP threads spin-wait for each other on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _features(batch: int, views: int, dim: int, seed: int = 0) -> Tensor:
    return torch.randn(batch, views, dim, generator=torch.Generator().manual_seed(seed))


def _reference(features: Tensor, labels: Tensor, temperature: float) -> float:
    """Khosla et al. 2020, Eq. 2 (L_out), spelled out with loops over anchors and positives."""
    batch, views, _ = features.shape
    z = [(features[b, v] / features[b, v].norm(), int(labels[b])) for v in range(views) for b in range(batch)]
    losses = []
    for i, (zi, yi) in enumerate(z):
        others = [(a, za, ya) for a, (za, ya) in enumerate(z) if a != i]
        denominator = sum(math.exp(float(zi @ za) / temperature) for _, za, _ in others)
        positives = [za for _, za, ya in others if ya == yi]
        if positives:
            log_probs = [float(zi @ zp) / temperature - math.log(denominator) for zp in positives]
            losses.append(-sum(log_probs) / len(positives))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_equals_lightly_ntxent_with_distinct_labels_and_two_views(temperature: float) -> None:
    features = _features(8, 2, 16)
    labels = torch.arange(8)
    expected = NTXentLoss(temperature=temperature)(features[:, 0], features[:, 1])
    loss_fn = SupConLoss(temperature=temperature)
    assert loss_fn(features, labels).item() == pytest.approx(expected.item(), abs=1e-5)
    as_list = loss_fn([features[:, 0], features[:, 1]], labels)
    assert as_list.item() == pytest.approx(expected.item(), abs=1e-5)


def test_matches_the_paper_formula_with_repeated_labels_and_three_views() -> None:
    features = _features(6, 3, 5, seed=1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    loss = SupConLoss(temperature=0.2)(features, labels)
    assert loss.item() == pytest.approx(_reference(features, labels, 0.2), rel=1e-5)


def test_shared_labels_change_the_loss() -> None:
    features = _features(6, 2, 5, seed=2)
    loss_fn = SupConLoss()
    assert loss_fn(features, torch.tensor([0, 0, 1, 1, 2, 2])).item() != pytest.approx(
        loss_fn(features, torch.arange(6)).item(), abs=1e-3
    )


def test_single_view_uses_other_samples_of_the_class_as_positives() -> None:
    features = _features(6, 1, 5, seed=3)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])  # samples 4 and 5 have no positive and are left out
    loss = SupConLoss(temperature=0.3)(features[:, 0], labels)
    assert loss.item() == pytest.approx(_reference(features, labels, 0.3), rel=1e-5)


def test_is_invariant_to_batch_order() -> None:
    features = _features(10, 2, 8, seed=4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 4, 0])
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    loss_fn = SupConLoss()
    shuffled = loss_fn(features[order], labels[order])
    assert shuffled.item() == pytest.approx(loss_fn(features, labels).item(), abs=1e-6)


def test_normalises_features() -> None:
    features = _features(6, 2, 4, seed=5)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    loss_fn = SupConLoss()
    assert loss_fn(7.0 * features, labels).item() == pytest.approx(loss_fn(features, labels).item(), abs=1e-6)


def test_decreases_over_sgd_steps() -> None:
    torch.manual_seed(0)
    inputs = torch.randn(16, 2, 12)
    labels = torch.arange(16) % 4
    projection = torch.nn.Linear(12, 8)
    optimizer = torch.optim.SGD(projection.parameters(), lr=0.5)
    loss_fn = SupConLoss(temperature=0.1)
    losses = []
    for _ in range(15):
        loss = loss_fn(projection(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_no_positive_at_all_gives_zero_loss_that_still_backpropagates() -> None:
    features = _features(4, 1, 3).requires_grad_()
    loss = SupConLoss()(features, torch.arange(4))
    loss.backward()
    assert loss.item() == 0.0
    assert features.grad is not None and torch.equal(features.grad, torch.zeros_like(features))


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(temperature=0.0)
    loss_fn = SupConLoss()
    with pytest.raises(ValueError, match="labels"):
        loss_fn(_features(4, 2, 3), torch.arange(5))
    with pytest.raises(ValueError, match="equally shaped"):
        loss_fn([torch.randn(4, 3), torch.randn(5, 3)], torch.arange(4))
    with pytest.raises(ValueError, match="shape"):
        loss_fn(torch.randn(2, 2, 2, 2), torch.arange(2))


def test_gathered_loss_averaged_over_processes_equals_the_whole_batch_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Simulate two processes, each holding half the batch, through the lightly.utils.dist calls."""
    features = _features(8, 2, 6, seed=6)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])  # every class is split across the two halves
    halves = [(features[:4], labels[:4]), (features[4:], labels[4:])]
    loss_fn = SupConLoss(temperature=0.2, gather_distributed=True)
    monkeypatch.setattr(supcon_module.dist, "world_size", lambda: 2)

    sent: dict[int, list[Tensor]] = {}  # what each rank hands to gather, in call order
    for rank, (f, y) in enumerate(halves):  # first pass: record each rank's contribution
        monkeypatch.setattr(supcon_module.dist, "rank", lambda rank=rank: rank)
        def record(t: Tensor, rank: int = rank) -> tuple[Tensor, ...]:
            sent.setdefault(rank, []).append(t)
            return (t, t)

        monkeypatch.setattr(supcon_module.dist, "gather", record)
        loss_fn(f, y)

    per_rank = []
    for rank, (f, y) in enumerate(halves):  # second pass: gather returns all ranks' tensors
        calls = iter(range(2))

        def gather(t: Tensor, rank: int = rank) -> tuple[Tensor, ...]:
            call = next(calls)
            return tuple(t if r == rank else sent[r][call] for r in range(2))

        monkeypatch.setattr(supcon_module.dist, "rank", lambda rank=rank: rank)
        monkeypatch.setattr(supcon_module.dist, "gather", gather)
        per_rank.append(loss_fn(f, y).item())

    whole = SupConLoss(temperature=0.2)(features, labels).item()
    assert sum(per_rank) / 2 == pytest.approx(whole, abs=1e-5)
    local_only = SupConLoss(temperature=0.2)(*halves[0]).item()
    assert per_rank[0] != pytest.approx(local_only, abs=1e-4)  # the gathered views do take part

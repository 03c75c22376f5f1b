"""Tests for retailnb.models.checkpoint: atomic writes, timm-loadable weights, exact resume."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

from retailnb.models import checkpoint as ckpt
from retailnb.models.backbone import create_backbone
from retailnb.models.checkpoint import (
    CheckpointError,
    ResumePoint,
    capture_rng_state,
    load_checkpoint,
    load_training_state,
    restore_rng_state,
    save_backbone,
    save_checkpoint,
    save_training_state,
)

TINY = "test_resnet"  # a 0.4 M-parameter ResNet that timm registers for its own tests


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Run this module's tensor maths on one thread: on a busy 2-core machine OpenMP threads spin-wait
    for each other and a tiny forward pass takes seconds instead of milliseconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_save_backbone_round_trips_through_timm_pretrained_file(tmp_path: Path) -> None:
    source = create_backbone(TINY).eval()
    path = save_backbone(tmp_path / "backbone.pth", source)
    torch.manual_seed(99)
    loaded = timm.create_model(
        TINY, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=0
    ).eval()
    fresh = timm.create_model(TINY, num_classes=0).eval()
    with torch.no_grad():
        assert torch.equal(source(_images()), loaded(_images()))
        assert not torch.equal(source(_images()), fresh(_images()))  # the load is what makes them equal


def test_save_backbone_writes_a_plain_state_dict(tmp_path: Path) -> None:
    model = nn.Linear(4, 2)
    state = load_checkpoint(save_backbone(tmp_path / "w.pth", model))
    assert set(state) == {"weight", "bias"}
    assert torch.equal(state["weight"], model.weight)


def test_save_checkpoint_keeps_extra_and_loads_into_timm(tmp_path: Path) -> None:
    source = create_backbone(TINY).eval()
    extra = {"model": TINY, "epoch": 3, "metrics": {"acc": 0.5}, "classes": ["a", "b"]}
    path = save_checkpoint(tmp_path / "c.pth", model_state=source.state_dict(), extra=extra)
    loaded = load_checkpoint(path)
    assert loaded["extra"] == extra
    assert torch.equal(loaded["state_dict"]["conv1.0.weight"], source.state_dict()["conv1.0.weight"])
    torch.manual_seed(7)
    model = create_backbone(TINY, weights=str(path)).eval()
    with torch.no_grad():
        assert torch.equal(source(_images()), model(_images()))


def test_save_creates_folders_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = save_backbone(tmp_path / "deep" / "er" / "w.pth", nn.Linear(2, 2))
    assert [p.name for p in path.parent.iterdir()] == ["w.pth"]


def test_failed_write_keeps_the_previous_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "c.pth", model_state={"w": torch.ones(2)}, extra={"v": 1})
    real_save = torch.save

    def crash_midway(obj: object, fh: object) -> None:
        real_save({"half": torch.zeros(1000)}, fh)  # some bytes reach the temporary file
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model_state={"w": torch.zeros(2)}, extra={"v": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["extra"] == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_checkpoint(tmp_path / "absent.pth")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_load_corrupt_file_names_it(tmp_path: Path, damage: str) -> None:
    path = save_checkpoint(tmp_path / "bad.pth", model_state={"w": torch.randn(64, 64)}, extra={})
    data = path.read_bytes()
    path.write_bytes(b"\x00garbage" * 20 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_checkpoint(path)


def test_load_refuses_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pth"
    torch.save({"object": ResumePoint(1, 2)}, path)  # an arbitrary class, not weights-only safe
    with pytest.raises(CheckpointError, match="pickled.pth"):
        load_checkpoint(path)


def test_rng_state_round_trip_restores_all_generators() -> None:
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), np.random.randn(), torch.rand(1).item())
    restore_rng_state(state)
    again = (random.random(), np.random.rand(), np.random.randn(), torch.rand(1).item())
    assert first == again


class _Net(nn.Module):
    """A small net with dropout, so resuming also depends on the torch generator."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


Scheduler = torch.optim.lr_scheduler.LRScheduler


def _build(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, Scheduler]:
    torch.manual_seed(seed)
    model = _Net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    return model, optimizer, scheduler


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Scheduler, steps: int) -> None:
    """Steps whose data come from all three global generators, so each must be restored."""
    for _ in range(steps):
        x = torch.randn(16, 8) + float(np.random.rand()) + random.random()
        loss = (model(x) - 1.0).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def test_resume_from_saved_state_is_exact(tmp_path: Path) -> None:
    model, optimizer, scheduler = _build(seed=0)
    random.seed(0)
    np.random.seed(0)
    _train(model, optimizer, scheduler, steps=5)
    path = save_training_state(
        tmp_path / "state.pth", model=model, optimizer=optimizer, scheduler=scheduler, step=5, epoch=1,
        extra={"best": 0.25},
    )
    _train(model, optimizer, scheduler, steps=4)
    uninterrupted = {k: v.clone() for k, v in model.state_dict().items()}

    resumed, resumed_opt, resumed_sched = _build(seed=123)  # other weights, other generator states
    random.seed(123)
    np.random.seed(123)
    point = load_training_state(path, model=resumed, optimizer=resumed_opt, scheduler=resumed_sched)
    assert point == ResumePoint(step=5, epoch=1, extra={"best": 0.25})
    _train(resumed, resumed_opt, resumed_sched, steps=4)
    for key, value in uninterrupted.items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert resumed_sched.get_last_lr() == scheduler.get_last_lr()


def test_resume_without_restoring_rng_diverges(tmp_path: Path) -> None:
    """The control for the exact-resume test: the generator states are what makes it exact."""
    model, optimizer, scheduler = _build(seed=0)
    path = save_training_state(tmp_path / "s.pth", model=model, optimizer=optimizer, scheduler=scheduler,
                               step=0, epoch=0)
    _train(model, optimizer, scheduler, steps=3)
    resumed, resumed_opt, resumed_sched = _build(seed=5)
    load_training_state(
        path, model=resumed, optimizer=resumed_opt, scheduler=resumed_sched, restore_rng=False
    )
    _train(resumed, resumed_opt, resumed_sched, steps=3)
    assert not torch.equal(model.body[0].weight, resumed.body[0].weight)


def test_training_state_weights_load_into_create_backbone(tmp_path: Path) -> None:
    source = create_backbone(TINY).eval()
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1)
    path = save_training_state(tmp_path / "t.pth", model=source, optimizer=optimizer, step=0, epoch=0)
    loaded = create_backbone(TINY, weights=str(path)).eval()
    with torch.no_grad():
        assert torch.equal(source(_images()), loaded(_images()))


def test_load_training_state_refuses_a_weights_file(tmp_path: Path) -> None:
    model, optimizer, _ = _build(seed=0)
    path = save_backbone(tmp_path / "weights.pth", model)
    with pytest.raises(CheckpointError, match="not a training state"):
        load_training_state(path, model=model, optimizer=optimizer)


def test_load_training_state_needs_a_saved_scheduler_when_given_one(tmp_path: Path) -> None:
    model, optimizer, scheduler = _build(seed=0)
    path = save_training_state(tmp_path / "s.pth", model=model, optimizer=optimizer, step=0, epoch=0)
    with pytest.raises(CheckpointError, match="scheduler"):
        load_training_state(path, model=model, optimizer=optimizer, scheduler=scheduler)

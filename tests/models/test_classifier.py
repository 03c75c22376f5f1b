"""Classifier networks: soft cross-entropy, students under noise, SupCon on pseudolabels, teacher init."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from retailnb.models.checkpoint import save_backbone
from retailnb.models.classifier import (
    EmbeddingStudent,
    StudentObjective,
    backbone_state,
    build_student,
    network_probabilities,
    soft_cross_entropy,
)

ARCH = "test_resnet"


def test_soft_cross_entropy_equals_hard_cross_entropy_for_one_hot_targets() -> None:
    logits = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    expected = torch.nn.functional.cross_entropy(logits, y)
    assert torch.allclose(soft_cross_entropy(logits, torch.eye(4)[y]), expected, atol=1e-6)
    # a uniform target is minimised by uniform logits, not by confident ones
    uniform = torch.full((1, 4), 0.25)
    assert soft_cross_entropy(torch.zeros(1, 4), uniform) < soft_cross_entropy(torch.tensor([[5.0, 0, 0, 0]]), uniform)


def test_student_step_under_noise_changes_weights_and_lowers_the_loss() -> None:
    torch.manual_seed(0)
    student = build_student(ARCH, 3, drop_rate=0.3, drop_path_rate=0.2, init="scratch")
    x, targets = torch.randn(12, 3, 32, 32), torch.eye(3)[torch.arange(12) % 3]
    before = {k: v.clone() for k, v in student.state_dict().items()}
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    student.train()
    for _ in range(20):
        loss = StudentObjective()(student, (x, targets))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_supcon_on_pseudolabels_pulls_same_label_features_together_and_trains_the_timm_student() -> None:
    torch.manual_seed(0)
    student = build_student(ARCH, 3, drop_rate=0.0, drop_path_rate=0.0, init="scratch")
    wrapped = EmbeddingStudent(student)
    x, y = torch.randn(12, 3, 32, 32), torch.arange(12) % 3
    soft = torch.eye(3)[y] * 0.7 + 0.1  # soft targets: the label is the most probable class
    logits, embeddings = wrapped(x)
    assert logits.shape == (12, 3) and embeddings.shape == (12, student.num_features)
    objective = StudentObjective(supcon_weight=1.0, temperature=0.1)
    opt = torch.optim.Adam(wrapped.parameters(), lr=3e-3)
    first = objective(wrapped, (x, soft))
    assert set(first) == {"loss", "cross_entropy", "supcon"}
    assert torch.allclose(first["loss"], first["cross_entropy"] + first["supcon"])
    for _ in range(20):
        out = objective(wrapped, (x, soft))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert float(out["supcon"]) < 0.7 * float(first["supcon"])
    # the wrapper trained the plain timm classifier in place: its own forward gives the same logits
    student.eval()
    assert torch.allclose(EmbeddingStudent(student)(x)[0], student(x), atol=1e-5)
    with pytest.raises(ValueError, match="supcon_weight"):
        StudentObjective(supcon_weight=-1.0)


def test_student_initialised_from_teacher_has_its_backbone_and_saves_a_timm_backbone(tmp_path: Path) -> None:
    teacher = timm.create_model(ARCH, num_classes=0)
    student = build_student(ARCH, 5, drop_rate=0.1, drop_path_rate=0.1, init="teacher",
                            teacher_backbone_state=teacher.state_dict())
    state = backbone_state(student)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in state.items())
    assert set(state) == set(teacher.state_dict())
    save_backbone(tmp_path / "b.pt", teacher)
    with pytest.raises(ValueError, match="does not match"):
        build_student("resnet18", 5, drop_rate=0, drop_path_rate=0, init="teacher",
                      teacher_backbone_state=teacher.state_dict())
    with pytest.raises(ValueError, match="student_init"):
        build_student(ARCH, 5, drop_rate=0, drop_path_rate=0, init="bogus")


def test_network_probabilities_restore_training_mode() -> None:
    student = build_student(ARCH, 3, drop_rate=0.5, drop_path_rate=0.0, init="scratch").train()
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    p1, p2 = network_probabilities(student, images), network_probabilities(student, images)
    assert np.allclose(p1, p2)  # no dropout noise: the teacher is deterministic
    assert student.training

"""Noisy-student training: soft cross-entropy, students under noise, teachers, and round chaining."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from shared_fixtures import default_part, default_spec

import retailnb.noisy.rounds as rounds
from retailnb.config.data import SyntheticConfig
from retailnb.data.manifest import read_manifest
from retailnb.data.synthetic import generate
from retailnb.evaluation.quickprobe import load_probe_data
from retailnb.models.checkpoint import save_backbone
from retailnb.noisy.rounds import first_teacher, load_source, run_noisy_student
from retailnb.noisy.student import (
    EmbeddingStudent,
    StudentObjective,
    backbone_state,
    build_student,
    classifier_keys,
    fit_feature_teacher,
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


@pytest.mark.parametrize("kind", ["logreg", "linear"])
def test_feature_teacher_gives_probabilities_that_fit_the_labelled_images(kind: str) -> None:
    torch.manual_seed(0)
    backbone = timm.create_model(ARCH, num_classes=0)
    # two visually distinct classes: dark and bright images
    images = np.concatenate([np.full((10, 32, 32, 3), 30, np.uint8), np.full((10, 32, 32, 3), 220, np.uint8)])
    images[:, :16] += np.random.default_rng(0).integers(0, 20, (20, 16, 32, 3), dtype=np.uint8)
    labels = np.array([0] * 10 + [1] * 10)
    teacher = fit_feature_teacher(backbone, images, labels, classifier=kind)
    probs = teacher.predict_proba(images)
    assert probs.shape == (20, 2) and np.allclose(probs.sum(1), 1)
    assert (probs.argmax(1) == labels).mean() == 1.0


def test_network_probabilities_restore_training_mode() -> None:
    student = build_student(ARCH, 3, drop_rate=0.5, drop_path_rate=0.0, init="scratch").train()
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    p1, p2 = network_probabilities(student, images), network_probabilities(student, images)
    assert np.allclose(p1, p2)  # no dropout noise: the teacher is deterministic
    assert student.training


def test_round_two_starts_from_round_one_student(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = default_part(
        SyntheticConfig, "data.synthetic",
        n_source_families=2, n_monitor_families=1, n_target_families=1, skus_per_family=3, labelled_fraction=0.67,
        catalogue_per_sku=1, labelled_shelf_per_sku=3, unlabelled_shelf_per_sku=3, monitor_train_per_sku=2,
        monitor_test_per_sku=2, probe_train_shelf_per_sku=2, probe_test_per_sku=2, image_size=32,
    )
    manifest = generate(config, tmp_path / "data", workers=1)
    torch.manual_seed(0)
    save_backbone(tmp_path / "teacher.pt", timm.create_model(ARCH, num_classes=0))
    seen: list[dict[str, torch.Tensor]] = []
    real_build = rounds.build_student

    def spy(*args: object, **kw: object) -> torch.nn.Module:
        seen.append({k: v.clone() for k, v in kw["teacher_backbone_state"].items()})  # type: ignore[union-attr]
        return real_build(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(rounds, "build_student", spy)
    tiny = dict(
        backbone__architecture=ARCH, backbone__image_size=32, compute__accelerator="cpu", compute__num_workers=0,
        rounds=2, batch_size=8, pseudo__threshold=0.0, pseudo__balance=False,
        engine__epochs=2, engine__warmup_epochs=0.5,
    )
    spec = default_spec("noisy", **tiny)
    source = load_source(str(manifest), 32, decode_workers=0)
    probe = load_probe_data(read_manifest(manifest), 32, "probe_train", "probe_test")
    backbone, teacher = first_teacher(spec, str(tmp_path / "teacher.pt"), source)
    probs = teacher.predict_proba(source.unlabelled)
    rows = run_noisy_student(spec, str(tmp_path / "noisy"), source, probe, backbone, probs)
    assert [r.round for r in rows] == [0, 1, 2]
    round1 = torch.load(tmp_path / "noisy" / "round_1" / "backbone.pt", weights_only=True)
    assert all(torch.equal(seen[1][k], v) for k, v in round1.items())
    assert not all(torch.equal(seen[0][k], v) for k, v in round1.items())
    for r in (1, 2):
        table = (tmp_path / "noisy" / f"round_{r}" / "pseudolabels.csv").read_text().splitlines()
        assert table[0].startswith("path,label,class_name,confidence")
        assert len(table) - 1 == rows[r].n_rows
        assert 0.0 <= rows[r].precision <= 1.0 and rows[r].coverage == 1.0  # threshold 0, no cap: keeps all
    json.dumps([row.model_dump() for row in rows])  # metrics rows are JSON-ready
    # with SupCon on the pseudolabels the rounds run through the same engine and save plain timm weights
    supcon = default_spec("noisy", **{**tiny, "rounds": 1, "supcon__weight": 0.5})
    rows = run_noisy_student(supcon, str(tmp_path / "noisy_supcon"), source, probe, backbone, probs)
    state = torch.load(tmp_path / "noisy_supcon" / "round_1" / "student.pt", weights_only=True)
    n_classes = state[classifier_keys(timm.create_model(ARCH))[0]].shape[0]
    timm.create_model(ARCH, num_classes=n_classes).load_state_dict(state)  # strict: a plain timm state dict
    assert [r.round for r in rows] == [0, 1] and 0.0 <= rows[1].probe_accuracy <= 1.0

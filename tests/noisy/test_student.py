"""Noisy-student training: round 1's feature teacher, and round chaining."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from shared_fixtures import default_spec, tiny_synthetic_manifest

import retailnb.noisy.rounds as rounds
from retailnb.data.cache import DiskImages
from retailnb.data.manifest import read_manifest
from retailnb.evaluation.quickprobe import load_probe_data
from retailnb.bundle.fit import new_bundle
from retailnb.models.backbone_info import read_backbone_info
from retailnb.models.checkpoint import save_backbone
from retailnb.models.classifier import classifier_keys
from retailnb.noisy.rounds import first_teacher, load_source, run_noisy_student
from retailnb.noisy.student import fit_feature_teacher

ARCH = "test_resnet"


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




@pytest.mark.pipeline
def test_round_two_starts_from_round_one_student(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tiny_synthetic_manifest(tmp_path / "data", monitor_train_per_sku=2, monitor_test_per_sku=2)
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
    for r in (1, 2):  # each round's backbone.pt has its backbone.json, as pretraining's has: fit needs only the weights
        info = read_backbone_info(tmp_path / "noisy" / f"round_{r}" / "backbone.pt")
        assert info is not None and (info.architecture, info.image_size, info.feature_dim) == (ARCH, 32, 96)
        assert json.loads(info.path.read_text())["round"] == r
    bundle = new_bundle(weights=tmp_path / "noisy" / "round_2" / "backbone.pt")
    assert (bundle.architecture, bundle.preprocessing.image_size) == (ARCH, 32)
    # with SupCon on the pseudolabels the rounds run through the same engine and save plain timm weights
    supcon = default_spec("noisy", **{**tiny, "rounds": 1, "supcon__weight": 0.5})
    rows = run_noisy_student(supcon, str(tmp_path / "noisy_supcon"), source, probe, backbone, probs)
    state = torch.load(tmp_path / "noisy_supcon" / "round_1" / "student.pt", weights_only=True)
    n_classes = state[classifier_keys(timm.create_model(ARCH))[0]].shape[0]
    timm.create_model(ARCH, num_classes=n_classes).load_state_dict(state)  # strict: a plain timm state dict
    assert [r.round for r in rows] == [0, 1] and 0.0 <= rows[1].probe_accuracy <= 1.0


@pytest.mark.pipeline
def test_a_finished_round_of_another_teacher_is_retrained_not_resumed(tmp_path: Path) -> None:
    """DVC keeps the persisted noisy folder when only the teacher changed (pretraining retrained with other
    parameters): the same noisy parameters from another teacher must train round 1 again."""
    manifest = tiny_synthetic_manifest(tmp_path / "data", monitor_train_per_sku=2, monitor_test_per_sku=2)
    spec = default_spec("noisy", backbone__architecture=ARCH, backbone__image_size=32, compute__accelerator="cpu",
                        compute__num_workers=0, rounds=1, batch_size=8, pseudo__threshold=0.0,
                        pseudo__balance=False, engine__epochs=2, engine__warmup_epochs=0.5)
    source = load_source(str(manifest), 32, decode_workers=0)
    probe = load_probe_data(read_manifest(manifest), 32, "probe_train", "probe_test")
    students = []
    for teacher_seed in (0, 1):
        torch.manual_seed(teacher_seed)
        save_backbone(tmp_path / "teacher.pt", timm.create_model(ARCH, num_classes=0))
        backbone, teacher = first_teacher(spec, str(tmp_path / "teacher.pt"), source)
        run_noisy_student(spec, str(tmp_path / "noisy"), source, probe, backbone, teacher.predict_proba(source.unlabelled))
        students.append(torch.load(tmp_path / "noisy" / "round_1" / "backbone.pt", weights_only=True))
    assert any(not torch.equal(students[0][k], students[1][k]) for k in students[0])


@pytest.mark.pipeline
def test_the_on_disk_cache_gives_the_same_rounds_as_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """compute.images: disk trains on and pseudolabels the same bytes in the same order as memory."""
    monkeypatch.chdir(tmp_path)  # the cache goes in .cache/images here
    manifest = tiny_synthetic_manifest(tmp_path / "data", monitor_train_per_sku=2, monitor_test_per_sku=2)
    torch.manual_seed(0)
    save_backbone(tmp_path / "teacher.pt", timm.create_model(ARCH, num_classes=0))
    probe = load_probe_data(read_manifest(manifest), 32, "probe_train", "probe_test")
    results = []
    for storage in ("memory", "disk"):
        spec = default_spec("noisy", backbone__architecture=ARCH, backbone__image_size=32, compute__accelerator="cpu",
                            compute__num_workers=0, compute__images=storage, rounds=1, batch_size=8,
                            pseudo__threshold=0.0, pseudo__balance=False, engine__epochs=1, engine__warmup_epochs=0.0)
        source = load_source(str(manifest), 32, decode_workers=0, storage=spec.compute.images)
        backbone, teacher = first_teacher(spec, str(tmp_path / "teacher.pt"), source)
        probs = teacher.predict_proba(source.unlabelled)
        rows = run_noisy_student(spec, str(tmp_path / storage), source, probe, backbone, probs)
        student = torch.load(tmp_path / storage / "round_1" / "student.pt", weights_only=True)
        results.append((source, probs, rows, student, (tmp_path / storage / "round_1" / "pseudolabels.csv").read_text()))
    (mem, p_mem, r_mem, s_mem, t_mem), (disk, p_disk, r_disk, s_disk, t_disk) = results
    assert isinstance(disk.unlabelled, DiskImages) and isinstance(mem.unlabelled, torch.Tensor)
    assert torch.equal(disk.labelled[:], mem.labelled) and torch.equal(disk.unlabelled[:], mem.unlabelled)
    assert np.array_equal(p_disk, p_mem) and t_disk == t_mem
    assert all(torch.allclose(s_disk[k].float(), s_mem[k].float(), atol=1e-5) for k in s_mem)
    assert r_disk[1].train_loss == pytest.approx(r_mem[1].train_loss, abs=1e-5)


def test_a_batch_larger_than_the_pool_is_refused_naming_the_key(tmp_path: Path) -> None:
    """noisy.batch_size above every image a student could train on stops the stage before any round."""
    from retailnb.stages.noisy import NoisyPaths, run_here

    manifest = tiny_synthetic_manifest(tmp_path / "data", monitor_train_per_sku=2, monitor_test_per_sku=2)
    torch.manual_seed(0)
    save_backbone(tmp_path / "teacher.pt", timm.create_model(ARCH, num_classes=0))
    spec = default_spec("noisy", backbone__architecture=ARCH, backbone__image_size=32, compute__accelerator="cpu",
                        compute__num_workers=0, rounds=1, batch_size=4096, engine__epochs=1,
                        engine__warmup_epochs=0.0)
    out = tmp_path / "noisy"
    paths = NoisyPaths(manifest=str(manifest), teacher_backbone=str(tmp_path / "teacher.pt"), out_dir=str(out),
                       metrics=str(tmp_path / "noisy.json"), rounds_plot=str(tmp_path / "rounds.json"),
                       pseudolabels_plot=str(tmp_path / "pseudolabels.json"))
    with pytest.raises(ValueError, match=r"noisy\.batch_size: 4096 is more than the \d+ labelled and unlabelled"):
        run_here(spec, paths)
    assert not (out / "round_1").exists() and not (tmp_path / "noisy.json").exists()


def test_a_round_smaller_than_a_batch_is_named_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A strict pseudolabel threshold can leave a round fewer images than a batch: the log says so."""
    manifest = tiny_synthetic_manifest(tmp_path / "data", monitor_train_per_sku=2, monitor_test_per_sku=2)
    spec = default_spec("noisy", backbone__architecture=ARCH, backbone__image_size=32, compute__accelerator="cpu",
                        compute__num_workers=0, rounds=1, batch_size=8, pseudo__threshold=1.0,
                        pseudo__balance=False, engine__epochs=1, engine__warmup_epochs=0.0)
    source = load_source(str(manifest), 32, decode_workers=0)
    big = spec.model_copy(update={"noisy": spec.noisy.model_copy(update={"batch_size": len(source.labels) + 1})})
    probe = load_probe_data(read_manifest(manifest), 32, "probe_train", "probe_test")
    torch.manual_seed(0)
    save_backbone(tmp_path / "teacher.pt", timm.create_model(ARCH, num_classes=0))
    backbone, teacher = first_teacher(big, str(tmp_path / "teacher.pt"), source)
    with caplog.at_level("WARNING", logger="retailnb.noisy.rounds"):
        run_noisy_student(big, str(tmp_path / "noisy"), source, probe, backbone, teacher.predict_proba(source.unlabelled))
    assert any("noisy.batch_size" in r.getMessage() and "round 1" in r.getMessage() for r in caplog.records)

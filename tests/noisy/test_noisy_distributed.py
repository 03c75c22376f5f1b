"""The noisy-student stage under a 2-process gloo ``torchrun`` against the same stage in one process."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from shared_fixtures import default_spec, tiny_synthetic_manifest

from retailnb.models.checkpoint import save_backbone
from retailnb.stages.noisy import NoisyPaths, run

pytestmark = pytest.mark.pipeline  # torchrun process groups: end to end


ARCH = "test_resnet"


def stage_paths(root: Path, manifest: Path, teacher: Path) -> NoisyPaths:
    return NoisyPaths(manifest=str(manifest), teacher_backbone=str(teacher), out_dir=str(root / "noisy"),
                      metrics=str(root / "noisy.json"), rounds_plot=str(root / "rounds.json"),
                      pseudolabels_plot=str(root / "pseudolabels.json"))


def test_two_processes_pseudolabel_identically_train_the_student_and_resume(tmp_path: Path, torchrun_threads: None) -> None:
    """Teacher inference shared out between 2 processes gives the 1-process pseudolabel table byte for byte;
    the student trains with DDP, rank 0 writes, and a rerun resumes the finished round instead of training."""
    manifest = tiny_synthetic_manifest(tmp_path / "data", probe_test_per_sku=1)
    torch.manual_seed(0)
    save_backbone(tmp_path / "teacher.pt", timm.create_model(ARCH, num_classes=0))
    results = {}
    for devices in (1, 2):
        spec = default_spec("noisy", backbone__architecture=ARCH, backbone__image_size=32, compute__accelerator="cpu",
                            compute__num_workers=0, compute__devices=devices, rounds=1, batch_size=8,
                            engine__epochs=1, engine__warmup_epochs=0.0)
        paths = stage_paths(tmp_path / f"devices_{devices}", manifest, tmp_path / "teacher.pt")
        results[devices] = (paths, run(spec, paths))
    (one, first), (two, second) = results[1], results[2]
    table = Path(one.out_dir, "round_1", "pseudolabels.csv").read_bytes()
    assert Path(two.out_dir, "round_1", "pseudolabels.csv").read_bytes() == table and table.count(b"\n") > 1
    assert second.threshold_curve == first.threshold_curve
    assert [r.round for r in second.record.rounds] == [0, 1]
    assert second.record.rounds[0] == first.record.rounds[0]  # round 0: the same teacher backbone
    student = torch.load(Path(two.out_dir, "round_1", "student.pt"), weights_only=True)
    again = run(spec, two)  # the finished round's state is resumed: nothing trains, the same student
    resumed = torch.load(Path(two.out_dir, "round_1", "student.pt"), weights_only=True)
    assert all(torch.equal(student[k], resumed[k]) for k in student)
    assert again.record == second.record

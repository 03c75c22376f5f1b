"""The evaluation stage under a 2-process gloo ``torchrun`` against the same stage in one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from shared_fixtures import default_spec, tiny_synthetic_manifest

from retailnb.evaluation.features import load_features
from retailnb.models.checkpoint import save_backbone
from retailnb.stages.evaluate import EvaluatePaths, run

pytestmark = pytest.mark.pipeline  # torchrun process groups: end to end


ARCH = "test_resnet"


def stage_paths(root: Path, manifest: Path, pretrain_dir: Path) -> EvaluatePaths:
    return EvaluatePaths(manifest=str(manifest), pretrain_dir=str(pretrain_dir), noisy_dir=str(root / "noisy"),
                         features_dir=str(root / "features"), metrics=str(root / "evaluate.json"),
                         plots_dir=str(root / "plots"))


def test_two_processes_extract_the_same_features_finetune_and_resume(tmp_path: Path, torchrun_threads: None) -> None:
    """Feature extraction shared out between 2 processes caches the 1-process features exactly; the
    finetuning baselines train with DDP, rank 0 saves them, and a rerun reuses the finished runs."""
    manifest = tiny_synthetic_manifest(tmp_path / "data", labelled_shelf_per_sku=1, unlabelled_shelf_per_sku=1)
    main = default_spec("evaluate", "prepared").main_variant
    (tmp_path / "pretrain" / main).mkdir(parents=True)
    torch.manual_seed(0)
    save_backbone(tmp_path / "pretrain" / main / "backbone.pt", timm.create_model(ARCH, num_classes=0))
    results = {}
    for devices in (1, 2):
        spec = default_spec("evaluate", "prepared", backbone__architecture=ARCH, backbone__image_size=32,
                            compute__accelerator="cpu", compute__num_workers=0, compute__devices=devices,
                            probe__shots=[1, "all"], probe__draws=1, finetune__batch_size=4, finetune__lrs=[0.01],
                            finetune__patience=1, finetune__engine__max_epochs=2, finetune__engine__warmup_epochs=0.0,
                            finetune__random_init=True)  # both baselines, each with DDP
        paths = stage_paths(tmp_path / f"devices_{devices}", manifest, tmp_path / "pretrain")
        results[devices] = (paths, run(spec, "prepared", paths))
    (one, first), (two, second) = results[1], results[2]
    for backbone in ("random_init", main):
        alone, shared = (load_features(Path(p.features_dir) / f"{backbone}.npz") for p in (one, two))
        assert alone.features.tobytes() == shared.features.tobytes() and np.array_equal(alone.labels, shared.labels)
    probes = lambda methods: {name: {k: v for k, v in row.items() if k.startswith(("probe_", "knn_"))}  # noqa: E731
                              for name, row in methods.items()}
    assert probes(second.record.methods) == probes(first.record.methods)  # the probes see the same features
    finetuned = second.record.finetune
    assert set(finetuned) == {"pretrained", "random_init"}
    assert all(1 <= r.best_epoch <= r.epochs <= 2 for record in finetuned.values() for r in record.grid)
    best = sorted(Path(two.features_dir, "finetune").rglob("best.pt"))
    stamps = [p.stat().st_mtime_ns for p in best]
    assert len(best) == 2
    again = run(spec, "prepared", two)  # every finetuning run finished: reused, nothing trains or is rewritten
    assert [p.stat().st_mtime_ns for p in best] == stamps
    assert {k: r.grid for k, r in again.record.finetune.items()} == {k: r.grid for k, r in finetuned.items()}
    assert again.record.finetune["pretrained"].accuracy == finetuned["pretrained"].accuracy

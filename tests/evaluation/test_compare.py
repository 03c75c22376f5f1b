"""The comparison table's backbone loop: features cached per backbone, probes the same in any number of processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch

from retailnb.evaluation.compare import collect_backbones, evaluate_backbones
from retailnb.evaluation.quickprobe import ProbeData
from retailnb.models.checkpoint import save_backbone

ARCH = "test_resnet"


def tiny_probe_data() -> ProbeData:
    """Three products told apart by colour: 4 training and 3 test images each, 32 px."""
    rng = np.random.default_rng(0)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])

    def images(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(3), per_class)
        x = colours[y][:, None, None, :] + rng.normal(0, 20, (len(y), 32, 32, 3))
        return np.clip(x, 0, 255).astype(np.uint8), y

    x_train, y_train = images(4)
    x_test, y_test = images(3)
    return ProbeData(train=[], test=[], x_train=x_train, x_test=x_test, y_train=y_train, y_test=y_test,
                     classes=["red", "green", "blue"])


def test_backbones_are_probed_alike_in_one_or_two_processes_and_features_are_cached(tmp_path: Path) -> None:
    torch.manual_seed(1)
    (tmp_path / "pretrain" / "simclr").mkdir(parents=True)
    save_backbone(tmp_path / "pretrain" / "simclr" / "backbone.pt", timm.create_model(ARCH, num_classes=0))
    backbones = collect_backbones(tmp_path / "pretrain", tmp_path / "noisy")
    assert list(backbones) == ["random_init", "simclr"]
    data = tiny_probe_data()
    kw = dict(architecture=ARCH, shots=[1, 2, None], draws=2, seed=0)
    one, features = evaluate_backbones(backbones, data, cache_dir=tmp_path / "features", workers=1, **kw)
    two, _ = evaluate_backbones(backbones, data, cache_dir=tmp_path / "features", workers=2, **kw)
    untimed = lambda rows: [{k: v for k, v in r.items() if not k.startswith("fit_seconds")} for r in rows]  # noqa: E731
    assert {n: untimed(r) for n, r in one.items()} == {n: untimed(r) for n, r in two.items()}
    assert [s["shots"] for s in one["simclr"]] == [1, 2, "all"]
    assert sorted(p.name for p in (tmp_path / "features").glob("*.npz")) == ["random_init.npz", "simclr.npz"]
    assert features["simclr"][0].shape[0] == 12 and features["simclr"][1].shape[0] == 9
    # the colours separate the products even for random weights
    assert one["random_init"][-1]["probe_accuracy_mean"] == 1.0

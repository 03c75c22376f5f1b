"""The finetuning baselines: a stratified validation split, early stopping, the learning-rate grid, which baselines run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from pipeline_fixture import write_params
from shared_fixtures import colour_images, default_spec, repo_params, with_overrides
from torch import nn

import retailnb.evaluation.finetune as finetune_mod
from retailnb.config.evaluate import EvaluateStageSpec
from retailnb.config.stages import load_stage
from retailnb.evaluation.compare import finetune_baselines
from retailnb.evaluation.finetune import EarlyStopping, finetune, validation_split
from retailnb.evaluation.quickprobe import ProbeData
from retailnb.models.checkpoint import save_backbone

ARCH = "test_resnet"


def test_validation_split_is_stratified_seeded_and_keeps_single_images_for_training() -> None:
    y = np.array([0] * 10 + [1] * 5 + [2] * 2 + [3])
    train, val = validation_split(y, 0.2, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(y)))  # disjoint and complete
    assert [int((y[val] == c).sum()) for c in range(4)] == [2, 1, 1, 0]  # 20% rounded, at least 1, never all
    assert int((y[train] == 3).sum()) == 1
    again, other = validation_split(y, 0.2, seed=0), validation_split(y, 0.2, seed=1)
    assert np.array_equal(again[1], val) and not np.array_equal(other[1], val)


def test_early_stopping_keeps_the_best_epoch_stops_on_patience_and_resumes(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    scores = iter([0.2, 0.5, 0.4, 0.45, 0.9])
    monkeypatch.setattr(finetune_mod, "accuracy", lambda model, x, y: next(scores))
    model = nn.Linear(1, 1)
    stopper = EarlyStopping(np.zeros((1, 4, 4, 3)), np.zeros(1), patience=2, best_path=tmp_path / "best.pt",
                            run_key="k")
    stops = []
    for epoch in range(4):
        with torch.no_grad():
            model.weight.fill_(float(epoch))  # the weights say which epoch they are from
        stops.append(stopper(epoch, model))
    assert stops == [False, False, False, True]  # epoch 3 is two epochs past the best (epoch 1)
    assert stopper.best_epoch == 1 and stopper.best_accuracy == 0.5
    assert stopper.best_state is not None and float(stopper.best_state["weight"]) == 1.0
    stopper.finish()
    resumed = EarlyStopping(np.zeros((1, 4, 4, 3)), np.zeros(1), patience=2, best_path=tmp_path / "best.pt",
                            run_key="k")
    assert (resumed.finished, resumed.best_epoch, resumed.last_epoch, resumed.best_accuracy) == (True, 1, 3, 0.5)
    assert float(resumed.best_state["weight"]) == 1.0  # type: ignore[index]
    other = EarlyStopping(np.zeros((1, 4, 4, 3)), np.zeros(1), patience=2, best_path=tmp_path / "best.pt",
                          run_key="another run")
    assert not other.finished and other.best_state is None
    monkeypatch.setattr(finetune_mod, "code_digest", lambda: "another version of retailnb")
    edited = EarlyStopping(np.zeros((1, 4, 4, 3)), np.zeros(1), patience=2, best_path=tmp_path / "best.pt",
                           run_key="k")
    assert not edited.finished and edited.best_state is None  # a finished run of other code is trained again


def colour_split(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    names = ["red", "green", "blue"]
    x, labels = colour_images(names, per_class, seed)
    return x, np.array([names.index(n) for n in labels])


@pytest.mark.parametrize("pretrained", [True, False])
def test_finetune_chooses_the_lr_on_validation_scores_test_once_and_reuses_a_finished_grid(
        tmp_path: Path, pretrained: bool) -> None:
    spec = default_spec("evaluate", "prepared", finetune__batch_size=8, finetune__lrs=[0.0001, 0.01],
                        finetune__patience=1, finetune__engine__max_epochs=3, finetune__engine__warmup_epochs=0.5)
    x_train, y_train = colour_split(6, seed=0)
    x_test, y_test = colour_split(4, seed=1)
    torch.manual_seed(0)
    state = timm.create_model(ARCH, num_classes=0).state_dict() if pretrained else None
    compute = spec.compute.model_copy(update={"num_workers": 0, "accelerator": "cpu"})

    def run() -> finetune_mod.FinetuneResult:
        return finetune(ARCH, state, x_train, y_train, x_test, y_test, spec=spec.finetune, compute=compute,
                        state_dir=tmp_path / "ft", image_size=32)

    result = run()
    assert [r.lr for r in result.grid] == [0.0001, 0.01]
    best = max(result.grid, key=lambda r: r.val_accuracy)
    assert (result.lr, result.val_accuracy, result.best_epoch) == (best.lr, best.val_accuracy, best.best_epoch)
    assert all(1 <= r.best_epoch <= r.epochs <= 3 for r in result.grid)
    assert result.accuracy == finetune_mod.accuracy(result.model, x_test, y_test) and result.seconds > 0
    again = run()  # every run of the grid finished: its best weights are reused, nothing is trained again
    assert again.grid == result.grid and again.accuracy == result.accuracy
    assert again.seconds < result.seconds


@pytest.mark.parametrize("random_init", [False, True])
def test_the_random_weights_baseline_runs_only_when_evaluate_finetune_random_init_says_so(
        tmp_path: Path, random_init: bool) -> None:
    """``evaluate.finetune.random_init`` (a YAML boolean) adds the second baseline; off, only the main
    backbone is finetuned and no random-weights run is trained or saved."""
    params = write_params(tmp_path, with_overrides(repo_params(), {"evaluate.finetune.random_init": random_init}))
    assert f"random_init: {str(random_init).lower()}" in params.read_text()  # a YAML boolean
    spec = load_stage(EvaluateStageSpec, params, key="prepared")
    assert spec.finetune.random_init is random_init
    spec = spec.model_copy(update={"finetune": spec.finetune.model_copy(update={
        "batch_size": 8, "lrs": [0.01], "patience": 1,
        "engine": spec.finetune.engine.model_copy(update={"max_epochs": 1, "warmup_epochs": 0.0})})})
    x_train, y_train = colour_split(4, seed=0)
    x_test, y_test = colour_split(2, seed=1)
    data = ProbeData(train=[], test=[], x_train=x_train, x_test=x_test, y_train=y_train, y_test=y_test,
                     classes=["red", "green", "blue"])
    backbone = tmp_path / "backbone.pt"
    torch.manual_seed(0)
    save_backbone(backbone, timm.create_model(ARCH, num_classes=0))
    compute = spec.compute.model_copy(update={"num_workers": 0, "accelerator": "cpu"})
    done = finetune_baselines(spec.backbone.model_copy(update={"architecture": ARCH, "image_size": 32}), backbone,
                              data, spec=spec.finetune, compute=compute, state_dir=tmp_path / "ft")
    assert list(done) == (["pretrained", "random_init"] if random_init else ["pretrained"])
    assert (tmp_path / "ft" / "random_init").exists() is random_init

"""Contrastive pretraining end to end on a tiny synthetic dataset: losses, checkpoints, resume, DDP."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from PIL import Image
from pydantic import ValidationError
from shared_fixtures import default_part, default_spec

from retailnb.config.data import SyntheticSpec
from retailnb.config.pretrain import ContrastiveModelSpec, ObjectivesSpec
from retailnb.data.synthetic import generate
from retailnb.models.checkpoint import load_checkpoint
from retailnb.stages.pretrain import PretrainPaths, PretrainRunSpec, train, train_here
from retailnb.train.contrastive import (
    ContrastiveModel,
    ContrastiveObjective,
    build_model,
)
from retailnb.train.engine import FitResult, can_resume

BACKBONE = "test_resnet"  # timm's tiny test model: a real CNN, random init, no download
VARIANTS = {
    "simclr_supcon": {},
    "simsiam": {"simclr_weight": 0.0, "supcon_weight": 0.0, "simsiam_weight": 1.0},
}
"""Objective weights as changes to params.yaml's ``simclr_supcon`` variant: it as it is, and SimSiam alone
(the commented-out ``simsiam`` variant of params.yaml)."""


def objectives(variant: str, **weights: float) -> ObjectivesSpec:
    return default_part(ObjectivesSpec, "pretrain.variants.simclr_supcon", **{**VARIANTS[variant], **weights})


def tiny_model(variant: str) -> ContrastiveModel:
    config = default_part(ContrastiveModelSpec, "pretrain.model", proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=8)
    return build_model(BACKBONE, config, objectives(variant))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = default_part(
        SyntheticSpec, "data.synthetic",
        n_source_families=2, n_monitor_families=1, n_target_families=1, skus_per_family=3, labelled_fraction=0.67,
        catalogue_per_sku=1, labelled_shelf_per_sku=3, unlabelled_shelf_per_sku=3, monitor_train_per_sku=2,
        monitor_test_per_sku=2, probe_train_shelf_per_sku=2, probe_test_per_sku=2, image_size=32,
    )
    return generate(config, tmp_path_factory.mktemp("data") / "prepared", workers=1)


def tiny_run(manifest: Path, out_dir: Path, variant: str = "simclr_supcon", **overrides: Any) -> PretrainRunSpec:
    """A variant of :data:`VARIANTS`, tiny, on the CPU; ``overrides`` as for ``default_spec``."""
    tiny = dict(
        backbone__architecture=BACKBONE, backbone__image_size=32,
        compute__accelerator="cpu", compute__num_workers=0,
        sampler__batch_size=8, sampler__images_per_class=2,
        model__proj_hidden_dim=32, model__proj_dim=16, model__pred_hidden_dim=8,
        engine__epochs=3, engine__warmup_epochs=0.5, engine__lr=3e-3,
        **{f"variants__simclr_supcon__{name}": weight for name, weight in VARIANTS[variant].items()},
    )
    spec = default_spec("pretrain", "simclr_supcon", **{**tiny, **overrides})
    paths = PretrainPaths(manifest=str(manifest), out_dir=str(out_dir), live_dir="", metrics="")
    return PretrainRunSpec(spec=spec, paths=paths, decode_workers=0)


def pretrain(run: PretrainRunSpec, *, stop_after_epoch: int | None = None) -> FitResult:
    """``run`` trained in this process, as the stage's torchrun workers run it."""
    return train_here(run.spec, run.paths, decode_workers=run.decode_workers, stop_after_epoch=stop_after_epoch)


@pytest.mark.parametrize(("variant", "losses_of", "fall"), [
    ("simclr_supcon", {"simclr", "supcon", "loss"}, 0.2 * 4.0),  # each loss starts near log(2 * 8 - 1)
    ("simsiam", {"simsiam", "loss"}, 0.2),  # negative cosine similarity: near 0 at first, -1 at best
])
def test_objective_falls_under_a_few_optimiser_steps(variant: str, losses_of: set[str], fall: float) -> None:
    torch.manual_seed(0)
    model = tiny_model(variant)
    objective = ContrastiveObjective(objectives(variant), default_part(ContrastiveModelSpec, "pretrain.model"))
    x = torch.randn(8, 3, 32, 32)
    views = [x + 0.05 * torch.randn_like(x), x + 0.05 * torch.randn_like(x)]
    labels = torch.tensor([0, 0, 1, 1, -1, -1, -1, -1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        out = objective(model, (views, labels))
        assert set(out) == losses_of
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[0] - losses[-1] > fall, losses


def test_switched_off_objective_is_not_computed() -> None:
    batch = ([torch.randn(4, 3, 32, 32)] * 2, torch.tensor([0, 0, 1, 1]))
    simclr = objectives("simclr_supcon", supcon_weight=0.0)
    out = ContrastiveObjective(simclr, default_part(ContrastiveModelSpec, "pretrain.model"))(tiny_model("simclr_supcon"), batch)
    assert set(out) == {"simclr", "loss"}
    with pytest.raises(ValidationError, match="at least one objective"):
        objectives("simsiam", simsiam_weight=0.0)


def test_each_head_is_built_only_for_its_objectives() -> None:
    """SimSiam's heads only with simsiam_weight > 0, SimCLR's only with SimCLR or SupCon on: a head no loss
    uses would leave parameters without gradients, which DDP rejects."""
    contrastive, simsiam = tiny_model("simclr_supcon"), tiny_model("simsiam")
    assert contrastive.head is not None and contrastive.simsiam is None
    assert simsiam.head is None and simsiam.simsiam is not None
    both = build_model(BACKBONE, default_part(ContrastiveModelSpec, "pretrain.model"),
                       objectives("simclr_supcon", simsiam_weight=0.5))
    out = ContrastiveObjective(objectives("simclr_supcon", simsiam_weight=0.5),
                               default_part(ContrastiveModelSpec, "pretrain.model"))(
        both, ([torch.randn(4, 3, 32, 32)] * 2, torch.tensor([0, 0, 1, 1])))
    assert set(out) == {"simclr", "supcon", "simsiam", "loss"}
    weighted = (out["simclr"] + out["supcon"] + 0.5 * out["simsiam"]).detach()
    assert float(out["loss"].detach()) == pytest.approx(float(weighted), rel=1e-5)


def test_simsiam_stops_the_gradient_at_its_targets() -> None:
    """Each view's prediction is pulled to the other view's projection, never the projection to the prediction."""
    objective = ContrastiveObjective(objectives("simsiam"), default_part(ContrastiveModelSpec, "pretrain.model"))
    z = [torch.randn(4, 8, requires_grad=True) for _ in range(2)]
    p = [torch.randn(4, 8, requires_grad=True) for _ in range(2)]
    loss = objective.simsiam(z, p)
    loss.backward()
    assert all(v.grad is None for v in z) and all(v.grad is not None and v.grad.abs().sum() > 0 for v in p)
    assert float(objective.simsiam([p[1], p[0]], p).detach()) == pytest.approx(-1.0)  # predictions equal to their targets


@pytest.mark.parametrize("variant", VARIANTS)
def test_pretrain_writes_a_backbone_that_timm_loads(manifest: Path, tmp_path: Path, variant: str) -> None:
    result = pretrain(tiny_run(manifest, tmp_path, variant))
    assert result.epochs_run == 3 and len(result.history["loss"]) == 3
    info = json.loads((tmp_path / "backbone.json").read_text())
    assert info["backbone"] == BACKBONE and info["labelled_classes"] == 4
    assert info["images"] == 4 * 4 + 6 * 3  # labelled (catalogue + shelf) and unlabelled rows
    model = timm.create_model(BACKBONE, num_classes=0, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "backbone.pt")))
    saved = torch.load(tmp_path / "backbone.pt", weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("variant", VARIANTS)
def test_interrupted_run_resumes_to_the_same_weights(manifest: Path, tmp_path: Path, variant: str) -> None:
    run = tiny_run(manifest, tmp_path / "straight", variant)
    pretrain(run)
    run_b = run.model_copy(update={"paths": replace(run.paths, out_dir=str(tmp_path / "interrupted"))})
    first = pretrain(run_b, stop_after_epoch=0)
    assert first.epochs_run == 1
    second = pretrain(run_b)
    assert second.start_epoch == 1 and second.epochs_run == 2
    assert second.images == 2 * first.images  # this call's epochs (no timing travels in the training state)
    done = pretrain(run_b)  # every epoch already done: nothing to train
    assert done.epochs_run == 0 and done.images == 0 and done.images_per_second == 0
    a = torch.load(tmp_path / "straight" / "backbone.pt", weights_only=True)
    b = torch.load(tmp_path / "interrupted" / "backbone.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # another parameter set must not continue this state: it trains every epoch afresh
    changed = pretrain(tiny_run(manifest, tmp_path / "interrupted", variant, sampler__batch_size=6))
    assert changed.start_epoch == 0 and changed.epochs_run == 3


def test_a_finished_run_on_other_images_is_retrained_not_resumed(manifest: Path, tmp_path: Path) -> None:
    """DVC keeps the persisted model folder when only the data changed (data.synthetic.difficulty renders
    other images under the same paths): the same parameters on other pixels must train again."""
    run = tiny_run(manifest, tmp_path / "model")
    pretrain(run)
    before = torch.load(tmp_path / "model" / "backbone.pt", weights_only=True)
    assert can_resume(tmp_path / "model" / "train_state.pt",
                      load_checkpoint(tmp_path / "model" / "train_state.pt")["extra"]["run_key"])
    other = tmp_path / "other"
    shutil.copytree(manifest.parent, other)
    for path in sorted(other.rglob("*.jpg"))[::2]:  # same paths and labels, other pixels
        Image.open(path).convert("RGB").transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(path, quality=95)
    rerun = pretrain(run.model_copy(update={"paths": replace(run.paths, manifest=str(other / "manifest.csv"))}))
    assert rerun.start_epoch == 0 and rerun.epochs_run == 3
    after = torch.load(tmp_path / "model" / "backbone.pt", weights_only=True)
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("variant", VARIANTS)
def test_two_process_ddp_run_on_cpu(manifest: Path, tmp_path: Path, variant: str) -> None:
    """Two gloo processes under torchrun; NT-Xent and SupCon gather negatives across them, and SimSiam's
    model has no head without a gradient (DDP would stop)."""
    run = tiny_run(manifest, tmp_path, variant, engine__epochs=1, engine__warmup_epochs=0.0, compute__devices=2)
    info = train(run.spec, run.paths, decode_workers=run.decode_workers)
    assert info["spec"]["compute"]["devices"] == 2
    assert all(torch.isfinite(torch.tensor(v)).all() for v in info["history"]["loss"])
    assert (tmp_path / "backbone.pt").is_file()


def test_the_on_disk_cache_trains_the_same_weights_as_memory(manifest: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """compute.images: disk feeds the same batches as memory, so the same seeds give the same backbone."""
    monkeypatch.chdir(tmp_path)  # the cache goes in .cache/images here, outside every output folder
    pretrain(tiny_run(manifest, tmp_path / "memory", engine__epochs=1, engine__warmup_epochs=0.0))
    pretrain(tiny_run(manifest, tmp_path / "disk", engine__epochs=1, engine__warmup_epochs=0.0, compute__images="disk"))
    assert len(list((tmp_path / ".cache" / "images").glob("*.npy"))) == 1
    a = torch.load(tmp_path / "memory" / "backbone.pt", weights_only=True)
    b = torch.load(tmp_path / "disk" / "backbone.pt", weights_only=True)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_a_batch_larger_than_the_training_set_is_refused_naming_the_key(manifest: Path, tmp_path: Path) -> None:
    """Copies of an image in one batch would be each other's negatives: the run stops before training."""
    run = tiny_run(manifest, tmp_path / "big", sampler__batch_size=4096)
    with pytest.raises(ValueError, match=r"pretrain\.sampler\.batch_size: 4096 is more than the \d+ images"):
        pretrain(run)
    assert not (tmp_path / "big" / "backbone.pt").exists()

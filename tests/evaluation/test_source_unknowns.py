"""The second unknown set of the rejection evaluation: the source's unlabelled-only products, picked from the
manifest, loaded like the target (``evaluate.rejection.source_unknowns``) and their features cached per
backbone beside the train/test features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from ruamel.yaml import YAML
from shared_fixtures import default_spec, repo_params, tiny_synthetic_manifest, with_overrides
from torch import nn

from retailnb.config.params_file import ParamsError
from retailnb.config.evaluate import EvaluateStageSpec
from retailnb.config.stages import load_stage
from retailnb.data.cache import DiskArray
from retailnb.data.images import decode_images
from retailnb.data.manifest import Manifest, ManifestRow, read_manifest
from retailnb.evaluation.compare import (
    SOURCE_UNKNOWN_DIR,
    SourceUnknownData,
    backbones_features,
    source_unknown_features,
    source_unknown_records,
)
from retailnb.evaluation.quickprobe import ProbeData
from retailnb.stages.evaluate import EvaluatePaths, load_source_unknowns

ARCH = "test_resnet"


def row(name: str, role: str, i: int = 0) -> ManifestRow:
    return ManifestRow(path=f"{name or 'none'}_{role}_{i}.jpg", label=-1 if not name else 0, class_name=name,
                  split="train", role=role, domain="shelf")


def test_only_unlabelled_rows_of_products_without_a_labelled_or_target_row_are_picked() -> None:
    rows = (row("a", "labelled"), row("a", "unlabelled"),  # a labelled product: its hidden-label photos are known
            row("b", "unlabelled", 0), row("c", "monitor_train"), row("b", "unlabelled", 1),
            row("", "unlabelled"),  # no product named: cannot be scored as any product
            row("t", "probe_test"), row("t", "unlabelled"),  # a target product, enrolled or held out already
            row("c", "unlabelled"), row("d", "labelled"))
    picked = source_unknown_records(Manifest(records=rows, root=Path(".")))
    assert picked == [rows[2], rows[4], rows[8]]  # b twice and c, in manifest order
    assert source_unknown_records(Manifest(records=rows[:2], root=Path("."))) == []


def test_the_synthetic_unlabelled_only_skus_are_the_source_products(tmp_path: Path) -> None:
    manifest = read_manifest(tiny_synthetic_manifest(tmp_path / "data"))
    picked = source_unknown_records(manifest)
    labelled = {r.class_name for r in manifest.records if r.role == "labelled"}
    unlabelled_only = {r.class_name for r in manifest.records if r.role == "unlabelled"} - labelled
    # two source families of three SKUs, one unlabelled-only per family, three shelf photos each
    assert {r.class_name for r in picked} == unlabelled_only and len(unlabelled_only) == 2 and len(picked) == 6
    assert all(r.role == "unlabelled" and r.domain == "shelf" for r in picked)


def write_params(tmp_path: Path, overrides: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    with path.open("w") as fh:
        YAML().dump(with_overrides(repo_params(), overrides), fh)
    return path


@pytest.mark.parametrize("value", ["false", 1, None])
def test_source_unknowns_must_be_a_yaml_bool(tmp_path: Path, value: Any) -> None:
    params_file = write_params(tmp_path, {"evaluate.rejection.source_unknowns": value})
    with pytest.raises(ParamsError) as error:
        load_stage(EvaluateStageSpec, params_file, "prepared")
    assert "evaluate.rejection.source_unknowns" in str(error.value) and "valid boolean" in str(error.value)
    assert load_stage(EvaluateStageSpec, write_params(tmp_path, {"evaluate.rejection.source_unknowns": False}),
                      "prepared").rejection.source_unknowns is False
    assert default_spec("evaluate", "prepared").rejection.source_unknowns is True  # params.yaml's


def stage_paths(manifest: Path, root: Path) -> EvaluatePaths:
    return EvaluatePaths(manifest=str(manifest), pretrain_dir=str(root / "pretrain"), noisy_dir=str(root / "noisy"),
                         features_dir=str(root / "features"), metrics=str(root / "evaluate.json"),
                         plots_dir=str(root / "plots"))


def test_the_stage_loads_the_source_products_like_the_target_only_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # compute.images: disk writes .cache/images here
    manifest = tiny_synthetic_manifest(tmp_path / "data")
    paths = stage_paths(manifest, tmp_path)
    spec = default_spec("evaluate", "prepared", backbone__image_size=24, compute__images="memory")
    source = load_source_unknowns(spec, paths)
    assert source is not None and source.n_products == 2 and len(source.records) == 6
    assert isinstance(source.x, np.ndarray) and source.x.shape == (6, 24, 24, 3)  # the backbone's image size
    assert source.classes == sorted({r.class_name for r in source.records})
    assert [source.classes[i] for i in source.y] == [r.class_name for r in source.records]
    expected = decode_images(read_manifest(manifest).paths(source.records), 24)
    assert np.array_equal(source.x, expected)
    on_disk = load_source_unknowns(spec.model_copy(update={"compute": spec.compute.model_copy(
        update={"images": "disk"})}), paths)
    assert on_disk is not None and isinstance(on_disk.x, DiskArray) and np.array_equal(on_disk.x[:], expected)
    off = spec.model_copy(update={"rejection": spec.rejection.model_copy(update={"source_unknowns": False})})
    assert load_source_unknowns(off, paths) is None
    real = spec.model_copy(update={"target": spec.target.model_copy(update={"source": "imagefolder",
                                                                           "root": "shop"})})
    assert load_source_unknowns(real, paths) is None  # a real target ignores the flag
    every_sku_labelled = tiny_synthetic_manifest(tmp_path / "labelled", labelled_fraction=1.0)
    assert load_source_unknowns(spec, stage_paths(every_sku_labelled, tmp_path)) is None


class Refuses(nn.Module):
    """A backbone that must not run: the features have to come from the cache."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("features were extracted again instead of read from the cache")


def test_source_features_are_cached_beside_the_target_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = lambda n: rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)  # noqa: E731
    data = ProbeData(train=[], test=[], x_train=images(4), x_test=images(2), y_train=np.array([0, 1, 0, 1]),
                     y_test=np.array([0, 1]), classes=["p", "q"])
    source = SourceUnknownData(records=[], x=images(3), y=np.array([0, 0, 1]), classes=["s1", "s2"])
    cache = tmp_path / "features"
    features, source_features = backbones_features({"random_init": "none"}, data, architecture=ARCH, seed=0,
                                                   cache_dir=cache, source=source)
    assert features["random_init"][0].shape[0] == 4 and source_features["random_init"].shape[0] == 3
    assert sorted(p.name for p in cache.glob("*.npz")) == ["random_init.npz"]  # the train/test file alone
    assert (cache / SOURCE_UNKNOWN_DIR / "random_init.npz").is_file()
    # a rerun (or run after torchrun's network work) reads them back, whatever the model
    again = source_unknown_features("random_init", Refuses(), source, cache, "none")
    assert np.array_equal(again, source_features["random_init"])
    # other weights or other images: extracted anew
    torch.manual_seed(1)
    other_model = timm.create_model(ARCH, num_classes=0)
    fewer = SourceUnknownData(records=[], x=source.x[:2], y=np.array([0, 1]), classes=["s1", "s2"])
    assert source_unknown_features("random_init", other_model, fewer, cache, "none").shape[0] == 2
    with pytest.raises(AssertionError, match="extracted again"):
        source_unknown_features("random_init", Refuses(), source, cache, "none")
    # without a source set nothing of the kind is extracted
    _, none = backbones_features({"random_init": "none"}, data, architecture=ARCH, seed=0, cache_dir=tmp_path / "f2")
    assert none == {} and not (tmp_path / "f2" / SOURCE_UNKNOWN_DIR).exists()

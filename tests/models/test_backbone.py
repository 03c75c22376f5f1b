"""Tests for retailnb.models.backbone: tiny random-init timm models, never a download."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
from timm.layers import DropPath

from retailnb.models import backbone as backbone_module
from retailnb.models.backbone import (
    WeightsUnavailableError,
    create_backbone,
    feature_dim,
)
from retailnb.models.checkpoint import save_backbone

TINY = "test_resnet"  # a 0.4 M-parameter ResNet that timm registers for its own tests


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Run this module's tensor maths on one thread: on a busy 2-core machine OpenMP threads spin-wait
    for each other and a tiny forward pass takes seconds instead of milliseconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to fetch hub weights fail loudly instead of touching the network."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("test tried to download pretrained weights")

    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", refuse)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", refuse)


@pytest.mark.parametrize("name", [TINY, "test_mambaout"])
def test_outputs_pooled_features_of_feature_dim(name: str) -> None:
    model = create_backbone(name).eval()
    out = model(_images())
    assert out.shape == (2, feature_dim(model))


def test_feature_dim_uses_head_hidden_size_when_the_head_has_a_hidden_layer() -> None:
    model = create_backbone("test_mambaout")
    assert model.num_features != model.head_hidden_size  # the case this guards
    assert feature_dim(model) == model.head_hidden_size


def test_feature_dim_rejects_a_non_timm_module() -> None:
    with pytest.raises(TypeError, match="no timm model"):
        feature_dim(torch.nn.Linear(2, 2))


def test_random_init_differs_between_seeds_and_repeats_with_the_same_seed() -> None:
    torch.manual_seed(1)
    a = create_backbone(TINY).state_dict()
    torch.manual_seed(1)
    b = create_backbone(TINY).state_dict()
    torch.manual_seed(2)
    c = create_backbone(TINY).state_dict()
    key = "conv1.0.weight"
    assert torch.equal(a[key], b[key])
    assert not torch.equal(a[key], c[key])


def test_drop_rate_is_dropout_on_the_features_in_training_mode_only() -> None:
    x = _images(4)
    dropped = create_backbone(TINY, drop_rate=0.5)
    dropped.train()
    assert not torch.equal(dropped(x), dropped(x))
    assert (dropped(x) == 0).any()
    dropped.eval()
    assert torch.equal(dropped(x), dropped(x))
    plain = create_backbone(TINY).train()
    assert torch.equal(plain(x), plain(x))


def test_drop_path_rate_reaches_the_blocks() -> None:
    model = create_backbone(TINY, drop_path_rate=0.2)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.2)
    assert not [m for m in create_backbone(TINY).modules() if isinstance(m, DropPath)]


def test_drop_path_on_a_model_without_it_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="does not support"):
        create_backbone("vgg11", drop_path_rate=0.1)


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_rates_outside_unit_interval_are_rejected(rate: float) -> None:
    with pytest.raises(ValueError, match="drop_rate"):
        create_backbone(TINY, drop_rate=rate)


def test_unknown_model_name_names_it_and_suggests_close_matches() -> None:
    with pytest.raises(ValueError) as info:
        create_backbone("resnt18")
    message = str(info.value)
    assert "'resnt18'" in message
    assert "resnet18" in message


def test_pretrained_tag_in_the_name_is_accepted() -> None:
    assert feature_dim(create_backbone("test_resnet.r160_in1k")) == 96


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        create_backbone(TINY, weights=str(missing))


def test_weights_file_is_loaded(tmp_path: Path) -> None:
    source = create_backbone(TINY).eval()
    path = save_backbone(tmp_path / "b.pth", source)
    torch.manual_seed(123)  # a different random init, which the file must overwrite
    loaded = create_backbone(TINY, weights=str(path)).eval()
    with torch.no_grad():
        assert torch.equal(source(_images()), loaded(_images()))


def test_weights_file_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = save_backbone(tmp_path / "other.pth", torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="other.pth"):
        create_backbone(TINY, weights=str(path))


def test_corrupt_weights_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt.pth"):
        create_backbone(TINY, weights=str(path))


def test_hub_weights_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        create_backbone(TINY, weights="hub")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message
    assert "download the weights" in message and "`weights` parameter" in message


def test_hub_download_failure_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("connection refused")

    monkeypatch.setattr(timm.models._builder, "load_pretrained", no_network)
    with pytest.raises(WeightsUnavailableError, match="connection refused") as info:
        create_backbone(TINY, weights="hub")
    assert "download the weights" in str(info.value)


def test_suggest_models_puts_names_containing_the_query_first() -> None:
    suggestions = backbone_module.suggest_models("convnext_at")
    assert suggestions[0].startswith("convnext_at")


def test_weights_of_other_shapes_are_one_line_naming_the_first(tmp_path: Path) -> None:
    """Not torch's list of every mismatching tensor: a count, the first tensor, and the backbone.json's model."""
    from retailnb.models.backbone_info import write_backbone_info

    path = save_backbone(tmp_path / "small" / "backbone.pt", create_backbone(TINY))
    with pytest.raises(ValueError) as refused:
        create_backbone("resnet10t", weights=str(path))
    text = str(refused.value)
    assert "\n" not in text and len(text) < 300, text
    assert "does not fit timm model 'resnet10t'" in text and "(first: conv1.0.weight is 16x3x3x3 in the file" in text
    write_backbone_info(tmp_path / "small" / "backbone.json", architecture=TINY, image_size=32, feature_dim=96)
    with pytest.raises(ValueError, match=f"backbone.json beside it says '{TINY}'; is it another architecture"):
        create_backbone("resnet10t", weights=str(path))
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match="cannot load weights file .*cut.pt") as cut:
        create_backbone(TINY, weights=str(tmp_path / "cut.pt"))
    assert "\n" not in str(cut.value) and len(str(cut.value)) < 400

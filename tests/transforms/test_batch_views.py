"""Tests for retailnb.transforms.batch_views: a uint8 batch in, per-image random normalised views out."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from shared_fixtures import default_part
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor

from retailnb.config.views import PretrainViewsSpec, ViewSpec
from retailnb.transforms.batch_views import BatchViews
from retailnb.transforms.views import retail_view_transform

SIZE = 32
NO_AUGMENTATION: dict[str, Any] = dict(
    perspective=0.0, rotation=0.0, color_jitter=0.0, grayscale_p=0.0, blur_p=0.0, occlusion_p=0.0
)


def views(**fields: Any) -> ViewSpec:
    """The pretraining views of params.yaml (``pretrain.views``) with ``fields`` replaced."""
    return default_part(PretrainViewsSpec, "pretrain.views", **fields)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """One thread: OpenMP threads spin-wait on a busy machine, which makes small batched ops crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batch(n: int = 6, height: int = 48, width: int = 40, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8, generator=generator)


def _ramp_batch(n: int, size: int = 48) -> Tensor:
    """Grey ramps, dark on the left and bright on the right: a mirror image is bright on the left."""
    ramp = torch.linspace(0, 255, size).round().to(torch.uint8)
    return ramp.expand(n, 3, size, size).clone()


def _left_darker(views: Tensor) -> Tensor:
    half = views.shape[-1] // 2
    return views[..., :half].mean(dim=(1, 2, 3)) < views[..., half:].mean(dim=(1, 2, 3))


def test_output_is_float32_views_of_the_requested_size() -> None:
    out = BatchViews(SIZE, views())(_batch())
    assert out.shape == (6, 3, SIZE, SIZE)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_without_normalisation_the_views_lie_in_the_unit_interval() -> None:
    out = BatchViews(SIZE, views(hue=0.1), normalize=False)(_batch(16))
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() > 0.5  # scaled from uint8, not left at 0..255 nor crushed to 0


def test_normalises_with_imagenet_statistics() -> None:
    value = torch.tensor([200, 100, 50], dtype=torch.uint8)
    images = value[None, :, None, None].expand(4, 3, 40, 40).clone()
    out = BatchViews(SIZE, views(**NO_AUGMENTATION))(images)  # crop and resize of a flat image: still flat
    mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN), torch.tensor(IMAGENET_DEFAULT_STD)
    expected = ((value.float() / 255 - mean) / std)[None, :, None, None].expand_as(out)
    assert torch.allclose(out, expected, atol=1e-5)


def test_identical_images_in_a_batch_get_different_views() -> None:
    """Parameters are drawn per image, not once per batch."""
    images = _batch(1).expand(8, -1, -1, -1).clone()
    torch.manual_seed(0)
    out = BatchViews(SIZE, views())(images)
    assert all(not torch.equal(out[0], out[i]) for i in range(1, 8))


def test_each_step_varies_within_a_batch_on_its_own() -> None:
    """Geometry alone and colour alone also differ between copies of one image."""
    images = _batch(1).expand(4, -1, -1, -1).clone()
    geometry = BatchViews(SIZE, views(**{**NO_AUGMENTATION, "rotation": 10.0}))
    colour = BatchViews(SIZE, views(crop_scale_min=1.0, crop_scale_max=1.0,
                                    **{**NO_AUGMENTATION, "color_jitter": 0.4, "color_jitter_p": 1.0}))
    for augment in (geometry, colour):
        torch.manual_seed(1)
        out = augment(images)
        assert not torch.equal(out[0], out[1])


def test_never_mirrors_by_default() -> None:
    torch.manual_seed(0)
    out = BatchViews(SIZE, views(occlusion_p=0.0), normalize=False)(_ramp_batch(64))
    assert _left_darker(out).all()


def test_hflip_p_one_always_mirrors() -> None:
    """The control for the default: the ramp test does see a flip."""
    torch.manual_seed(0)
    out = BatchViews(SIZE, views(occlusion_p=0.0, hflip_p=1.0), normalize=False)(_ramp_batch(32))
    assert not _left_darker(out).any()


def test_same_seed_gives_the_same_views() -> None:
    augment, images = BatchViews(SIZE, views(hue=0.1)), _batch()
    torch.manual_seed(3)
    first = augment(images)
    torch.manual_seed(3)
    assert torch.equal(first, augment(images))
    torch.manual_seed(4)
    assert not torch.equal(first, augment(images))


@pytest.mark.parametrize("seed", range(8))
def test_a_batch_of_one_works_whichever_steps_fire(seed: int) -> None:
    torch.manual_seed(seed)
    out = BatchViews(SIZE, views(hue=0.1, hflip_p=0.5))(_batch(1))
    assert out.shape == (1, 3, SIZE, SIZE)
    assert torch.isfinite(out).all()


def test_has_no_trainable_parameters_and_builds_no_graph() -> None:
    augment = BatchViews(SIZE, views())
    assert list(augment.parameters()) == []
    assert not augment(_batch(2)).requires_grad


def test_takes_the_parameters_of_the_per_image_transform() -> None:
    """One ViewSpec drives both: the same parameters, the strengths in one spec, the same defaults."""
    per_image = inspect.signature(retail_view_transform).parameters
    batched = inspect.signature(BatchViews).parameters
    assert list(batched) == list(per_image) == ["size", "views", "normalize"]
    assert all(per_image[name].default == batched[name].default for name in per_image)
    assert per_image["views"].annotation == batched["views"].annotation == "ViewSpec"
    spec = views(hue=0.1)
    assert retail_view_transform(SIZE, spec)(_batch(1)[0]).shape == BatchViews(SIZE, spec)(_batch(1)).shape[1:]


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.rand(2, 3, 8, 8), TypeError, "uint8"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), ValueError, "unsqueeze"),
        (torch.zeros(2, 8, 8, 3, dtype=torch.uint8), ValueError, "permute"),
        (torch.zeros(0, 3, 8, 8, dtype=torch.uint8), ValueError, r"\(B, 3, H, W\)"),
    ],
)
def test_rejects_input_that_is_not_a_uint8_batch(images: Tensor, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        BatchViews(SIZE, views())(images)


@pytest.mark.parametrize(
    "fields",
    [
        {"crop_scale_min": 0.0},
        {"crop_scale_min": 0.8, "crop_scale_max": 0.5},
        {"hue": 0.6},
        {"blur_p": 1.5},
        {"perspective": -0.1},
        {"rotation": -1.0},
    ],
)
def test_view_spec_rejects_out_of_range_parameters(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        views(**fields)


def test_rejects_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="size"):
        BatchViews(0, views())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_views_stay_on_the_device_of_the_batch() -> None:
    out = BatchViews(SIZE, views())(_batch().cuda())
    assert out.device.type == "cuda" and out.shape == (6, 3, SIZE, SIZE)

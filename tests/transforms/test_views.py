"""Tests for retailnb.transforms.views: uint8 (3, H, W) in, normalised float views out."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator

import pytest
import torch
from pydantic import ValidationError
from shared_fixtures import default_part
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor

from retailnb.config.views import PretrainViewsSpec, ViewSpec
from retailnb.transforms import (
    eval_transform,
    n_views,
    randaugment_transform,
    retail_view_transform,
)

SIZE = 32
Factory = Callable[[], Callable[[Tensor], Tensor]]


def views(**fields: object) -> ViewSpec:
    """The pretraining views of params.yaml (``pretrain.views``) with ``fields`` replaced."""
    return default_part(PretrainViewsSpec, "pretrain.views", **fields)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """One thread, as in a DataLoader worker (and OpenMP threads spin-wait on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _image(height: int = 48, width: int = 40, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)


def _gradient_image(size: int = 48) -> Tensor:
    """Grey ramp, dark on the left and bright on the right: a mirror image is bright on the left."""
    ramp = torch.linspace(0, 255, size).round().to(torch.uint8)
    return ramp.expand(3, size, size).clone()


def _left_darker(view: Tensor) -> bool:
    half = view.shape[-1] // 2
    return bool(view[..., :half].mean() < view[..., half:].mean())


ALL: list[tuple[str, Factory]] = [
    ("retail", lambda: retail_view_transform(SIZE, views())),
    ("retail_raw", lambda: retail_view_transform(SIZE, views(), normalize=False)),
    ("eval", lambda: eval_transform(SIZE)),
    ("randaugment", lambda: randaugment_transform(SIZE, magnitude=9)),
]


@pytest.mark.parametrize(("label", "make"), ALL)
def test_output_is_float32_of_the_requested_size(label: str, make: Factory) -> None:
    out = make()(_image())
    assert out.shape == (3, SIZE, SIZE)
    assert out.dtype == torch.float32


def test_without_normalisation_the_view_lies_in_the_unit_interval() -> None:
    out = torch.stack([retail_view_transform(SIZE, views(), normalize=False)(_image(seed=s)) for s in range(10)])
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() > 0.5  # scaled from uint8, not left at 0..255 nor crushed to 0


@pytest.mark.parametrize(("label", "make"), ALL)
def test_same_seed_gives_the_same_output(label: str, make: Factory) -> None:
    transform, image = make(), _image()
    torch.manual_seed(3)
    first = transform(image)
    torch.manual_seed(3)
    assert torch.equal(first, transform(image))


def test_different_seeds_give_different_views() -> None:
    transform, image = retail_view_transform(SIZE, views()), _image()
    torch.manual_seed(1)
    first = transform(image)
    torch.manual_seed(2)
    assert not torch.equal(first, transform(image))


def test_n_views_gives_n_distinct_views() -> None:
    out = n_views(retail_view_transform(SIZE, views()), 3)(_image())
    assert len(out) == 3
    assert all(v.shape == (3, SIZE, SIZE) for v in out)
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[1], out[2])


def test_n_views_rejects_zero() -> None:
    with pytest.raises(ValueError, match="n must be"):
        n_views(retail_view_transform(SIZE, views()), 0)


def test_never_mirrors_by_default() -> None:
    transform, image = retail_view_transform(SIZE, views(occlusion_p=0.0), normalize=False), _gradient_image()
    torch.manual_seed(0)
    assert all(_left_darker(transform(image)) for _ in range(60))


def test_hflip_p_one_always_mirrors() -> None:
    """The control for the default: the ramp test does see a flip."""
    transform = retail_view_transform(SIZE, views(occlusion_p=0.0, hflip_p=1.0), normalize=False)
    torch.manual_seed(0)
    assert not any(_left_darker(transform(_gradient_image())) for _ in range(30))


def test_eval_transform_is_deterministic_and_normalises_with_imagenet_statistics() -> None:
    value = torch.tensor([200, 100, 50], dtype=torch.uint8)
    image = value[:, None, None].expand(3, 40, 60).clone()
    transform = eval_transform(SIZE)
    out = transform(image)
    assert torch.equal(out, transform(image))
    mean, std = torch.tensor(IMAGENET_DEFAULT_MEAN), torch.tensor(IMAGENET_DEFAULT_STD)
    expected = (value.float() / 255 - mean) / std
    assert torch.allclose(out.mean(dim=(1, 2)), expected, atol=1e-5)
    assert torch.allclose(out.std(dim=(1, 2)), torch.zeros(3), atol=1e-5)


def test_eval_transform_keeps_the_centre() -> None:
    image = torch.zeros(3, 64, 96, dtype=torch.uint8)
    image[:, :, :12] = 255  # a bright band at the far left, well outside the centre square
    out = eval_transform(SIZE)(image)
    assert torch.allclose(out, eval_transform(SIZE)(torch.zeros(3, 64, 96, dtype=torch.uint8)))


def test_randaugment_noise_varies_and_magnitude_is_checked() -> None:
    transform, image = randaugment_transform(SIZE, magnitude=15), _image()
    outs = [transform(image) for _ in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    with pytest.raises(ValueError, match="magnitude"):
        randaugment_transform(SIZE, magnitude=31)


def test_randaugment_without_operations_is_the_eval_transform() -> None:
    image = _image()
    noiseless = randaugment_transform(SIZE, magnitude=9, num_ops=0)
    assert torch.equal(noiseless(image), eval_transform(SIZE)(image))


@pytest.mark.parametrize(("label", "make"), ALL)
def test_transforms_pickle_for_worker_processes(label: str, make: Factory) -> None:
    transform, image = make(), _image()
    clone = pickle.loads(pickle.dumps(transform))
    torch.manual_seed(4)
    first = transform(image)
    torch.manual_seed(4)
    assert torch.equal(first, clone(image))


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (torch.rand(3, 8, 8), TypeError, "uint8"),
        (torch.zeros(8, 8, 3, dtype=torch.uint8), ValueError, "permute"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), ValueError, r"\(3, H, W\)"),
    ],
)
def test_rejects_input_that_is_not_a_uint8_chw_image(
    image: Tensor, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        retail_view_transform(SIZE, views())(image)


@pytest.mark.parametrize(
    "fields",
    [
        {"crop_scale_min": 0.0},
        {"crop_scale_min": 0.8, "crop_scale_max": 0.5},
        {"hue": 0.6},
        {"blur_p": 1.5},
        {"perspective": -0.1},
    ],
)
def test_view_spec_rejects_out_of_range_parameters(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        views(**fields)

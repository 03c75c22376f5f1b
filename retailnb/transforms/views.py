"""Augmentations that bridge the retail domain gap, built from torchvision ``transforms.v2``.

Training images are catalogue packshots (one product, centred, studio light, plain background); test
images are shelf photos (off-centre, seen at an angle, in shop light, blurred, partly hidden). The
contrastive views simulate that gap: a random crop and rescale, a perspective warp and small rotation,
colour and lighting jitter, grayscale, blur and an occluding patch. Horizontal flips are off by default
because they mirror the printed text on a package, which a shelf photo never shows.

Every transform here takes one decoded image as a uint8 tensor of shape (3, H, W) (the training code
decodes each image once, then augments in DataLoader workers) and returns a float32 tensor of shape
(3, size, size), ImageNet-normalised unless asked otherwise. All of them pickle, so they work in
worker processes started with ``spawn``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from lightly.transforms.multi_view_transform import MultiViewTransform
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torchvision.transforms import v2

from retailnb.config.views import ViewSpec

ImageTransform = Callable[[Tensor], Tensor]

RANDAUGMENT_BINS = 31
"""torchvision's default number of RandAugment magnitude bins; valid magnitudes are 0 to 30."""

BLUR_SIGMA = (0.1, 2.0)
"""Range of the Gaussian blur's standard deviation in pixels, as in SimCLR."""

OCCLUSION_SCALE = (0.02, 0.2)
"""Range of the occluding patch's area, as a fraction of the image (a price tag, a neighbour, a hand)."""

OCCLUSION_VALUE = 128
"""Grey level of the occluding patch (uint8), neutral between dark and light packaging."""


class RequireUint8Image:
    """First step of every transform here: reject input that is not a uint8 (3, H, W) tensor.

    torchvision's transforms would accept a float image, an (H, W, 3) array or a whole batch and quietly
    produce wrong output (no scaling to [0, 1], channels swapped, one crop for the whole batch).
    """

    def __call__(self, image: Tensor) -> Tensor:
        """Return ``image`` unchanged when valid.

        Raises:
            TypeError: ``image`` is no uint8 tensor.
            ValueError: its shape is not (3, H, W).
        """
        if not isinstance(image, Tensor) or image.dtype != torch.uint8:
            kind = f"a {image.dtype} tensor" if isinstance(image, Tensor) else type(image).__name__
            raise TypeError(f"expected a uint8 image tensor of shape (3, H, W), got {kind}")
        if image.dim() != 3 or image.shape[0] != 3:
            hint = " (an (H, W, 3) array needs .permute(2, 0, 1))" if image.shape[-1:] == (3,) else ""
            shape = tuple(image.shape)
            raise ValueError(f"expected a uint8 image tensor of shape (3, H, W), got {shape}{hint}")
        return image

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_size(size: int) -> None:
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")


def blur_kernel_size(size: int) -> int:
    """Odd Gaussian kernel side of about a tenth of the image side, at least 3 (SimCLR's choice)."""
    return max(3, (size // 10) | 1)


def to_model_input(normalize: bool = True) -> list[ImageTransform]:
    """The last steps of every transform: uint8 to float32 in [0, 1], then ImageNet normalisation."""
    steps: list[ImageTransform] = [v2.ToDtype(torch.float32, scale=True)]
    if normalize:
        steps.append(v2.Normalize(mean=list(IMAGENET_DEFAULT_MEAN), std=list(IMAGENET_DEFAULT_STD)))
    return steps


def retail_view_transform(size: int, views: ViewSpec, *, normalize: bool = True) -> ImageTransform:
    """One random contrastive view of a product image, packshot-to-shelf style.

    In order: random resized crop, perspective warp, rotation, optional horizontal flip, colour jitter,
    random grayscale, Gaussian blur, occluding patch, then float conversion and normalisation. A step
    whose strength or probability is 0 is left out.

    Args:
        size: side of the square output, in pixels.
        views: the strengths (validated by :class:`retailnb.config.views.ViewSpec`; the same spec drives
            :class:`retailnb.transforms.batch_views.BatchViews`).
        normalize: apply ImageNet normalisation (otherwise the output lies in [0, 1]).

    Returns:
        A picklable callable mapping a uint8 (3, H, W) tensor to a float32 (3, size, size) tensor.

    Raises:
        ValueError: ``size`` < 1.
    """
    _check_size(size)
    v = views
    steps: list[ImageTransform] = [RequireUint8Image(), v2.RandomResizedCrop(size, scale=v.crop_scale)]
    if v.perspective > 0:
        steps.append(v2.RandomPerspective(distortion_scale=v.perspective, p=v.perspective_p))
    if v.rotation > 0:
        steps.append(v2.RandomRotation(v.rotation))
    if v.hflip_p > 0:
        steps.append(v2.RandomHorizontalFlip(p=v.hflip_p))
    if v.color_jitter > 0 or v.hue > 0:
        strength = v.color_jitter
        jitter = v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength, hue=v.hue)
        steps.append(v2.RandomApply([jitter], p=v.color_jitter_p))
    if v.grayscale_p > 0:
        steps.append(v2.RandomGrayscale(p=v.grayscale_p))
    if v.blur_p > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(blur_kernel_size(size), sigma=BLUR_SIGMA)], p=v.blur_p))
    if v.occlusion_p > 0:
        steps.append(v2.RandomErasing(p=v.occlusion_p, scale=OCCLUSION_SCALE, value=OCCLUSION_VALUE))
    return v2.Compose(steps + to_model_input(normalize))


def n_views(transform: ImageTransform, n: int) -> Callable[[Tensor], list[Tensor]]:
    """Apply ``transform`` ``n`` times independently: the views of one image for contrastive learning.

    Uses lightly's :class:`~lightly.transforms.multi_view_transform.MultiViewTransform`, which works on
    tensors as well as PIL images.

    Args:
        transform: a random transform, e.g. from :func:`retail_view_transform`.
        n: number of views (at least 1).

    Returns:
        A picklable callable mapping one image to a list of ``n`` transformed views.

    Raises:
        ValueError: ``n`` < 1.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1 view, got {n}")
    return MultiViewTransform([transform] * n)  # type: ignore[list-item,return-value]  # lightly annotates Compose and PIL


def eval_transform(size: int, *, crop_fraction: float = 1.0) -> ImageTransform:
    """Deterministic resize and centre crop for feature extraction and evaluation.

    Args:
        size: side of the square output, in pixels.
        crop_fraction: the shorter side is resized to ``size / crop_fraction`` before the centre crop
            (1.0 keeps the whole of a square image; timm's 0.875 trims the border).

    Returns:
        A picklable callable mapping a uint8 (3, H, W) tensor to a normalised float32 (3, size, size)
        tensor.

    Raises:
        ValueError: ``size`` < 1 or ``crop_fraction`` outside (0, 1].
    """
    _check_size(size)
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    resize = v2.Resize(round(size / crop_fraction))
    return v2.Compose([RequireUint8Image(), resize, v2.CenterCrop(size), *to_model_input()])


def randaugment_transform(size: int, magnitude: int, num_ops: int = 2) -> ImageTransform:
    """Noisy-student input noise: RandAugment on the resized image, without crops or flips.

    The student in noisy-student training sees noised images while the teacher labelled clean ones
    (Xie et al. 2020). The image is resized and centre-cropped as in :func:`eval_transform`, then
    torchvision's RandAugment applies ``num_ops`` random operations of strength ``magnitude``.

    Args:
        size: side of the square output, in pixels.
        magnitude: RandAugment strength, 0 to 30 (torchvision's 31 bins).
        num_ops: number of random operations per image.

    Returns:
        A picklable callable mapping a uint8 (3, H, W) tensor to a normalised float32 (3, size, size)
        tensor.

    Raises:
        ValueError: ``size`` < 1, ``magnitude`` outside 0..30 or ``num_ops`` < 0.
    """
    _check_size(size)
    if not 0 <= magnitude < RANDAUGMENT_BINS:
        raise ValueError(f"magnitude must be in 0..{RANDAUGMENT_BINS - 1}, got {magnitude}")
    if num_ops < 0:
        raise ValueError(f"num_ops must be >= 0, got {num_ops}")
    steps: list[ImageTransform] = [
        RequireUint8Image(),
        v2.Resize(size),
        v2.CenterCrop(size),
        v2.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=RANDAUGMENT_BINS),
    ]
    return v2.Compose(steps + to_model_input())

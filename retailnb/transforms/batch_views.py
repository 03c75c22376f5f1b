"""The catalogue-to-shelf views of :mod:`retailnb.transforms.views`, drawn for a whole batch at once.

:func:`~retailnb.transforms.views.retail_view_transform` augments one image at a time in DataLoader
workers; on a few CPU cores that costs more than the training step of a small backbone. This module
builds the same family of views with kornia's batched augmentations instead: one call turns a uint8
batch (B, 3, H, W), on whatever device it lives, into normalised float32 views (B, 3, size, size), with
random parameters drawn independently for every image (kornia's ``same_on_batch=False``), so two copies
of one image in a batch get different views. Call it twice on a batch for the two contrastive views.

The parameters have the names and meanings of ``retail_view_transform`` (so one ``ViewConfig`` drives
both) and share its constants (blur sigma, occlusion area and grey). Known differences from the
torchvision version: kornia draws one order of the four colour-jitter adjustments per batch rather than
per image, the crop is resized without antialiasing (it matters only when an image is larger than
``size`` and cropped small), and the hue jitter is off by default because kornia's RGB-HSV round trip
is the costliest step on CPU (about as much as all the other steps together).

Randomness comes from torch's global generator, so ``torch.manual_seed`` makes the views reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from retailnb.transforms.views import (
    BLUR_SIGMA,
    OCCLUSION_SCALE,
    OCCLUSION_VALUE,
    _check_probability,
    _check_size,
    blur_kernel_size,
)


def check_uint8_batch(images: Tensor) -> None:
    """Reject anything but a uint8 batch of RGB images of shape (B, 3, H, W).

    Raises:
        TypeError: ``images`` is no uint8 tensor.
        ValueError: its shape is not (B, 3, H, W) with B >= 1.
    """
    if not isinstance(images, Tensor) or images.dtype != torch.uint8:
        kind = f"a {images.dtype} tensor" if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(f"expected a uint8 image batch of shape (B, 3, H, W), got {kind}")
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        hint = " (one image needs .unsqueeze(0))" if images.dim() == 3 and images.shape[0] == 3 else ""
        hint = hint or (" (an (B, H, W, 3) batch needs .permute(0, 3, 1, 2))" if images.shape[-1:] == (3,) else "")
        raise ValueError(f"expected a uint8 image batch of shape (B, 3, H, W), got {tuple(images.shape)}{hint}")


def _check_strengths(crop_scale: Sequence[float], hue: float, color_jitter: float, rotation: float) -> None:
    """The range checks of ``retail_view_transform`` for its non-probability parameters."""
    low, high = crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {tuple(crop_scale)}")
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    if color_jitter < 0 or rotation < 0:
        raise ValueError(f"color_jitter and rotation must be >= 0, got {color_jitter} and {rotation}")


class BatchViews(nn.Module):
    """One random catalogue-to-shelf view of every image of a batch, with per-image parameters.

    In order: random resized crop, perspective warp, rotation, optional horizontal flip, colour jitter,
    random grayscale, Gaussian blur, occluding patch, then ImageNet normalisation. A step whose strength
    or probability is 0 is left out. Runs on the device of its input; holds no trainable parameters.

    Args:
        size: side of the square output, in pixels.
        crop_scale: range of the crop's area as a fraction of the image (RandomResizedCrop ``scale``).
        perspective: perspective distortion strength in [0, 1] (0: none).
        rotation: largest rotation, in degrees either way (0: none).
        color_jitter: brightness, contrast and saturation jitter strength (0: none).
        hue: hue jitter in [0, 0.5]; 0 by default since it is the slowest step (see the module notes).
        grayscale_p: probability of converting to grayscale.
        blur_p: probability of a Gaussian blur (kernel about a tenth of ``size``, sigma 0.1 to 2 px).
        occlusion_p: probability of a grey occluding rectangle (2 to 20 % of the area).
        hflip_p: probability of a horizontal flip; 0 by default since a flip mirrors printed text.
        normalize: apply ImageNet normalisation (otherwise the output lies in [0, 1]).
        perspective_p: probability of the perspective warp, when ``perspective`` > 0.
        color_jitter_p: probability of the colour jitter, when ``color_jitter`` or ``hue`` > 0.

    Raises:
        ValueError: a parameter is out of range.
    """

    def __init__(
        self,
        size: int,
        *,
        crop_scale: Sequence[float] = (0.3, 1.0),
        perspective: float = 0.3,
        rotation: float = 10.0,
        color_jitter: float = 0.4,
        hue: float = 0.0,
        grayscale_p: float = 0.2,
        blur_p: float = 0.5,
        occlusion_p: float = 0.5,
        hflip_p: float = 0.0,
        normalize: bool = True,
        perspective_p: float = 0.5,
        color_jitter_p: float = 0.8,
    ) -> None:
        super().__init__()
        _check_size(size)
        _check_probability(
            grayscale_p=grayscale_p, blur_p=blur_p, occlusion_p=occlusion_p, hflip_p=hflip_p,
            perspective=perspective, perspective_p=perspective_p, color_jitter_p=color_jitter_p,
        )
        _check_strengths(crop_scale, hue, color_jitter, rotation)
        self.size = size
        # align_corners=False everywhere: the pixel-centre convention of torchvision's resize and warps.
        steps: list[nn.Module] = [
            K.RandomResizedCrop((size, size), scale=(float(crop_scale[0]), float(crop_scale[1])), align_corners=False)
        ]
        if perspective > 0:
            steps.append(K.RandomPerspective(perspective, p=perspective_p, align_corners=False))
        if rotation > 0:
            steps.append(K.RandomRotation(float(rotation), p=1.0, align_corners=False))  # kornia's default p is 0.5
        if hflip_p > 0:
            steps.append(K.RandomHorizontalFlip(p=hflip_p))
        if color_jitter > 0 or hue > 0:
            steps.append(K.ColorJitter(color_jitter, color_jitter, color_jitter, hue, p=color_jitter_p))
        if grayscale_p > 0:
            steps.append(K.RandomGrayscale(p=grayscale_p))
        if blur_p > 0:
            kernel = blur_kernel_size(size)
            steps.append(K.RandomGaussianBlur((kernel, kernel), sigma=BLUR_SIGMA, p=blur_p))
        if occlusion_p > 0:
            steps.append(K.RandomErasing(scale=OCCLUSION_SCALE, value=OCCLUSION_VALUE / 255, p=occlusion_p))
        if normalize:
            steps.append(K.Normalize(mean=torch.tensor(IMAGENET_DEFAULT_MEAN), std=torch.tensor(IMAGENET_DEFAULT_STD)))
        self.steps = nn.Sequential(*steps)

    def forward(self, images: Tensor) -> Tensor:
        """Views of ``images``: a uint8 (B, 3, H, W) batch to float32 (B, 3, size, size), same device.

        Raises:
            TypeError: ``images`` is no uint8 tensor.
            ValueError: its shape is not (B, 3, H, W).
        """
        check_uint8_batch(images)
        # Scale to [0, 1] once in float32 (kornia works on floats); no autograd graph is ever needed.
        with torch.no_grad():
            return self.steps(images.to(torch.float32).div_(255))

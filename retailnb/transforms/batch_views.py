"""The catalogue-to-shelf views of :mod:`retailnb.transforms.views`, drawn for a whole batch at once.

:func:`~retailnb.transforms.views.retail_view_transform` augments one image at a time in DataLoader
workers; on a few CPU cores that costs more than the training step of a small backbone. This module
builds the same family of views with kornia's batched augmentations instead: one call turns a uint8
batch (B, 3, H, W), on whatever device it lives, into normalised float32 views (B, 3, size, size), with
random parameters drawn independently for every image (kornia's ``same_on_batch=False``), so two copies
of one image in a batch get different views. Call it twice on a batch for the two contrastive views.

Both take one :class:`retailnb.config.views.ViewSpec` (validated once there, defaults in ``params.yaml``) and share its constants (blur sigma, occlusion area and grey). Known differences from the
torchvision version: kornia draws one order of the four colour-jitter adjustments per batch rather than
per image, the crop is resized without antialiasing (it matters only when an image is larger than
``size`` and cropped small), and hue jitter (``hue``, 0 in ``params.yaml``) is costly here because kornia's RGB-HSV round trip
is the costliest step on CPU (about as much as all the other steps together).

Randomness comes from torch's global generator, so ``torch.manual_seed`` makes the views reproducible.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from retailnb.config.views import ViewSpec
from retailnb.transforms.views import (
    BLUR_SIGMA,
    OCCLUSION_SCALE,
    OCCLUSION_VALUE,
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


class BatchViews(nn.Module):
    """One random catalogue-to-shelf view of every image of a batch, with per-image parameters.

    In order: random resized crop, perspective warp, rotation, optional horizontal flip, colour jitter,
    random grayscale, Gaussian blur, occluding patch, then ImageNet normalisation. A step whose strength
    or probability is 0 is left out. Runs on the device of its input; holds no trainable parameters.

    Args:
        size: side of the square output, in pixels.
        views: the strengths (:class:`retailnb.config.views.ViewSpec`, shared with ``retail_view_transform``).
        normalize: apply ImageNet normalisation (otherwise the output lies in [0, 1]).

    Raises:
        ValueError: ``size`` < 1.
    """

    def __init__(self, size: int, views: ViewSpec, *, normalize: bool = True) -> None:
        super().__init__()
        _check_size(size)
        v = views
        self.size = size
        # align_corners=False everywhere: the pixel-centre convention of torchvision's resize and warps.
        steps: list[nn.Module] = [K.RandomResizedCrop((size, size), scale=v.crop_scale, align_corners=False)]
        if v.perspective > 0:
            steps.append(K.RandomPerspective(v.perspective, p=v.perspective_p, align_corners=False))
        if v.rotation > 0:
            steps.append(K.RandomRotation(v.rotation, p=1.0, align_corners=False))  # kornia's default p is 0.5
        if v.hflip_p > 0:
            steps.append(K.RandomHorizontalFlip(p=v.hflip_p))
        if v.color_jitter > 0 or v.hue > 0:
            steps.append(K.ColorJitter(v.color_jitter, v.color_jitter, v.color_jitter, v.hue, p=v.color_jitter_p))
        if v.grayscale_p > 0:
            steps.append(K.RandomGrayscale(p=v.grayscale_p))
        if v.blur_p > 0:
            kernel = blur_kernel_size(size)
            steps.append(K.RandomGaussianBlur((kernel, kernel), sigma=BLUR_SIGMA, p=v.blur_p))
        if v.occlusion_p > 0:
            steps.append(K.RandomErasing(scale=OCCLUSION_SCALE, value=OCCLUSION_VALUE / 255, p=v.occlusion_p))
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

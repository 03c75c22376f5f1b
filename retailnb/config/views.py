"""The one augmentation spec of the catalogue-to-shelf views, image by image or batch by batch.

:func:`retailnb.transforms.views.retail_view_transform` (torchvision, in DataLoader workers) and
:class:`retailnb.transforms.batch_views.BatchViews` (kornia, a whole batch on its device) both take a
:class:`ViewSpec`, so the two draw the same kinds of views with the same strengths, validated once here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from retailnb.config.base import NonNegativeFloat, Probability, Spec

CropScale = Annotated[float, Field(gt=0.0, le=1.0)]


class ViewSpec(Spec):
    """Strengths of the catalogue-to-shelf augmentations; a strength or probability of 0 drops the step.

    Attributes:
        crop_scale_min: smallest crop area, as a fraction of the image (RandomResizedCrop ``scale``).
        crop_scale_max: largest crop area.
        perspective: perspective distortion strength in [0, 1].
        perspective_p: probability of the perspective warp.
        rotation: largest rotation, in degrees either way.
        color_jitter: brightness, contrast and saturation jitter strength.
        hue: hue jitter in [0, 0.5].
        color_jitter_p: probability of the colour jitter.
        grayscale_p: probability of converting to grayscale.
        blur_p: probability of a Gaussian blur (kernel about a tenth of the side, sigma 0.1 to 2 px).
        occlusion_p: probability of a grey occluding rectangle (2 to 20 % of the area).
        hflip_p: probability of a horizontal flip (mirrors printed text, which shelves never show).
    """

    crop_scale_min: CropScale
    crop_scale_max: CropScale
    perspective: Probability
    perspective_p: Probability
    rotation: NonNegativeFloat
    color_jitter: NonNegativeFloat
    hue: Annotated[float, Field(ge=0.0, le=0.5)]
    color_jitter_p: Probability
    grayscale_p: Probability
    blur_p: Probability
    occlusion_p: Probability
    hflip_p: Probability

    @model_validator(mode="after")
    def _crop_range(self) -> ViewSpec:
        if self.crop_scale_min > self.crop_scale_max:
            raise ValueError(f"crop_scale_min ({self.crop_scale_min}) must not exceed crop_scale_max "
                             f"({self.crop_scale_max})")
        return self

    @property
    def crop_scale(self) -> tuple[float, float]:
        """The RandomResizedCrop ``scale`` range."""
        return (self.crop_scale_min, self.crop_scale_max)


class PretrainViewsSpec(ViewSpec):
    """The pretraining views, and where they are drawn.

    Attributes:
        on: ``batch`` (kornia, the whole batch on its device, in the training step) or ``worker``
            (torchvision, image by image in DataLoader workers).
    """

    on: Literal["batch", "worker"]

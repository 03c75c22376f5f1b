"""Image transforms: augmented views for contrastive pretraining, RandAugment noise, evaluation crops."""

from retailnb.transforms.views import (
    eval_transform,
    n_views,
    randaugment_transform,
    retail_view_transform,
)

__all__ = ["eval_transform", "n_views", "randaugment_transform", "retail_view_transform"]

"""The new-products stage's parameters: which target products are held out and enrolled from how many shots."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from retailnb.config.base import OneOrList, PositiveInt, Spec
from retailnb.config.compute import BackboneSpec
from retailnb.config.score_names import Score


class NewProductsSpec(Spec):
    """Enrolling held-out products into a bundle (``new_products``).

    Attributes:
        n_new: target products held out of the first probe and then enrolled.
        shots: images per new product to enrol from.
        seed: which products are held out and which images are drawn.
        rejection_score: the bundle's known-ness score for answering "unknown" (one of
            :data:`retailnb.config.score_names.SCORES`).
    """

    n_new: PositiveInt
    shots: Annotated[list[PositiveInt], OneOrList, Field(min_length=1)]
    seed: int
    rejection_score: Score


class NewProductsStageSpec(Spec):
    """Everything the new-products stage reads: ``backbone``, ``new_products``, and the known-product recall
    of ``evaluate.rejection`` (one value: the bundle's rejection threshold is chosen for the recall the
    evaluation measures rejection at)."""

    stage: ClassVar[str] = "new_products"
    """The entry of :data:`retailnb.config.stages.STAGES` that says where each field comes from."""

    backbone: BackboneSpec
    new_products: NewProductsSpec
    main_variant: str
    recall: Annotated[float, Field(gt=0.0, le=1.0)]

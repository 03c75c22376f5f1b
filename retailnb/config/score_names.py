"""The names of the known-ness scores (:mod:`retailnb.evaluation.rejection`), in plain Python.

They are the choices of a parameter (``new_products.rejection_score``) and of the command line, so they
live in the parameters' layer, apart from the scores themselves: what only needs their names imports
neither numpy's heavy neighbours nor torch. The command line offers them in ``--help`` and checks
``--rejection-score`` before it loads anything, ``retailnb info`` says which of them use a bundle's
negatives, and the stage spec types its field with :data:`Score`.
"""

from __future__ import annotations

from typing import Literal

Score = Literal["msp", "energy", "prototype", "knn", "mahalanobis", "relative_mahalanobis"]
SCORES: tuple[Score, ...] = ("msp", "energy", "prototype", "knn", "mahalanobis", "relative_mahalanobis")
"""The known-ness scores :func:`~retailnb.evaluation.rejection.known_scores` computes, in the order results
list them."""

PROBE_SCORES: tuple[Score, ...] = ("msp", "energy")
"""The scores that read the probe's logits; the others read features and a
:class:`~retailnb.evaluation.rejection.Reference`."""

NEGATIVE_SCORES: tuple[Score, ...] = ("prototype", "knn")
"""The scores that use the images a store does not sell (:attr:`~retailnb.evaluation.rejection.Reference.negatives`)
when it has some: an image's cosine similarity to its nearest negative is subtracted from its score."""


BackgroundScore = Literal["background"]
BACKGROUND_SCORES: tuple[BackgroundScore, ...] = ("background",)
"""The scores that need the images a store does not sell: ``background``, a probe over the enrolled products
and one more class of those images, whose known-ness is the probability it gives the enrolled products. The
evaluation measures it only where there are such images (:func:`~retailnb.evaluation.rejection.evaluate_rejection`
with negatives), so it is not one of :data:`SCORES`; a bundle with negatives offers it (:data:`BUNDLE_SCORES`)."""

BundleScore = Score | BackgroundScore
BUNDLE_SCORES: tuple[BundleScore, ...] = (*SCORES, *BACKGROUND_SCORES)
"""The scores a bundle can reject with (``retailnb fit --rejection-score``): :data:`SCORES` and, with negatives,
:data:`BACKGROUND_SCORES`."""

USES_NEGATIVES: tuple[BundleScore, ...] = (*NEGATIVE_SCORES, *BACKGROUND_SCORES)
"""The scores a bundle's negatives change: those that subtract the nearest negative's similarity, and those
that need negatives."""


def check_score(score: str) -> Score:
    """``score`` if it is one of :data:`SCORES`, else a ValueError naming the choices."""
    if score not in SCORES:
        raise ValueError(f"unknown rejection score {score!r}; expected one of {', '.join(SCORES)}")
    return score  # type: ignore[return-value]


def check_bundle_score(score: str) -> BundleScore:
    """``score`` if it is one of :data:`BUNDLE_SCORES`, else a ValueError naming the choices."""
    if score not in BUNDLE_SCORES:
        raise ValueError(f"unknown rejection score {score!r}; expected one of {', '.join(BUNDLE_SCORES)}")
    return score  # type: ignore[return-value]

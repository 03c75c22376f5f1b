"""The new-products experiment: teach a bundle new products from a few images each, and measure what it costs.

The notebook measures the promise behind ``retailnb add-products``: hold some products of a catalogue
out of the first fit (:func:`hold_out_classes`), enrol them later from 1, 5, 10 images each
(:func:`enrolment_curve`), and check that the new products are recognised while the old ones keep their
accuracy (:func:`score_old_new`), and how long each enrolment took. (The command line's enrolment of a
product folder is :func:`retailnb.bundle.embed.folder_features`, then
:func:`retailnb.bundle.fit.add_products`.)
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from retailnb.bundle.embed import embed
from retailnb.bundle.fit import add_products
from retailnb.bundle.model import Bundle
from retailnb.bundle.predict import predict_features
from retailnb.evaluation.fewshot import sample_shots
from retailnb.util.tables import aligned


def hold_out_classes(class_names: Sequence[str], n_new: int, seed: int) -> tuple[list[str], list[str]]:
    """Split a catalogue's products into those of the first fit and ``n_new`` held out to enrol later.

    Args:
        class_names: every product.
        n_new: products to hold out; at least 1, and at least two must remain for the first probe.
        seed: seed of the choice.

    Returns:
        (old products, held-out products), each sorted.

    Raises:
        ValueError: ``n_new`` is out of range.
    """
    names = sorted(set(class_names))
    if isinstance(n_new, bool) or not isinstance(n_new, int) or not 1 <= n_new <= len(names) - 2:
        raise ValueError(
            f"n_new must be an integer between 1 and {len(names) - 2} ({len(names)} products, two kept for "
            f"the first fit), got {n_new!r}"
        )
    picked = np.random.default_rng(seed).choice(len(names), size=n_new, replace=False)
    new = sorted(names[i] for i in picked)
    return [n for n in names if n not in new], new


def _mean_or_none(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if hits.size else None


def score_old_new(
    bundle: Bundle, features: np.ndarray, names: Sequence[str], new_classes: Collection[str]
) -> dict[str, Any]:
    """Top-1 accuracy of the bundle on test images of old products, of new products, and overall.

    A test image of a product the bundle does not know yet (held out, not enrolled) counts as wrong,
    which is what a shop would see: before enrolment, new products are never recognised.

    Args:
        bundle: the bundle to score.
        features: (N, D) test features.
        names: (N,) true product names.
        new_classes: products that count as new; every other name must be a product of the bundle.

    Returns:
        ``old_accuracy``, ``new_accuracy``, ``accuracy`` (None for an empty group), ``n_old``, ``n_new``.

    Raises:
        ValueError: a test name is neither a product of the bundle nor in ``new_classes``.
    """
    names_arr = np.asarray([str(n) for n in names])
    new = np.isin(names_arr, list(new_classes))
    unknown = sorted(set(names_arr[~new]) - set(bundle.class_names))
    if unknown:
        raise ValueError(f"test products {unknown[:5]} are neither in the bundle nor in new_classes")
    predicted = np.asarray(predict_features(bundle, features, k=1).names())[:, 0]
    hits = predicted == names_arr
    return {
        "old_accuracy": _mean_or_none(hits[~new]),
        "new_accuracy": _mean_or_none(hits[new]),
        "accuracy": _mean_or_none(hits),
        "n_old": int((~new).sum()),
        "n_new": int(new.sum()),
    }


def enrol_images(
    bundle: Bundle, images: np.ndarray, names: Sequence[str], *, source: Mapping[str, Any] | None = None
) -> tuple[Bundle, float]:
    """Add products from decoded images: embed them and refit the probe, timed.

    Args:
        bundle: the bundle to extend (unchanged).
        images: uint8 (N, S, S, 3) images at the bundle's image size.
        names: (N,) the product of each image; all new to the bundle.
        source: provenance of the images.

    Returns:
        The extended bundle and the seconds the enrolment took (embedding + refitting).
    """
    start = time.perf_counter()
    enrolled = add_products(bundle, embed(bundle, images), names, source=source)
    return enrolled, time.perf_counter() - start


def enrolment_curve(
    bundle: Bundle,
    images: np.ndarray,
    names: Sequence[str],
    test_features: np.ndarray,
    test_names: Sequence[str],
    *,
    shots: Sequence[int],
    seed: int,
) -> tuple[list[dict[str, Any]], Bundle]:
    """Enrol the new products from ``shots`` images each, for each shot count, and score each result.

    Each shot count starts again from ``bundle``; its images are drawn per product with
    :func:`retailnb.evaluation.fewshot.sample_shots` (nested: the 1-shot images are among the 5-shot
    ones). A product with fewer images than asked contributes all it has.

    Args:
        bundle: the bundle fitted on the old products.
        images: uint8 training images of the new products, at the bundle's image size.
        names: product name of each image.
        test_features: (M, D) test features of old and new products.
        test_names: product name of each test row.
        shots: images per new product, one enrolment each.
        seed: seed of the shot draws.

    Returns:
        The rows, first ``shots=0`` (the bundle before enrolment), then one per shot count:
        ``shots``, ``n_images``, ``seconds`` and the scores of :func:`score_old_new`; and the bundle of
        the last shot count.
    """
    new = sorted(set(names))
    names_arr = np.asarray(names)
    labels = np.searchsorted(new, names_arr)
    rows = [{"shots": 0, "n_images": 0, "seconds": 0.0, **score_old_new(bundle, test_features, test_names, new)}]
    enrolled = bundle
    for n in shots:
        picked = sample_shots(labels, int(n), seed)
        source = {"shots": int(n), "seed": seed}
        enrolled, seconds = enrol_images(bundle, images[picked], names_arr[picked].tolist(), source=source)
        scores = score_old_new(enrolled, test_features, test_names, new)
        rows.append({"shots": int(n), "n_images": len(picked), "seconds": seconds, **scores})
    return rows, enrolled


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def enrolment_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of :func:`enrolment_curve` as an aligned text table (shots 0 reads "before")."""
    columns = ("shots", "n_images", "seconds", "old_accuracy", "new_accuracy", "accuracy")
    body = [["before" if r["shots"] == 0 else str(r["shots"]), *(_cell(r[c]) for c in columns[1:])] for r in rows]
    return aligned([columns, *body], right=True)

"""Train/test overlap of a target: the same image in both splits inflates every accuracy it scores.

Real datasets are assembled by hand, and a photo copied into both splits happens (the Grocery Store
Dataset's split lists are checked, a user's image folder is not). Two images count as the same when
they decode to identical pixels at the backbone's input size (a renamed copy, or a lossless re-save), or
when their colour thumbnails (:data:`THUMBNAIL` pixels a side, less their mean, unit length) are closer than
``evaluate.overlap_distance`` in cosine distance: a JPEG re-save or a resized copy of one photo. Measured on
the Grocery Store Dataset at 64 px: a JPEG re-save at quality 70 of 200 training photos lies at most 0.0003
from its original, and the nearest training photo to any test photo at least 0.157 (the default, 0.01, sits
between). A target with overlap either stops, naming every duplicated file (``evaluate.on_overlap: raise``,
the default), or is evaluated without those training images, which the record counts (``drop``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from retailnb.data.cache import CHUNK_BYTES, DiskArray, take_rows
from retailnb.evaluation.quickprobe import ProbeData

MAX_NAMED = 10
"""Duplicated pairs an error message names; it counts the rest."""

THUMBNAIL = 16
"""Side, in pixels, of the colour thumbnails near-duplicates are compared at (``evaluate.overlap_distance``)."""


class OverlapError(ValueError):
    """The target's training and test splits share images."""


def _digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


def _chunks(images: np.ndarray | DiskArray) -> Iterator[np.ndarray]:
    """The images in order, in chunks of bounded bytes (the on-disk cache is never read whole into memory; an
    array in memory gives the same chunks)."""
    step = max(1, CHUNK_BYTES // max(1, int(np.prod(images.shape[1:])) * images.dtype.itemsize))
    for start in range(0, len(images), step):
        yield np.asarray(images[start : start + step])


def _digests(images: np.ndarray | DiskArray) -> list[bytes]:
    """The digest of every image's pixels, in order."""
    return [_digest(image) for chunk in _chunks(images) for image in chunk]


def thumbnails(images: np.ndarray | DiskArray) -> np.ndarray:
    """Every (height, width, 3) image as a :data:`THUMBNAIL`-pixel colour thumbnail (area averages), less its
    mean over pixels and channels, scaled to unit length (a flat image stays 0): the rows' dot product is
    their cosine similarity, which a brightness shift, a JPEG re-save or a resize barely moves."""
    rows = []
    for chunk in _chunks(images):
        small = F.adaptive_avg_pool2d(torch.from_numpy(chunk).permute(0, 3, 1, 2).float(), THUMBNAIL).flatten(1)
        small -= small.mean(dim=1, keepdim=True)
        rows.append(small / small.norm(dim=1, keepdim=True).clamp_min(1e-6))
    return torch.cat(rows).numpy() if rows else np.zeros((0, 3 * THUMBNAIL**2), dtype=np.float32)


def find_overlap(data: ProbeData, distance: float) -> list[tuple[int, int]]:
    """(training index, test index) of every training image that is also a test image.

    A training image is the first test image of identical pixels; failing that, with ``distance`` above 0,
    the nearest test image whose thumbnail (:func:`thumbnails`) lies closer than ``distance`` in cosine
    distance (``evaluate.overlap_distance``; 0 compares pixels only).
    """
    test_index: dict[bytes, int] = {}
    for j, digest in enumerate(_digests(data.x_test)):
        test_index.setdefault(digest, j)
    matches = [test_index.get(digest) for digest in _digests(data.x_train)]
    if distance > 0 and len(data.x_test) and None in matches:
        unmatched = [i for i, match in enumerate(matches) if match is None]
        test = thumbnails(data.x_test)
        train = thumbnails(take_rows(data.x_train, np.asarray(unmatched, dtype=np.int64)))
        for start in range(0, len(unmatched), 1024):  # a bounded block of the train x test distances
            near = 1.0 - train[start : start + 1024] @ test.T
            nearest = near.argmin(axis=1)
            for row, j in enumerate(nearest):
                if near[row, j] < distance:
                    matches[unmatched[start + row]] = int(j)
    return [(i, match) for i, match in enumerate(matches) if match is not None]


def describe_overlap(data: ProbeData, pairs: list[tuple[int, int]], target: str) -> str:
    """A message naming each duplicated file pair (the first :data:`MAX_NAMED`) and what to do."""
    named = [f"{data.train[i].path} = {data.test[j].path}" for i, j in pairs[:MAX_NAMED]]
    more = f"; and {len(pairs) - MAX_NAMED} more" if len(pairs) > MAX_NAMED else ""
    return (f"evaluate.targets.{target}: {len(pairs)} training image(s) are also test images (identical pixels, "
            f"or a copy closer than evaluate.overlap_distance): "
            f"{'; '.join(named)}{more}. Remove them from the dataset, or set evaluate.on_overlap: drop to "
            f"train without them")


def without_training_rows(data: ProbeData, drop: list[int]) -> ProbeData:
    """``data`` with the training images at indices ``drop`` removed (classes and test split unchanged)."""
    keep = np.setdiff1d(np.arange(len(data.y_train)), np.asarray(drop, dtype=np.int64))
    return replace(data, train=[data.train[i] for i in keep], x_train=take_rows(data.x_train, keep), y_train=data.y_train[keep])


def resolve_overlap(data: ProbeData, target: str, on_overlap: Literal["raise", "drop"],
                    distance: float) -> tuple[ProbeData, int]:
    """Apply ``evaluate.on_overlap`` to a target's decoded splits, copies found within ``distance``
    (``evaluate.overlap_distance``; :func:`find_overlap`).

    Returns:
        The data to evaluate and the number of training images dropped (0 without overlap).

    Raises:
        OverlapError: the splits overlap and ``on_overlap`` is ``raise``; the message names the files.
        ValueError: dropping the duplicates would leave a product without training images.
    """
    pairs = find_overlap(data, distance)
    if not pairs:
        return data, 0
    if on_overlap == "raise":
        raise OverlapError(describe_overlap(data, pairs, target))
    kept = without_training_rows(data, [i for i, _ in pairs])
    empty = sorted(set(range(len(data.classes))) - set(np.unique(kept.y_train).tolist()))
    if empty:
        names = ", ".join(data.classes[c] for c in empty)
        raise ValueError(f"evaluate.targets.{target}: without the images it shares with the test split, no "
                         f"training image is left for {names}")
    return kept, len(pairs)

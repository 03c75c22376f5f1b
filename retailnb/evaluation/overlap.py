"""Train/test overlap of a target: the same image in both splits inflates every accuracy it scores.

Real datasets are assembled by hand, and a photo copied into both splits happens (the Grocery Store
Dataset's split lists are checked, a user's image folder is not). Two images count as the same when
they decode to identical pixels at the backbone's input size, which also finds a re-saved or renamed
copy. A target with overlap either stops, naming every duplicated file (``evaluate.on_overlap: raise``,
the default), or is evaluated without those training images, which the record counts (``drop``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Literal

import numpy as np

from retailnb.data.cache import CHUNK_BYTES, DiskArray, take_rows
from retailnb.evaluation.quickprobe import ProbeData

MAX_NAMED = 10
"""Duplicated pairs an error message names; it counts the rest."""


class OverlapError(ValueError):
    """The target's training and test splits share images."""


def _digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


def _digests(images: np.ndarray | DiskArray) -> Iterator[bytes]:
    """The digest of every image in order, read in chunks of bounded bytes (the on-disk cache is never
    read whole into memory; an array in memory gives the same digests)."""
    step = max(1, CHUNK_BYTES // max(1, int(np.prod(images.shape[1:])) * images.dtype.itemsize))
    for start in range(0, len(images), step):
        for image in images[start : start + step]:
            yield _digest(image)


def find_overlap(data: ProbeData) -> list[tuple[int, int]]:
    """(training index, test index) of every training image whose pixels equal a test image's.

    A training image equal to several test images is paired with the first of them.
    """
    test_index: dict[bytes, int] = {}
    for j, digest in enumerate(_digests(data.x_test)):
        test_index.setdefault(digest, j)
    pairs = []
    for i, digest in enumerate(_digests(data.x_train)):
        match = test_index.get(digest)
        if match is not None:
            pairs.append((i, match))
    return pairs


def describe_overlap(data: ProbeData, pairs: list[tuple[int, int]], target: str) -> str:
    """A message naming each duplicated file pair (the first :data:`MAX_NAMED`) and what to do."""
    named = [f"{data.train[i].path} = {data.test[j].path}" for i, j in pairs[:MAX_NAMED]]
    more = f"; and {len(pairs) - MAX_NAMED} more" if len(pairs) > MAX_NAMED else ""
    return (f"evaluate.targets.{target}: {len(pairs)} training image(s) are also test images (identical pixels): "
            f"{'; '.join(named)}{more}. Remove them from the dataset, or set evaluate.on_overlap: drop to "
            f"train without them")


def without_training_rows(data: ProbeData, drop: list[int]) -> ProbeData:
    """``data`` with the training images at indices ``drop`` removed (classes and test split unchanged)."""
    keep = np.setdiff1d(np.arange(len(data.y_train)), np.asarray(drop, dtype=np.int64))
    return replace(data, train=[data.train[i] for i in keep], x_train=take_rows(data.x_train, keep), y_train=data.y_train[keep])


def resolve_overlap(data: ProbeData, target: str, on_overlap: Literal["raise", "drop"]) -> tuple[ProbeData, int]:
    """Apply ``evaluate.on_overlap`` to a target's decoded splits.

    Returns:
        The data to evaluate and the number of training images dropped (0 without overlap).

    Raises:
        OverlapError: the splits overlap and ``on_overlap`` is ``raise``; the message names the files.
        ValueError: dropping the duplicates would leave a product without training images.
    """
    pairs = find_overlap(data)
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

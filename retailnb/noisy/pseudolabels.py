"""Pseudolabels: which unlabelled images a noisy student learns from, and with which targets.

The teacher's class probabilities for the unlabelled pool become the student's training set in the
order of Xie et al. (2020), section 3:

1. **Threshold.** An image is kept when the teacher's confidence (its largest class probability) is at
   least ``threshold``; unsure predictions are mostly wrong and would teach the student the teacher's
   mistakes.
2. **Balance.** The kept images are usually skewed towards the classes the teacher finds easy, and a
   student trained on a skewed set inherits the skew. Classes above a cap keep only their most confident
   images; classes below ``min_per_class`` have their most confident images duplicated. A class that
   kept no image at all stays empty: duplicating nothing would mean inventing images.
3. **Targets.** Hard targets are one-hot vectors of the teacher's argmax; soft targets are the teacher's
   probabilities, optionally sharpened by a temperature below 1.

The paper fixes the cap by hand (130K images per ImageNet class). Here ``max_per_class=None`` derives
it from the data instead, as the *median* of the kept counts over the classes that kept any image:
the median, not the mean, because a single class that absorbs many images (the teacher's favourite
answer when it is unsure) would drag a mean upwards and leave the skew in place, while it moves the
median by at most one class.

Everything here is plain numpy on arrays, deterministic, with ties in confidence broken by the lower
pool index, so the same teacher probabilities always give the same training set.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retailnb.util.atomic import atomic_write
from retailnb.config.noisy import PseudolabelSpec

MISSING = -1
"""Label value meaning that the truth of an image is unknown."""

TABLE_COLUMNS: tuple[str, ...] = ("path", "label", "class_name", "confidence", "duplicate")
"""Columns of a pseudolabel table; ``true_class_name`` follows when the truth was given."""

_PROB_SUM_TOL = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; logits or unnormalised scores do not


@dataclass(frozen=True, eq=False)
class Selection:
    """The student's pseudolabelled training rows, one per (possibly duplicated) image.

    Rows are ordered by class, then by confidence (highest first, ties by lower pool index); a class's
    duplicates follow its original rows.

    Attributes:
        indices: (M,) indices into the unlabelled pool; an index repeats when the image was duplicated
            to balance its class.
        labels: (M,) the teacher's argmax class of each row.
        confidence: (M,) the teacher's largest class probability of each row (before any sharpening).
        targets: (M, C) training targets: one-hot rows for hard labels, sharpened teacher probabilities
            for soft ones.
    """

    indices: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    targets: np.ndarray

    @property
    def duplicate(self) -> np.ndarray:
        """(M,) True for every row whose image already appeared in an earlier row."""
        first = np.zeros(len(self.indices), dtype=bool)
        first[np.unique(self.indices, return_index=True)[1]] = True
        return ~first


def _is_int(value: Any) -> bool:
    """True for an integer that is not a bool (``True`` would otherwise pass as 1)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_probs(probs: np.ndarray) -> np.ndarray:
    """``probs`` as float64 (N, C) after checking that every row is a probability distribution."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] == 0:
        raise ValueError(f"probs must be a 2-D (N, C) array with C >= 1, got shape {probs.shape}")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0) or np.any(probs > 1):
        raise ValueError("probs must hold probabilities in [0, 1] (were logits passed?)")
    sums = probs.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > _PROB_SUM_TOL):
        worst = int(np.argmax(np.abs(sums - 1.0)))
        raise ValueError(f"probs rows must sum to 1; row {worst} sums to {sums[worst]:.6g}")
    return probs


def sharpen(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Raise probabilities to the power ``1 / temperature`` and renormalise each row.

    Temperature 1 returns the (renormalised) probabilities unchanged; a smaller temperature moves mass
    to the largest entries (towards one-hot), a larger one flattens the row. Computed in log space, so
    tiny temperatures do not underflow; zero probabilities stay zero.

    Args:
        probs: (..., C) non-negative scores, each row with a positive sum; rows are along the last axis.
        temperature: > 0.

    Returns:
        A float64 array of the same shape whose rows sum to 1.

    Raises:
        ValueError: ``temperature`` is not a finite number > 0, or ``probs`` has a negative or
            non-finite entry or an all-zero row.
    """
    if not (temperature > 0.0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    probs = np.asarray(probs, dtype=np.float64)
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError("probs must be finite and non-negative")
    if probs.size and np.any(probs.max(axis=-1) <= 0):
        raise ValueError("probs has an all-zero row, which cannot be normalised")
    with np.errstate(divide="ignore"):
        logits = np.log(probs) / temperature
    logits -= logits.max(axis=-1, keepdims=True)  # the row maximum becomes exp(0) = 1: no overflow
    out = np.exp(logits)
    return out / out.sum(axis=-1, keepdims=True)


def balance_cap(counts: np.ndarray, config: PseudolabelSpec) -> int | None:
    """Most images one class keeps after balancing; None when nothing is capped.

    The cap is ``config.max_per_class`` when given, otherwise the median of the non-zero ``counts``
    rounded up, and never below ``config.min_per_class`` (capping a class below the count that rare
    classes are filled up to would invert the balance).

    Args:
        counts: (C,) number of images each class kept after the threshold.
        config: the pseudolabel settings.
    """
    if not config.balance:
        return None
    if config.max_per_class is not None:
        return config.max_per_class
    nonzero = np.asarray(counts)[np.asarray(counts) > 0]
    if nonzero.size == 0:
        return None
    return max(int(math.ceil(float(np.median(nonzero)))), config.min_per_class)


def select_pseudolabels(probs: np.ndarray, config: PseudolabelSpec) -> Selection:
    """Choose the pseudolabelled training rows from the teacher's probabilities on the unlabelled pool.

    Threshold first, then (when ``config.balance``) cap each class to its most confident images and
    duplicate the most confident images of classes below ``config.min_per_class``, cycling through
    them from the most confident. See the module docstring for why.

    Args:
        probs: (N, C) teacher probabilities, one row per unlabelled image, each row summing to 1.
        config: the pseudolabel settings.

    Returns:
        The selection; empty (with ``targets`` of shape (0, C)) when no image passes the threshold.

    Raises:
        ValueError: ``probs`` is not an (N, C) array of probability rows.
    """
    probs = _check_probs(probs)
    n_classes = probs.shape[1]
    labels = probs.argmax(axis=1)  # ties go to the lower class index
    confidence = probs.max(axis=1)
    kept = np.flatnonzero(confidence >= config.threshold)
    by_class = []
    for c in range(n_classes):
        members = kept[labels[kept] == c]
        by_class.append(members[np.lexsort((members, -confidence[members]))])  # confident first, then index
    cap = balance_cap(np.array([len(m) for m in by_class]), config)
    rows = []
    for members in by_class:
        if cap is not None:
            members = members[:cap]
        if config.balance and 0 < len(members) < config.min_per_class:
            members = np.resize(members, config.min_per_class)  # repeats cyclically, most confident first
        rows.append(members)
    indices = np.concatenate(rows).astype(np.int64)  # one entry per class, C >= 1
    if config.soft:
        targets = sharpen(probs[indices], config.temperature)
    else:
        targets = np.eye(n_classes)[labels[indices]]
    return Selection(
        indices=indices,
        labels=labels[indices].astype(np.int64),
        confidence=confidence[indices],
        targets=targets,
    )


def pseudolabel_quality(
    selected_labels: np.ndarray,
    true_labels_of_selected: np.ndarray,
    n_pool: int,
    indices: np.ndarray | None = None,
) -> dict[str, float]:
    """How right the pseudolabels are, and how much of the pool they use.

    Duplicated rows are one image: pass their pool ``indices`` so that each image counts once (without
    them every row is taken to be a different image). :func:`selection_quality` does this for a
    :class:`Selection`.

    Args:
        selected_labels: (M,) pseudolabels of the selected rows.
        true_labels_of_selected: (M,) true labels of the same rows, -1 where the truth is unknown.
        n_pool: number of images in the unlabelled pool.
        indices: (M,) pool indices of the rows, possibly repeated; None when every row is distinct.

    Returns:
        ``precision``: fraction of the distinct selected images with known truth whose pseudolabel
        equals it (NaN when no selected image has known truth); ``coverage``: distinct selected images
        over ``n_pool`` (NaN for an empty pool); ``n_selected``: distinct selected images;
        ``n_rows``: selected rows, duplicates included; ``n_with_truth``: distinct selected images
        with known truth.

    Raises:
        ValueError: the arrays differ in length, a true label is below -1, an index is outside the
            pool, one image carries two different labels, or ``n_pool`` is smaller than the selection.
    """
    labels = np.asarray(selected_labels).reshape(-1)
    truth = np.asarray(true_labels_of_selected).reshape(-1)
    n_rows = len(labels)
    if truth.shape != labels.shape:
        raise ValueError(f"true_labels_of_selected has {len(truth)} rows but selected_labels has {n_rows}")
    if np.any(truth < MISSING):
        raise ValueError(f"true_labels_of_selected must be class ids or {MISSING} (unknown), got {truth.min()}")
    if not _is_int(n_pool) or n_pool < 0:
        raise ValueError(f"n_pool must be an integer >= 0, got {n_pool!r}")
    if indices is not None:
        idx = np.asarray(indices).reshape(-1)
        if idx.shape != labels.shape:
            raise ValueError(f"indices has {len(idx)} rows but selected_labels has {n_rows}")
        if idx.size and (idx.min() < 0 or idx.max() >= n_pool):
            raise ValueError(f"indices must lie in [0, n_pool={n_pool})")
        _, first, inverse = np.unique(idx, return_index=True, return_inverse=True)
        if np.any(labels[first][inverse] != labels) or np.any(truth[first][inverse] != truth):
            raise ValueError("a duplicated image carries different labels in different rows")
        labels, truth = labels[first], truth[first]
    n_selected = len(labels)
    if n_selected > n_pool:
        raise ValueError(f"n_pool ({n_pool}) is smaller than the {n_selected} distinct selected images")
    known = truth != MISSING
    n_known = int(known.sum())
    precision = float(np.mean(labels[known] == truth[known])) if n_known else float("nan")
    coverage = n_selected / n_pool if n_pool else float("nan")
    return {
        "precision": precision,
        "coverage": coverage,
        "n_selected": n_selected,
        "n_rows": n_rows,
        "n_with_truth": n_known,
    }


def selection_quality(selection: Selection, pool_true_labels: np.ndarray) -> dict[str, float]:
    """:func:`pseudolabel_quality` of ``selection``, given the true label of every pool image (-1 unknown)."""
    truth = np.asarray(pool_true_labels).reshape(-1)
    return pseudolabel_quality(
        selection.labels, truth[selection.indices], len(truth), indices=selection.indices
    )


def threshold_curve(
    probs: np.ndarray, true_labels: np.ndarray, thresholds: Sequence[float]
) -> list[dict[str, float]]:
    """Pseudolabel precision and coverage at each confidence threshold, without balancing.

    The data of the plot that chooses the threshold: raising it trades coverage (images the student
    learns from) for precision (how many of their labels are right).

    Args:
        probs: (N, C) teacher probabilities on the unlabelled pool.
        true_labels: (N,) true labels of the pool, -1 where unknown.
        thresholds: thresholds in [0, 1], reported in the order given.

    Returns:
        One row per threshold: ``threshold``, then the keys of :func:`pseudolabel_quality`.

    Raises:
        ValueError: the shapes do not match, or a threshold is outside [0, 1].
    """
    probs = _check_probs(probs)
    truth = np.asarray(true_labels).reshape(-1)
    if len(truth) != len(probs):
        raise ValueError(f"true_labels has {len(truth)} rows but probs has {len(probs)}")
    labels, confidence = probs.argmax(axis=1), probs.max(axis=1)
    rows = []
    for t in thresholds:
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"thresholds must lie in [0, 1], got {t!r}")
        keep = confidence >= t
        rows.append({"threshold": float(t), **pseudolabel_quality(labels[keep], truth[keep], len(probs))})
    return rows


def pseudolabel_table(
    paths: Sequence[str],
    selection: Selection,
    class_names: Sequence[str],
    true_class_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per selected training row, for a person to inspect.

    Args:
        paths: (N,) image path of every pool image, indexed by ``selection.indices``.
        selection: the pseudolabels.
        class_names: (C,) name of every class the teacher predicts.
        true_class_names: (N,) true class name of every pool image ('' when unknown); None leaves the
            column out.

    Returns:
        Rows with keys :data:`TABLE_COLUMNS` (``duplicate`` is True for a repeat of an earlier row's
        image), then ``true_class_name`` when given.

    Raises:
        ValueError: ``class_names`` does not have one name per class, ``true_class_names`` does not
            match ``paths`` in length, or an index is outside ``paths``.
    """
    if len(class_names) != selection.targets.shape[1]:
        n_classes = selection.targets.shape[1]
        raise ValueError(f"class_names has {len(class_names)} names but the teacher has {n_classes} classes")
    if true_class_names is not None and len(true_class_names) != len(paths):
        raise ValueError(f"true_class_names has {len(true_class_names)} entries but paths has {len(paths)}")
    if len(selection.indices) and selection.indices.max() >= len(paths):
        raise ValueError(f"selection index {selection.indices.max()} is outside the {len(paths)} paths")
    rows = []
    for i, label, conf, dup in zip(selection.indices, selection.labels, selection.confidence, selection.duplicate):
        row: dict[str, Any] = {
            "path": str(paths[i]),
            "label": int(label),
            "class_name": str(class_names[label]),
            "confidence": float(conf),
            "duplicate": bool(dup),
        }
        if true_class_names is not None:
            row["true_class_name"] = str(true_class_names[i])
        rows.append(row)
    return rows


def write_pseudolabel_table(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write ``rows`` of :func:`pseudolabel_table` as CSV at ``path`` atomically (temporary file, then rename).

    A reader (or a DVC stage interrupted half-way) sees either the old file or the whole new one.

    Raises:
        ValueError: the rows do not all have the table's columns (nothing is written then).
    """
    columns = list(TABLE_COLUMNS)
    if rows and "true_class_name" in rows[0]:
        columns.append("true_class_name")
    for n, row in enumerate(rows):
        if list(row) != columns:
            raise ValueError(f"row {n} has columns {list(row)}, expected {columns}")
    with atomic_write(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def read_pseudolabel_table(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a table written by :func:`write_pseudolabel_table`, with its values typed again.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a column is missing or a value does not parse; the message names file and line.
    """
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(TABLE_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        rows = []
        for raw in reader:
            try:
                if raw["duplicate"] not in ("True", "False"):
                    raise ValueError(f"duplicate must be True or False, got {raw['duplicate']!r}")
                row: dict[str, Any] = {
                    "path": raw["path"],
                    "label": int(raw["label"]),
                    "class_name": raw["class_name"],
                    "confidence": float(raw["confidence"]),
                    "duplicate": raw["duplicate"] == "True",
                }
            except ValueError as err:
                raise ValueError(f"{path}, line {reader.line_num}: {err}") from None
            if "true_class_name" in raw:
                row["true_class_name"] = raw["true_class_name"]
            rows.append(row)
    return rows

"""Frozen features of a backbone, cached as one ``.npz`` file per split.

Every probe in :mod:`retailnb.evaluation` works on features, not images: the backbone runs once over
each split (:func:`retailnb.models.inference.extract_features`), the arrays are written next to the
stage's other outputs (:func:`save_features`), and later stages and notebooks reload them
(:func:`load_features`) instead of running the network again.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from retailnb.util.atomic import atomic_write

_FILE_KEYS = ("features", "labels", "class_names", "meta_json")

PathLike = str | os.PathLike[str]


class FeatureSet(NamedTuple):
    """Cached features of one split, as :func:`load_features` returns them.

    Attributes:
        features: float32 array of shape (N, D), one row per image.
        labels: int64 array of shape (N,), indices into ``class_names`` (-1 for an unlabelled image).
        class_names: the name of each class index.
        meta: whatever keyword arguments were given to :func:`save_features` (JSON values).
    """

    features: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    meta: dict[str, Any]


def _json_default(value: Any) -> Any:
    """Make numpy scalars and arrays and paths JSON-serialisable for :func:`save_features`."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _check_feature_set(features: np.ndarray, labels: np.ndarray, class_names: list[str]) -> None:
    """Reject arrays that do not describe one labelled feature row per image."""
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {features.shape}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape ({features.shape[0]},) to match features, got {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.size and (labels.min() < -1 or labels.max() >= len(class_names)):
        raise ValueError(
            f"labels must lie in [-1, {len(class_names)}) for {len(class_names)} class names, "
            f"got values from {labels.min()} to {labels.max()}"
        )


def save_features(
    path: PathLike,
    features: np.ndarray,
    labels: np.ndarray | Sequence[int],
    class_names: list[str] | tuple[str, ...],
    **meta: Any,
) -> Path:
    """Write one split's features, labels and class names to a single ``.npz`` file, atomically.

    The file is written to a temporary name in the same folder and then renamed over ``path``, so a
    reader (or DVC) never sees half a file, and an interrupted run leaves any previous file intact.
    The arrays are stored uncompressed: float features barely compress, and loading stays fast.

    Args:
        path: the file to write; its folder is created if needed.
        features: (N, D) features; stored as float32.
        labels: (N,) integer class indices into ``class_names``; -1 marks an unlabelled image.
        class_names: the name of each class index.
        **meta: anything else worth keeping with the features (model name, checkpoint, image size,
            split...); JSON values, numpy scalars, arrays and paths.

    Returns:
        ``path``.

    Raises:
        ValueError: the shapes do not match, or a label is outside [-1, len(class_names)).
        TypeError: a ``meta`` value cannot be written as JSON (nothing is written then).
    """
    path = Path(path)
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    names = [str(c) for c in class_names]
    _check_feature_set(features, labels, names)
    meta_json = json.dumps(meta, default=_json_default, sort_keys=True)  # fails before any file is touched
    arrays = {
        "features": features,
        "labels": labels.astype(np.int64),
        "class_names": np.asarray(names, dtype=np.str_),
        "meta_json": np.asarray(meta_json),
    }
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle; to a file object: numpy adds no .npz suffix to the temporary name
    return path


def load_features(path: PathLike) -> FeatureSet:
    """Read a file written by :func:`save_features`.

    Args:
        path: the ``.npz`` file.

    Returns:
        The features, labels, class names and metadata, as a :class:`FeatureSet`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a feature file written by :func:`save_features`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: feature file not found")
    arrays = _read_npz(path)
    missing = [k for k in _FILE_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path}: not a retailnb feature file (missing {', '.join(missing)})")
    return FeatureSet(
        features=arrays["features"],
        labels=arrays["labels"],
        class_names=[str(c) for c in arrays["class_names"]],
        meta=json.loads(str(arrays["meta_json"])),
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path``, turning any read failure into one ValueError."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with data:
            return {k: data[k] for k in data.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: cannot read feature file ({err})") from None

"""Quick probes of a backbone: how well its frozen features separate products of a train/test pair.

The pretraining monitor uses it right after pretraining, before any downstream stage, to see whether
the backbone learned anything (held-out source products, against random weights); the noisy student
uses it to score each round on the target catalogue. The full few-shot evaluation is in ``fewshot``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, TypeVar, overload

import numpy as np
from torch import nn

from retailnb.data.cache import DiskArray, cached_images
from retailnb.data.images import decode_images
from retailnb.data.manifest import Manifest, ManifestRow, encode_labels
from retailnb.evaluation.probe import knn_accuracy, probe_accuracy
from retailnb.models.inference import extract_features

Images = TypeVar("Images", np.ndarray, DiskArray)
"""How a :class:`ProbeData` holds its images: a (N, S, S, 3) uint8 array in memory, or the same array in
the on-disk cache (:class:`retailnb.data.cache.DiskArray`, read when indexed)."""


@dataclass(frozen=True)
class ProbeData(Generic[Images]):
    """Decoded images of a train/test role pair with their labels (both index ``classes``).

    ``x_train`` and ``x_test`` are (N, S, S, 3) uint8 images: numpy arrays, or with ``storage="disk"``
    (:func:`load_probe_data`) :class:`~retailnb.data.cache.DiskArray` views of the on-disk cache, which
    index like those arrays (an image, a slice, rows or a mask give arrays) but read only what is asked for.
    """

    train: list[ManifestRow]
    test: list[ManifestRow]
    x_train: Images
    x_test: Images
    y_train: np.ndarray
    y_test: np.ndarray
    classes: list[str]


@overload
def load_probe_data(manifest: Manifest, image_size: int, train_role: str = ..., test_role: str = ..., *,
                    storage: Literal["memory"] = ...) -> ProbeData[np.ndarray]: ...
@overload
def load_probe_data(manifest: Manifest, image_size: int, train_role: str = ..., test_role: str = ..., *,
                    storage: Literal["disk"]) -> ProbeData[DiskArray]: ...
@overload
def load_probe_data(manifest: Manifest, image_size: int, train_role: str = ..., test_role: str = ..., *,
                    storage: Literal["memory", "disk"]) -> ProbeData[np.ndarray] | ProbeData[DiskArray]: ...


def load_probe_data(
    manifest: Manifest,
    image_size: int,
    train_role: str = "monitor_train",
    test_role: str = "monitor_test",
    *,
    storage: Literal["memory", "disk"] = "memory",
) -> ProbeData[np.ndarray] | ProbeData[DiskArray]:
    """Decode the images of a train and a test role once, for every backbone to score.

    The pretraining monitor uses ``monitor_train``/``monitor_test`` (held-out source products); the
    downstream probe uses ``probe_train``/``probe_test`` (the target catalogue).

    Args:
        storage: ``compute.images``: ``memory`` decodes both roles into numpy arrays; ``disk`` decodes
            them once into the on-disk cache (:func:`retailnb.data.cache.cached_images`, in
            ``.cache/images`` of the working folder) and reads them a batch at a time, so that memory
            does not grow with the number of images. Both give the same pixels in the same order.
    """
    train, test = manifest.select(train_role), manifest.select(test_role)
    if not train or not test:
        raise ValueError(f"{manifest.root / 'manifest.csv'}: needs rows with roles {train_role!r} and {test_role!r}")
    y_train, classes = encode_labels(train)
    y_test, _ = encode_labels(test, classes)
    if storage == "disk":
        return ProbeData(
            train=train, test=test,
            x_train=DiskArray(cached_images(manifest.paths(train), image_size)),
            x_test=DiskArray(cached_images(manifest.paths(test), image_size)),
            y_train=np.asarray(y_train), y_test=np.asarray(y_test), classes=classes,
        )
    if storage != "memory":
        raise ValueError(f"storage must be 'memory' or 'disk', got {storage!r}")
    return ProbeData(
        train=train,
        test=test,
        x_train=decode_images(manifest.paths(train), image_size),
        x_test=decode_images(manifest.paths(test), image_size),
        y_train=np.asarray(y_train),
        y_test=np.asarray(y_test),
        classes=classes,
    )


def probe_scores(backbone: nn.Module, data: ProbeData, *, knn_k: int = 1) -> dict[str, float]:
    """kNN (cosine) and logistic-regression accuracy of ``backbone``'s frozen features on the monitor."""
    f_train = extract_features(backbone, data.x_train)
    f_test = extract_features(backbone, data.x_test)
    probe = probe_accuracy(f_train, data.y_train, f_test, data.y_test)
    return {
        "knn_accuracy": knn_accuracy(f_train, data.y_train, f_test, data.y_test, k=knn_k),
        "probe_accuracy": float(probe["accuracy"]),
        "probe_c": float(probe["c"]),
    }

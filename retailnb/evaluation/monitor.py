"""The pretraining monitor: how well frozen features separate held-out source products.

It answers, right after pretraining and before any downstream stage, whether the backbone learned
anything: kNN and logistic-regression accuracy on the ``monitor_train``/``monitor_test`` roles, for the
trained backbone and for the same architecture with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from retailnb.data.images import decode_images
from retailnb.data.manifest import Manifest, Record, encode_labels
from retailnb.evaluation.features import extract_features
from retailnb.evaluation.probe import knn_accuracy, probe_accuracy


@dataclass(frozen=True)
class MonitorData:
    """Decoded monitor images with their labels (train labels index ``classes``)."""

    train: list[Record]
    test: list[Record]
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    classes: list[str]


def load_monitor_data(manifest: Manifest, image_size: int) -> MonitorData:
    """Decode the ``monitor_train`` and ``monitor_test`` images once, for every backbone to score."""
    train, test = manifest.select("monitor_train"), manifest.select("monitor_test")
    if not train or not test:
        raise ValueError(f"{manifest.root / 'manifest.csv'}: the monitor needs 'monitor_train' and 'monitor_test' rows")
    y_train, classes = encode_labels(train)
    y_test, _ = encode_labels(test, classes)
    return MonitorData(
        train=train,
        test=test,
        x_train=decode_images(manifest.paths(train), image_size),
        x_test=decode_images(manifest.paths(test), image_size),
        y_train=np.asarray(y_train),
        y_test=np.asarray(y_test),
        classes=classes,
    )


def monitor_scores(backbone: nn.Module, data: MonitorData, *, knn_k: int = 1) -> dict[str, float]:
    """kNN (cosine) and logistic-regression accuracy of ``backbone``'s frozen features on the monitor."""
    f_train = extract_features(backbone, data.x_train)
    f_test = extract_features(backbone, data.x_test)
    probe = probe_accuracy(f_train, data.y_train, f_test, data.y_test)
    return {
        "knn_accuracy": knn_accuracy(f_train, data.y_train, f_test, data.y_test, k=knn_k),
        "probe_accuracy": float(probe["accuracy"]),
        "probe_c": float(probe["c"]),
    }

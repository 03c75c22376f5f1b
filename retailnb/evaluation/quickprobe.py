"""Quick probes of a backbone: how well its frozen features separate products of a train/test pair.

The pretraining monitor uses it right after pretraining, before any downstream stage, to see whether
the backbone learned anything (held-out source products, against random weights); the noisy student
uses it to score each round on the target catalogue. The full few-shot evaluation is in ``fewshot``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from retailnb.data.images import decode_images
from retailnb.data.manifest import Manifest, Record, encode_labels
from retailnb.evaluation.probe import knn_accuracy, probe_accuracy
from retailnb.models.inference import extract_features


@dataclass(frozen=True)
class ProbeData:
    """Decoded images of a train/test role pair with their labels (both index ``classes``)."""

    train: list[Record]
    test: list[Record]
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    classes: list[str]


def load_probe_data(
    manifest: Manifest, image_size: int, train_role: str = "monitor_train", test_role: str = "monitor_test"
) -> ProbeData:
    """Decode the images of a train and a test role once, for every backbone to score.

    The pretraining monitor uses ``monitor_train``/``monitor_test`` (held-out source products); the
    downstream probe uses ``probe_train``/``probe_test`` (the target catalogue).
    """
    train, test = manifest.select(train_role), manifest.select(test_role)
    if not train or not test:
        raise ValueError(f"{manifest.root / 'manifest.csv'}: needs rows with roles {train_role!r} and {test_role!r}")
    y_train, classes = encode_labels(train)
    y_test, _ = encode_labels(test, classes)
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

"""Few-shot evaluation: probe accuracy with 1, 5, 10, ... training images per class.

New products arrive with only a handful of labelled images, so the probes of :mod:`.probe` are fitted
on ``shots`` images per class drawn from the training split, several seeded draws each, and scored on
the whole test split. :func:`summarize_fewshot` reduces the draws to a mean and a spread per shot count.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from retailnb.evaluation.probe import knn_accuracy, probe_accuracy

Shots = int | str | None
"""A number of training images per class, or ``None`` / ``"all"`` for every training image."""


def _check_shots(shots: Shots) -> int | None:
    """``shots`` as a positive int, or None for every image."""
    if shots is None or shots == "all":
        return None
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise ValueError(f"shots must be a positive number of images per class, None or 'all', got {shots!r}")
    return int(shots)


def shots_label(shots: Shots) -> int | str:
    """How a shot count is written in result rows: the number, or ``"all"``."""
    n = _check_shots(shots)
    return "all" if n is None else n


def sample_shots(labels: np.ndarray, shots: Shots, seed: int) -> np.ndarray:
    """Indices of ``shots`` images per class, drawn without replacement.

    ``labels`` must be the labels of the TRAINING split alone: the indices are positions in it, so no
    test image can be drawn. A class with fewer than ``shots`` images contributes all it has (the
    few-shot curve then flattens for it rather than the run failing; compare ``n_train`` with
    ``shots * n_classes`` to see it). Each class's images are shuffled once by a generator seeded with
    ``seed``, and the first ``shots`` are taken, so for one seed the 1-shot sample is part of the 5-shot
    sample, which is part of the 10-shot one: curves over shot counts differ only by the images added.

    Args:
        labels: (N,) training labels.
        shots: images per class; ``None`` or ``"all"`` for every image.
        seed: seed of the draw; the same seed gives the same indices.

    Returns:
        Sorted int64 indices into ``labels``.

    Raises:
        ValueError: ``labels`` is not one-dimensional, or ``shots`` is not a positive int, None or "all".
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    n = _check_shots(shots)
    if n is None:
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:n] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked)).astype(np.int64) if picked else np.empty(0, dtype=np.int64)


def draw_seed(seed: int, draw: int) -> int:
    """Seed of draw number ``draw``: independent streams for every (seed, draw) pair, not ``seed + draw``."""
    return int(np.random.SeedSequence([seed, draw]).generate_state(1)[0])


def _row_set(x: np.ndarray) -> set[bytes]:
    """The rows of ``x`` as bytes, to find identical rows (the same image) in another array."""
    return {row.tobytes() for row in np.ascontiguousarray(x)}


def _shared_rows(x: np.ndarray, rows: set[bytes]) -> int:
    """How many rows of ``x`` are byte-identical to one of ``rows`` (same dtype assumed)."""
    return sum(row.tobytes() in rows for row in np.ascontiguousarray(x))


def fewshot_eval(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    shots: Sequence[Shots] = (1, 5, 10, None),
    draws: int = 5,
    seed: int = 0,
    knn_k: int = 1,
    probe_kw: Mapping[str, Any] | None = None,
    reuse_c: bool = True,
) -> list[dict[str, Any]]:
    """Logistic-probe and k-NN accuracy for each shot count, over several seeded draws.

    Draw ``d`` uses the same seed for every shot count (see :func:`draw_seed`), so within a draw the
    samples are nested. ``None`` / ``"all"`` has a single draw: every draw would be the same images.
    The probe is always scored on the whole test split. Before each fit, the sample is checked to hold
    no test image: no sampled training row may be identical to a test row, which would mean the
    splits overlap (the same image in both) and the accuracy is inflated.

    With ``reuse_c``, the probe's C is chosen by cross-validation on the first draw's training images
    of each shot count and reused by its other draws, which then fit once instead of once per fold and
    candidate (about 13 times fewer fits). C still never sees a test image, and the spread over draws
    then measures how much the result depends on which images were drawn, at a fixed regularisation.

    Args:
        x_train: (N, D) training features.
        y_train: (N,) training labels.
        x_test: (M, D) test features.
        y_test: (M,) test labels.
        shots: shot counts to evaluate, in the order the rows should come.
        draws: seeded draws per shot count.
        seed: base seed of the draws (and of the probe's cross-validation folds).
        knn_k: neighbours of the k-NN probe, capped at the sample size (the row records the k used).
        probe_kw: extra arguments of :func:`retailnb.evaluation.probe.fit_logistic_probe` (``cs``,
            ``cv``, ``max_iter``, ``tol``, ``fallback_c``, ``threads``).
        reuse_c: choose C on the first draw of each shot count only (see above); False cross-validates
            every draw.

    Returns:
        One row per (shots, draw): ``shots`` (int or ``"all"``), ``draw``, ``n_train``, ``probe_accuracy``,
        ``probe_balanced_accuracy``, ``probe_top5`` (with more than five classes), ``c``, ``cv_folds`` (0
        where C was not cross-validated on this draw),
        ``fit_seconds``, ``knn_accuracy`` and ``knn_k``.

    Raises:
        ValueError: ``draws`` or ``knn_k`` is below 1, a shot count is invalid, or the sample holds an
            image that is also in the test split.
    """
    x_train, y_train, x_test, y_test = map(np.asarray, (x_train, y_train, x_test, y_test))
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    if knn_k < 1:
        raise ValueError(f"knn_k must be at least 1, got {knn_k}")
    labels = [shots_label(s) for s in shots]  # reject a bad shot count before any fit
    test_rows = _row_set(x_test.astype(x_train.dtype, copy=False))
    kw = dict(probe_kw or {})
    rows: list[dict[str, Any]] = []
    for s, label in zip(shots, labels):
        chosen: float | None = None
        for draw in range(1 if label == "all" else draws):
            draw_kw = kw if chosen is None else {**kw, "cs": (chosen,)}
            row = _eval_draw(x_train, y_train, x_test, y_test, test_rows, s, draw, seed, knn_k, draw_kw)
            if reuse_c and row["cv_folds"] >= 2:
                chosen = row["c"]
            rows.append(row)
    return rows


def _eval_draw(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    test_rows: set[bytes],
    shots: Shots,
    draw: int,
    seed: int,
    knn_k: int,
    probe_kw: dict[str, Any],
) -> dict[str, Any]:
    """One row of :func:`fewshot_eval`: sample, check for leakage, fit and score both probes."""
    s = draw_seed(seed, draw)
    return _eval_sample(x_train, y_train, x_test, y_test, test_rows, sample_shots(y_train, shots, s),
                        shots_label(shots), draw, s, knn_k, probe_kw)


CATALOGUE = "catalogue"
"""The ``shots`` label of the catalogue-only row: the probe trained on the products' catalogue packshots."""


def catalogue_eval(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    catalogue: np.ndarray,
    *,
    seed: int = 0,
    knn_k: int = 1,
    probe_kw: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The probes trained on the catalogue packshots alone, scored on the whole (shelf) test split.

    What a store has on day one for a new product is its catalogue images (one or two clean packshots),
    not shelf photos: this row measures enrolment from those alone. One draw (the packshots are all
    there is). A product without a packshot is still in the test split, so it counts against accuracy.

    Args:
        x_train, y_train, x_test, y_test: as :func:`fewshot_eval`.
        catalogue: (N,) bool, which training images are catalogue packshots (manifest domain
            ``catalogue``).
        seed, knn_k, probe_kw: as :func:`fewshot_eval`.

    Returns:
        A row of :func:`fewshot_eval`'s form with ``shots`` = :data:`CATALOGUE`.

    Raises:
        ValueError: the mask does not fit the training split, it selects fewer than two products, or a
            packshot is identical to a test image.
    """
    x_train, y_train, x_test, y_test = map(np.asarray, (x_train, y_train, x_test, y_test))
    mask = np.asarray(catalogue, dtype=bool)
    if mask.shape != y_train.shape:
        raise ValueError(f"catalogue mask has shape {mask.shape}, the training labels {y_train.shape}")
    idx = np.flatnonzero(mask).astype(np.int64)
    if len(np.unique(y_train[idx])) < 2:
        raise ValueError("a catalogue-only probe needs packshots of at least two products")
    test_rows = _row_set(x_test.astype(x_train.dtype, copy=False))
    return _eval_sample(x_train, y_train, x_test, y_test, test_rows, idx, CATALOGUE, 0, seed, knn_k,
                        dict(probe_kw or {}))


def _eval_sample(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    test_rows: set[bytes],
    idx: np.ndarray,
    label: int | str,
    draw: int,
    s: int,
    knn_k: int,
    probe_kw: dict[str, Any],
) -> dict[str, Any]:
    """Fit and score both probes on the training rows ``idx``, after checking none is a test image."""
    assert idx.size and idx.min() >= 0 and idx.max() < len(x_train) and len(np.unique(idx)) == idx.size
    leaked = _shared_rows(x_train[idx], test_rows)
    if leaked:
        raise ValueError(
            f"{leaked} sampled training images have features identical to a test image: "
            "the train and test splits overlap"
        )
    xs, ys = x_train[idx], y_train[idx]
    k = min(knn_k, len(idx))
    with warnings.catch_warnings():
        # scikit-learn suspects a regression target when most labels are unique: a 1-shot sample is meant so
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        probe = probe_accuracy(xs, ys, x_test, y_test, **{"seed": s, **probe_kw})
        knn = knn_accuracy(xs, ys, x_test, y_test, k=k)
    row: dict[str, Any] = {
        "shots": label,
        "draw": draw,
        "n_train": int(len(idx)),
        "probe_accuracy": probe["accuracy"],
        "probe_balanced_accuracy": probe["balanced_accuracy"],
    }
    if "top5" in probe:
        row["probe_top5"] = probe["top5"]
    row.update(
        c=probe["c"],
        cv_folds=probe["cv_folds"],
        fit_seconds=probe["fit_seconds"],
        knn_accuracy=knn,
        knn_k=k,
    )
    return row


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def summarize_fewshot(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over the draws of each shot count.

    Every numeric column except ``shots`` and ``draw`` that all rows of a shot count have is summarised
    as ``<column>_mean`` and ``<column>_std``: the sample standard deviation (ddof=1) across draws, 0.0
    for a single draw, which measures how much the result depends on which images were drawn.

    Args:
        rows: rows as :func:`fewshot_eval` returns them.

    Returns:
        One row per shot count, in order of first appearance: ``shots``, ``draws`` (the count), and the
        means and standard deviations.
    """
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["shots"], []).append(row)
    summary = []
    for shots, group in groups.items():
        out: dict[str, Any] = {"shots": shots, "draws": len(group)}
        for key in group[0]:
            if key in ("shots", "draw") or not all(key in r and _is_number(r[key]) for r in group):
                continue
            values = np.array([r[key] for r in group], dtype=np.float64)
            out[f"{key}_mean"] = float(values.mean())
            out[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summary.append(out)
    return summary

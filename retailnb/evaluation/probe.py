"""Linear and nearest-neighbour probes on frozen features.

A linear probe is a logistic regression trained on the features of a frozen backbone: if it classifies
new products about as well as finetuning the whole network, the backbone's features already separate
them. The k-nearest-neighbour probe needs no training at all and shows how much of that separation is
plain proximity in feature space.

Regularisation is chosen by cross-validation on the training split alone; the test split is only ever
used to score the fitted probe.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    top_k_accuracy_score,
)
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0)
"""Candidate Cs of the cross-validation."""

DEFAULT_CV = 3
"""Cross-validation folds used to choose C unless told otherwise."""

DEFAULT_THREADS = 1
"""BLAS/OpenMP threads of a probe fit: one, because few-shot probes are tiny matrices whose iterations
are shorter than a thread hand-off; on a busy machine the default multithreading made a 250 x 512 fit
about 30 times slower. Pass ``threads=None`` for a large probe on an idle machine."""

DEFAULT_TOL = 1e-3
"""Stopping tolerance of the L-BFGS solver. scikit-learn's 1e-4 took 1.6 to 4.3 times the iterations on
1,024-d features of 40 products (10 shots, one fit per C of :data:`DEFAULT_CS`) for changes in test
accuracy below 0.01 (measured on the default pipeline's features), and the evaluation fits well over a
hundred probes per backbone."""

FALLBACK_C = 1.0
"""C used when some class has a single training image, so that no stratified split exists.

With one image per class the standardised training points are always linearly separable, and the
prediction then depends little on C: it moves from the direction between class means (small C) to the
maximum-margin direction (large C), both sensible for so little data. scikit-learn's default of 1.0
sits between the two.
"""


def cv_folds(y_train: np.ndarray, cv: int) -> int:
    """Number of stratified folds used to choose C: ``cv``, or fewer when a class has fewer images.

    Every fold must hold at least one image of every class, so the count is capped by the smallest
    class. A result below 2 means that cross-validation is impossible (a class has one image).

    Args:
        y_train: training labels.
        cv: the number of folds wanted.
    """
    _, counts = np.unique(y_train, return_counts=True)
    return int(min(cv, counts.min()))


def _check_xy(x: np.ndarray, y: np.ndarray, split: str) -> None:
    """Reject a split whose features are not (N, D) or whose labels do not match them."""
    if x.ndim != 2:
        raise ValueError(f"x_{split} must be a 2-D (N, D) feature array, got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y_{split} must have shape ({x.shape[0]},) to match x_{split}, got {y.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"the {split} split is empty")


def fit_logistic_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    cs: Sequence[float] = DEFAULT_CS,
    cv: int = DEFAULT_CV,
    max_iter: int = 1000,
    tol: float = DEFAULT_TOL,
    seed: int = 0,
    fallback_c: float = FALLBACK_C,
    threads: int | None = DEFAULT_THREADS,
) -> Pipeline:
    """Fit a standardised multinomial logistic regression, choosing C by cross-validation.

    C is chosen among ``cs`` by accuracy in stratified, shuffled ``cv``-fold cross-validation on the
    TRAINING data only, the scaler refitted inside each fold so that no held-out fold leaks into it; the
    pipeline is then refitted on all training data with that C. Ties go to the smallest C (the
    strongest regularisation), whatever the order of ``cs``. When some class has fewer than ``cv``
    images the folds are reduced to its count, and when it has a single image (1-shot) ``fallback_c`` is
    used without cross-validation (see :data:`FALLBACK_C`). A single candidate in ``cs`` is used as is,
    without cross-validation.

    Args:
        x_train: (N, D) training features.
        y_train: (N,) training labels.
        cs: candidate inverse regularisation strengths.
        cv: number of cross-validation folds.
        max_iter: iteration limit of the L-BFGS solver.
        tol: its stopping tolerance (see :data:`DEFAULT_TOL`).
        seed: seed of the fold shuffling.
        fallback_c: C when cross-validation is impossible.
        threads: BLAS/OpenMP threads while fitting (see :data:`DEFAULT_THREADS`); None leaves them alone.

    Returns:
        The fitted ``StandardScaler`` + ``LogisticRegression`` pipeline; the chosen C is ``pipe[-1].C``.

    Raises:
        ValueError: the shapes do not match, there are fewer than two classes, ``cs`` is empty or not
            positive, or ``cv`` is below 2.
    """
    x_train, y_train = np.asarray(x_train), np.asarray(y_train)
    _check_xy(x_train, y_train, "train")
    if len(np.unique(y_train)) < 2:
        raise ValueError("a probe needs training images of at least two classes")
    if not cs or min(cs) <= 0:
        raise ValueError(f"cs must be a non-empty sequence of positive values, got {cs!r}")
    if cv < 2:
        raise ValueError(f"cv must be at least 2 folds, got {cv}")
    only_c = float(cs[0]) if len(cs) == 1 else fallback_c
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=only_c, max_iter=max_iter, tol=tol, random_state=seed))
    folds = cv_folds(y_train, cv)
    if folds < 2 or len(cs) == 1:
        with threadpool_limits(limits=threads):
            return pipe.fit(x_train, y_train)
    search = GridSearchCV(
        pipe,
        {"logisticregression__C": sorted(float(c) for c in cs)},  # ascending: GridSearchCV breaks ties by order
        scoring="accuracy",
        cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed),
        refit=True,
    )
    with threadpool_limits(limits=threads):
        search.fit(x_train, y_train)
    best: Pipeline = search.best_estimator_
    return best


def knn_accuracy(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    k: int = 1,
    metric: str = "cosine",
    threads: int | None = DEFAULT_THREADS,
) -> float:
    """Accuracy of a k-nearest-neighbour classifier on the test split.

    Each test image takes the majority label of its ``k`` nearest training images (ties to the
    smallest label); the cosine metric ignores the feature norm, which for pooled CNN features mostly
    tracks image contrast rather than product identity.

    Args:
        x_train: (N, D) training features.
        y_train: (N,) training labels.
        x_test: (M, D) test features.
        y_test: (M,) test labels.
        k: number of neighbours; at most the number of training images.
        metric: any metric scikit-learn's ``KNeighborsClassifier`` accepts.
        threads: BLAS/OpenMP threads (see :data:`DEFAULT_THREADS`); None leaves them alone.

    Returns:
        The fraction of test images classified correctly.

    Raises:
        ValueError: the shapes do not match, or ``k`` is not in [1, N].
    """
    x_train, y_train, x_test, y_test = map(np.asarray, (x_train, y_train, x_test, y_test))
    _check_xy(x_train, y_train, "train")
    _check_xy(x_test, y_test, "test")
    if not 1 <= k <= len(x_train):
        raise ValueError(f"k must be between 1 and the {len(x_train)} training images, got {k}")
    knn = KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute").fit(x_train, y_train)
    with threadpool_limits(limits=threads):
        y_pred = knn.predict(x_test)
    return float(accuracy_score(y_test, y_pred))


def probe_accuracy(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    **kw: Any,
) -> dict[str, Any]:
    """Fit a logistic probe on the training split (:func:`fit_logistic_probe`) and score it on the test split.

    Args:
        x_train: (N, D) training features.
        y_train: (N,) training labels.
        x_test: (M, D) test features.
        y_test: (M,) test labels; every one must occur in ``y_train``.
        **kw: passed to :func:`fit_logistic_probe` (``cs``, ``cv``, ``max_iter``, ``tol``, ``seed``,
            ``fallback_c``, ``threads``).

    Returns:
        ``accuracy``, ``balanced_accuracy`` (mean per-class recall), ``top5`` (only with more than five
        classes: with five or fewer it is always 1), ``c`` (the chosen C), ``cv_folds`` (0 when C was
        not cross-validated), ``fit_seconds`` and the sizes ``n_train``, ``n_test``, ``n_classes``.

    Raises:
        ValueError: the shapes do not match, or a test label has no training image (the probe could
            never predict it, which means the splits are wrong).
    """
    x_train, y_train, x_test, y_test = map(np.asarray, (x_train, y_train, x_test, y_test))
    _check_xy(x_test, y_test, "test")
    unseen = np.setdiff1d(y_test, y_train)
    if unseen.size:
        raise ValueError(f"test labels {unseen.tolist()[:10]} have no training image")
    start = time.perf_counter()
    pipe = fit_logistic_probe(x_train, y_train, **kw)
    fit_seconds = time.perf_counter() - start
    with threadpool_limits(limits=kw.get("threads", DEFAULT_THREADS)):
        y_pred = pipe.predict(x_test)
        scores = pipe.predict_proba(x_test) if len(pipe.classes_) > 5 else None
    folds = cv_folds(y_train, kw.get("cv", DEFAULT_CV)) if len(kw.get("cs", DEFAULT_CS)) > 1 else 0
    result: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_test, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_test, y_pred)),
        "c": float(pipe[-1].C),
        "cv_folds": folds if folds >= 2 else 0,
        "fit_seconds": fit_seconds,
        "n_train": len(y_train),
        "n_test": len(y_test),
        "n_classes": len(pipe.classes_),
    }
    if scores is not None:
        result["top5"] = float(top_k_accuracy_score(y_test, scores, k=5, labels=pipe.classes_))
    return result

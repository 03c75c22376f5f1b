"""Means and confidence intervals over training seeds, and what they allow one to claim.

Each headline result is measured once per training seed (``evaluate.seeds``): pretraining, the noisy
student and finetuning are trained again, so the spread covers training randomness, not just the draw of
the shots. The interval is Student's t-interval of the mean over the seeds (scipy), the textbook choice for
a handful of independent runs whose spread is unknown. A result is called better than another only when
the two intervals do not overlap; otherwise the honest verdict is "no difference measured".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats

from retailnb.results.records import IntervalRecord

Order = Literal["higher", "lower", "no difference measured"]
"""How one interval stands against another."""


def t_interval(values: Sequence[float], confidence: float = 0.95) -> IntervalRecord:
    """The mean of ``values`` (one per training seed) and its two-sided Student's t-interval.

    With one value there is no interval: ``low`` and ``high`` are None.

    Args:
        values: the result of each seed, in seed order.
        confidence: the interval's level, in (0, 1).

    Raises:
        ValueError: no values, or a confidence outside (0, 1).
    """
    if not values:
        raise ValueError("an interval needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return IntervalRecord(mean=mean, low=None, high=None, n=1, confidence=confidence, values=[mean])
    half = float(stats.t.ppf(0.5 + confidence / 2, df=len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return IntervalRecord(mean=mean, low=mean - half, high=mean + half, n=len(x), confidence=confidence,
                          values=[float(v) for v in x])


def order(a: IntervalRecord, b: IntervalRecord) -> Order:
    """``higher`` when ``a``'s interval lies wholly above ``b``'s, ``lower`` when wholly below, and
    ``no difference measured`` when they overlap or either has no interval (a single seed)."""
    if a.low is None or a.high is None or b.low is None or b.high is None:
        return "no difference measured"
    if a.low > b.high:
        return "higher"
    if a.high < b.low:
        return "lower"
    return "no difference measured"


def paired_difference(a: IntervalRecord, b: IntervalRecord) -> IntervalRecord | None:
    """The t-interval of the seed-by-seed differences ``a - b`` (the same seeds, in the same order), None
    with fewer than two seeds or unequal counts.

    Runs of one seed share its randomness (the shot draws, the pretraining a noisy student starts from),
    so the paired difference is tighter than the two intervals side by side; the report gives it as
    information beside the verdict of :func:`order`, which stays that of the two intervals.
    """
    if a.n != b.n or a.n < 2:
        return None
    return t_interval([x - y for x, y in zip(a.values, b.values, strict=True)], a.confidence)


def ratio_values(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Seed-by-seed ratios (a probe over the finetuned network of the same seed); a zero denominator is
    left out."""
    return [n / d for n, d in zip(numerators, denominators, strict=True) if d]

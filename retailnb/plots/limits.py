"""Axis limits scaled to the data, shared by the figures of every stage."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def data_limits(values: Sequence[float], *, margin: float = 0.08, floor: float = 0.0,
                ceiling: float = 1.0) -> tuple[float, float]:
    """Axis limits that span ``values`` with a margin, clipped to ``[floor, ceiling]`` (accuracies).

    Scaling to the data rather than to the whole 0-1 range keeps curves a few points apart
    distinguishable; the margin (a fraction of the span, at least 0.01) keeps markers and error caps
    off the frame. A single value gets a small window around it.
    """
    finite = [float(v) for v in values if np.isfinite(v)]
    if not finite:
        return floor, ceiling
    low, high = min(finite), max(finite)
    pad = max((high - low) * margin, 0.01)
    return max(floor, low - pad), min(ceiling, high + pad)

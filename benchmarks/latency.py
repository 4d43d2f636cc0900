"""Latency figures as every benchmark reports them, so that a p95 in one result file means
what it means in the next: percentiles by linear interpolation between the closest ranks
(numpy's default), in the unit the values were measured in, rounded."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np


def percentile(values: Sequence[float], q: float, digits: int = 3) -> float:
    """The ``q``-th percentile (0-100) of ``values``, rounded; NaN when there are none."""
    if not len(values):
        return float("nan")
    return round(float(np.percentile(np.asarray(values), q)), digits)


def percentiles(values: Sequence[float], *qs: float, key: str = "p{}",
                digits: int = 3) -> dict[str, float]:
    """The percentiles ``qs`` of ``values`` by name: ``key`` with the percentile in it
    (``"p{}"`` gives ``{"p50": .., "p95": ..}``, ``"p{}_ms"`` gives ``"p50_ms"``)."""
    return {key.format(f"{q:g}"): percentile(values, q, digits) for q in qs}


def summary(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """``{"p50": .., "p95": .., "mean": ..}``, rounded; NaN for each when there are no
    values."""
    mean = round(statistics.fmean(values), digits) if len(values) else float("nan")
    return {**percentiles(values, 50, 95, digits=digits), "mean": mean}

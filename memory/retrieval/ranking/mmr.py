"""Maximal marginal relevance: re-ordering ranked hits so near-duplicates do not crowd
the top (``mmr_lambda``); shared by both rankers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..search import Hit
from .request import Ranked


def mmr(order: list[Ranked], lam: float, fill: Callable[[Sequence[Hit]], None]
         ) -> list[Ranked]:
    fill([r.hit for r in order])
    pool = [r for r in order if r.hit.embedding is not None]
    rest = [r for r in order if r.hit.embedding is None]
    if not pool:
        return order
    top = max(r.score for r in pool) or 1.0
    vecs = np.stack([r.hit.embedding for r in pool])  # type: ignore[misc]
    chosen: list[int] = []
    left = list(range(len(pool)))
    while left:
        best_i, best_v = left[0], -math.inf
        for i in left:
            redundancy = max((float(vecs[i] @ vecs[j]) for j in chosen), default=0.0)
            value = lam * pool[i].score / top - (1 - lam) * redundancy
            if value > best_v + 1e-12:
                best_i, best_v = i, value
        chosen.append(best_i)
        left.remove(best_i)
        pool[best_i].parts["mmr"] = best_v
    return [pool[i] for i in chosen] + rest

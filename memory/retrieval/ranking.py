"""Ranking: how candidate hits are fused, scored and explained. A replaceable seam.

Input: the query, the candidate hits (each with its raw score parts from ``search.py``:
``vector_sim``, ``vector_rank``, ``text_rank_cd``, ``text_rank``), a way to fetch the
neighbours of hits (adjacent turns in their session) and the settings. Output: the hits
in rank order, each with its final score, the parts that made it and the reasons, in words.
The packer (``context.py``) takes them in that order while they fit.

To try another ranker, pass ``ranker=`` to ``Store.context`` (any callable with the
signature of :func:`rank`), or replace :func:`rank` here. Keep it deterministic: the same
inputs must give the same order (ties break on the chunk's position), or replaying a
recorded context would not rebuild the same messages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from .search import Hit, NeighbourLookup
from .settings import RetrievalSettings


@dataclass
class Ranked:
    """A hit with its final score and why it is where it is."""

    hit: Hit
    score: float
    parts: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RankRequest:
    query: str
    hits: Sequence[Hit]
    neighbours: NeighbourLookup
    settings: RetrievalSettings
    now: datetime
    """The moment the context is for (the log's bound, for recency)."""
    embeddings: Callable[[Sequence[Hit]], None] | None = None
    """Fills ``hit.embedding`` for the given hits (used by MMR)."""


Ranker = Callable[[RankRequest], list[Ranked]]


def _minmax(values: dict[tuple[int, int], float]) -> dict[tuple[int, int], float]:
    if not values:
        return {}
    lo, hi = min(values.values()), max(values.values())
    if hi - lo <= 0:
        return dict.fromkeys(values, 1.0)
    return {k: (v - lo) / (hi - lo) for k, v in values.items()}


def fuse(hits: Sequence[Hit], s: RetrievalSettings) -> dict[tuple[int, int], dict[str, float]]:
    """Per hit, the fused score and its parts (normalised vector and text contributions)."""
    out: dict[tuple[int, int], dict[str, float]] = {h.key: {} for h in hits}
    if s.fusion == "rrf":
        for h in hits:
            p = out[h.key]
            p["vector"] = (s.vector_weight / (s.rrf_k + h.parts["vector_rank"])
                           if "vector_rank" in h.parts else 0.0)
            p["text"] = (s.text_weight / (s.rrf_k + h.parts["text_rank"])
                         if "text_rank" in h.parts else 0.0)
            p["fused"] = p["vector"] + p["text"]
        return out
    if s.fusion != "linear":
        raise ValueError(f"unknown fusion {s.fusion!r} (linear or rrf)")
    vec = _minmax({h.key: h.parts["vector_sim"] for h in hits if "vector_sim" in h.parts})
    txt = _minmax({h.key: h.parts["text_rank_cd"] for h in hits if "text_rank_cd" in h.parts})
    for h in hits:
        p = out[h.key]
        p["vector"] = s.vector_weight * vec.get(h.key, 0.0)
        p["text"] = s.text_weight * txt.get(h.key, 0.0)
        p["fused"] = p["vector"] + p["text"]
    return out


def rank(req: RankRequest) -> list[Ranked]:
    """The default ranker: fusion, a share of the best neighbour's score, optional recency
    weighting, optional MMR. See the settings for each knob."""
    s = req.settings
    hits = list(req.hits)
    if not hits:
        return []
    fused = fuse(hits, s)
    ranked: dict[tuple[int, int], Ranked] = {}
    for h in hits:
        p = dict(fused[h.key])
        reasons = []
        if "vector_rank" in h.parts:
            reasons.append(f"vector #{int(h.parts['vector_rank'])} "
                           f"(cosine {h.parts['vector_sim']:.3f})")
        if "text_rank" in h.parts:
            reasons.append(f"full text #{int(h.parts['text_rank'])}")
        ranked[h.key] = Ranked(hit=h, score=p["fused"], parts=p, reasons=reasons)

    if s.neighbour_share > 0 and s.neighbour_window > 0:
        # a hit borrows from its best neighbour *among the candidates* (no extra query)
        by_session: dict[str, list[Hit]] = {}
        for h in hits:
            by_session.setdefault(h.session_id, []).append(h)
        for group in by_session.values():
            group.sort(key=lambda h: h.key)
            for i, h in enumerate(group):
                best = None
                for other in group[max(0, i - s.neighbour_window): i + s.neighbour_window + 1]:
                    if other is h:
                        continue
                    score = fused[other.key]["fused"]
                    if best is None or score > best[0]:
                        best = (score, other)
                if best is not None and best[0] > 0:
                    r = ranked[h.key]
                    bonus = s.neighbour_share * best[0]
                    r.parts["neighbour"] = bonus
                    r.score += bonus
                    r.reasons.append(f"next to a hit (event {best[1].event_position})")

    if s.recency_half_life_days:
        for r in ranked.values():
            age = max(0.0, (req.now - r.hit.occurred_at).total_seconds() / 86400.0)
            decay = 0.5 ** (age / s.recency_half_life_days)
            factor = 1.0 - s.recency_weight + s.recency_weight * decay
            r.parts["recency"] = factor
            r.score *= factor

    order = sorted(ranked.values(), key=lambda r: (-r.score, r.hit.key))
    order = [r for r in order if r.score > s.min_score]
    for i, r in enumerate(order, start=1):
        r.parts["rank"] = float(i)
    if s.mmr_lambda is not None and req.embeddings is not None and order:
        order = _mmr(order, s.mmr_lambda, req.embeddings)
    return order


def _mmr(order: list[Ranked], lam: float, fill: Callable[[Sequence[Hit]], None]
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

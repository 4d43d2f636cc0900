"""The default ranker: candidate hits fused (vector and full text), scored and explained,
or a small scope handed whole to :mod:`.scope`.

Input: the query, the candidate hits (each with its raw score parts from ``search/``:
``vector_sim``, ``vector_rank``, ``text_rank_cd``, ``text_rank``), a way to fetch the
neighbours of hits (adjacent turns in their session) and the settings. Output: the hits
in rank order, each with its final score, the parts that made it and the reasons, in words.
The packer (``packing.py``) takes them in that order while they fit.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..search import Hit
from ..settings import RetrievalSettings
from .mmr import mmr
from .request import Ranked, RankRequest
from .scope import rank_scope


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
    """The default ranker: a scope of at most ``scope_rank_max_chunks`` chunks is scored
    whole (:func:`rank_scope`); a larger one, or a request without the search, is ranked
    from its candidate hits (:func:`rank_candidates`)."""
    s = req.settings
    if req.finder is not None and req.query_vec is not None and s.scope_rank_max_chunks > 0:
        size = req.finder.plan.get("scope_size")
        if size is None:
            size = req.finder.scope_size()
        if 0 < size <= s.scope_rank_max_chunks:
            return rank_scope(req)
    return rank_candidates(req)


def rank_candidates(req: RankRequest) -> list[Ranked]:
    """Ranking of the candidate hits only: fusion, a share of the best neighbour's score,
    optional recency weighting, optional MMR. See the settings for each knob."""
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
        order = mmr(order, s.mmr_lambda, req.embeddings)
    return order

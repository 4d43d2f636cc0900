"""The whole-scope ranker: every chunk of a small scope scored from its vectors, BM25,
session, speaker and dates (:func:`rank_scope`).

Measured on LoCoMo (benchmarks/RESULTS.md, "LoCoMo"; benchmarks/locomo.py --set NAME=VALUE
compares the ranker with one part changed): each part gained recall there; none is tuned to
particular questions.
"""

from __future__ import annotations

import re

import numpy as np

from .. import search, wholescope
from ..settings import RetrievalSettings
from . import expansion
from .dates import ANY_DATE, date_match, day_number, query_dates
from .mmr import mmr
from .names import named_authors
from .request import Ranked, RankRequest


def _norm(x: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; all equal: 1 if positive (a lone match still counts), else 0."""
    lo, hi = float(x.min()), float(x.max())
    if hi > lo:
        return (x - lo) / (hi - lo)
    return np.full(len(x), 1.0 if hi > 0 else 0.0)


def _bm25(tf: np.ndarray, idf: np.ndarray, lengths: np.ndarray, k1: float, b: float
          ) -> np.ndarray:
    """BM25 of each row; ``idf`` carries each term's weight too (1 for a query term)."""
    if tf.shape[1] == 0:
        return np.zeros(tf.shape[0])
    avg = float(lengths.mean()) if len(lengths) and lengths.mean() > 0 else 1.0
    denom = tf + k1 * (1 - b + b * lengths[:, None] / avg)
    return ((tf * (k1 + 1) / np.maximum(denom, 1e-9)) * idf[None, :]).sum(1)


def session_prior(sims: np.ndarray, tf: np.ndarray, session: np.ndarray,
                   s: RetrievalSettings, weights: np.ndarray | None = None) -> np.ndarray:
    """Per chunk, its session scored as one document: the session's mean cosine and the
    BM25 (b = 0) of the session's summed term frequencies, with document frequencies
    counted over sessions, each min-max normalised over the sessions, mixed by
    ``session_prior_vector_share``."""
    k = int(session.max()) + 1
    count = np.bincount(session, minlength=k).astype(np.float64)
    mean_sim = np.bincount(session, weights=sims, minlength=k) / np.maximum(count, 1)
    if tf.shape[1]:
        stf = np.zeros((k, tf.shape[1]))
        np.add.at(stf, session, tf)
        sdf = (stf > 0).sum(0)
        sidf = np.log(1 + (k - sdf + 0.5) / (sdf + 0.5))
        if weights is not None:  # the query terms' weights (expansion)
            sidf = sidf * weights
        lexical = _bm25(stf, sidf, np.ones(k), s.bm25_k1, 0.0)
    else:
        lexical = np.zeros(k)
    share = s.session_prior_vector_share
    prior = share * _minmax_or_zero(mean_sim) + (1 - share) * _minmax_or_zero(lexical)
    return prior[session]


def is_aggregate(query: str, pattern: str) -> bool:
    """Whether the query gathers facts over time (``aggregate_pattern``: by default the
    present perfect, "What has X painted?", "Where have they been?")."""
    return bool(pattern) and re.search(pattern, query, re.IGNORECASE) is not None


def rank_in_session(session: np.ndarray) -> np.ndarray:
    """For rows in rank order, each row's rank among the rows of its session before it
    (0 for the session's first row)."""
    out = np.zeros(len(session))
    seen: dict[int, int] = {}
    for i, x in enumerate(session.tolist()):
        k = seen.get(x, 0)
        out[i] = k
        seen[x] = k + 1
    return out


def _minmax_or_zero(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros(len(x))


def rank_scope(req: RankRequest) -> list[Ranked]:
    """Score every chunk of the scope, keep the best ``rank_depth``.

    fused = vector_weight * minmax(max(cosine, best sentence's) + windows' mean cosine)
          + text_weight * minmax(BM25(turn) + BM25(window))
          + session_prior * (the turn's session scored as one document)
    score = fused + neighbour_share * best ±neighbour_window fused
          + speaker_boost (the one author the query names)
          + date_boost * exp(-days from the turn's date to a date the query names / tau)
          - question_penalty (the chunk's text ends with "?")
    For a query that gathers facts over time (``aggregate_pattern``), the best
    ``rank_depth`` are re-ordered by score - aggregate_session_penalty x the chunk's rank
    within its session among them. Windows score by the cosine of their mean vector
    (``vector_window_kind``). The BM25 query (and the session prior's) holds the query's
    terms, weight 1, and the scope's words nearest the query's (``expansion``), weight
    ``expansion_weight`` x their cosine; the best sentence is ``sentence_max``'s.
    BM25 uses the scope's own document frequencies (counted in SQL, bounded like every
    other read) and, with b = 0, no lengths. Ties break on the chunk's position.
    """
    s, f = req.settings, req.finder
    assert f is not None and req.query_vec is not None
    rows = wholescope.scope_vectors(f, req.query_vec, s.scope_rank_max_chunks + 1)
    n = len(rows.positions)
    if n == 0:
        return []
    session = rows.session_codes
    if session is None or len(session) != n:
        codes: dict[str, int] = {}
        session = np.array([codes.setdefault(x, len(codes)) for x in rows.sessions])
    sims = np.asarray(rows.sims, dtype=np.float64)
    dense = sims.copy()
    if s.sentence_max and rows.pieces is not None and len(rows.pieces) == n:
        best = np.asarray(rows.pieces, dtype=np.float64)
        dense = np.where(np.isnan(best), sims, np.maximum(sims, best))
    dense_turn = dense.copy()
    if s.vector_window_kind not in ("mean_vector", "mean_cosine"):
        raise ValueError(f"unknown vector_window_kind {s.vector_window_kind!r} "
                         "(mean_vector or mean_cosine)")
    for w, weight in zip(s.vector_windows, s.vector_window_weights, strict=False):
        if w > 0 and weight:
            total, count = wholescope.window_sum(sims, session, int(w))
            if s.vector_window_kind == "mean_vector":
                norm = wholescope.window_norms(f, session, int(w), s.scope_rank_max_chunks + 1)
                dense += weight * np.where(norm > 0, total / np.where(norm > 0, norm, 1.0), 0.0)
            else:
                dense += weight * total / count

    authors = sorted({a for a in rows.authors if a})
    terms = search.query_lexemes(f, req.query)
    name_terms: set[str] = set()
    if s.strip_author_names and authors:
        name_terms = set(search.query_lexemes(f, " ".join(authors)))
        terms = [t for t in terms if t not in name_terms] or terms
    added = expansion.expand(f, req.query, terms, name_terms, s, req.embed)
    weights = np.array([1.0] * len(terms) + list(added.values()))
    terms = [*terms, *added]
    tf = wholescope.scope_tf(f, rows, terms)
    df = (tf > 0).sum(0)
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5)) * weights
    lengths = np.asarray(rows.lengths, dtype=np.float64)
    lexical = _bm25(tf, idf, lengths, s.bm25_k1, s.bm25_b)
    if s.text_window > 0 and s.text_window_weight:
        wtf = wholescope.window_sum(tf, session, s.text_window)[0]
        lexical += s.text_window_weight * _bm25(wtf, idf, lengths, s.bm25_k1, 0.0)

    vec_part = s.vector_weight * _norm(dense)
    txt_part = s.text_weight * _norm(lexical)
    score = vec_part + txt_part
    sess_part = np.zeros(n)
    if s.session_prior:
        sess_part = s.session_prior * session_prior(sims, tf, session, s, weights)
        score = score + sess_part
    fused = score.copy()
    nb_part = np.zeros(n)
    if s.neighbour_share > 0 and s.neighbour_window > 0:
        best = np.full(n, -np.inf)
        for d in range(1, s.neighbour_window + 1):
            if d >= n:
                break
            same = session[d:] == session[:-d]
            best[:-d][same] = np.maximum(best[:-d][same], fused[d:][same])
            best[d:][same] = np.maximum(best[d:][same], fused[:-d][same])
        nb_part = s.neighbour_share * np.where(np.isfinite(best), best, 0.0)
        score = score + nb_part
    sp_part = np.zeros(n)
    named = named_authors(req.query, authors) if s.speaker_boost else []
    if len(named) == 1:
        sp_part = s.speaker_boost * np.array([a == named[0] for a in rows.authors], dtype=float)
        score = score + sp_part
    date_part = np.zeros(n)
    occurred = getattr(rows, "occurred", None)
    if (s.date_boost and occurred is not None and len(occurred) == n
            and ANY_DATE.search(req.query)):  # most queries name no date: skip the rest
        intervals = query_dates(req.query, sorted({d.year for d in occurred}))
        if intervals:
            days = np.array([day_number(d) for d in occurred])
            date_part = s.date_boost * date_match(days, intervals, s.date_tau_days)
            score = score + date_part
    ask_part = np.zeros(n)
    asks = getattr(rows, "asks", None)
    if s.question_penalty and asks is not None and len(asks) == n:
        ask_part = -s.question_penalty * np.asarray(asks, dtype=float)
        score = score + ask_part

    positions = np.asarray(rows.positions)
    indexes = np.asarray(rows.indexes)
    order = np.lexsort((indexes, positions, -score))[: max(s.rank_depth, 1)]
    cap_part = np.zeros(n)
    if s.aggregate_session_penalty and is_aggregate(req.query, s.aggregate_pattern):
        cap_part[order] = -s.aggregate_session_penalty * rank_in_session(session[order])
        score = score + cap_part
        order = order[np.lexsort((indexes[order], positions[order], -score[order]))]
    holds_added = tf[:, len(terms) - len(added):] > 0
    keys = [(int(positions[i]), int(indexes[i])) for i in order]
    hits = wholescope.hits_by_key(f, keys)
    ranked: list[Ranked] = []
    for i, key in zip(order, keys, strict=True):
        h = hits.get(key)
        if h is None:
            continue
        h.parts.update({"vector_sim": float(sims[i]), "bm25": float(lexical[i])})
        if dense_turn[i] > sims[i]:
            h.parts["sentence_sim"] = float(dense_turn[i])
        parts = {"vector": float(vec_part[i]), "text": float(txt_part[i]),
                 "session": float(sess_part[i]), "fused": float(fused[i]),
                 "neighbour": float(nb_part[i]), "speaker": float(sp_part[i]),
                 "date": float(date_part[i]), "asks": float(ask_part[i]),
                 "session_cap": float(cap_part[i])}
        reasons = [f"cosine {sims[i]:.3f} (with its turn windows {dense[i]:.3f})"]
        if dense_turn[i] > sims[i]:
            reasons.append(f"one of its sentences: cosine {dense_turn[i]:.3f}")
        if lexical[i] > 0:
            reasons.append(f"BM25 {lexical[i]:.2f} (turn and ±{s.text_window} window)")
        if len(added) and holds_added[i].any():
            near = [terms[j] for j in np.flatnonzero(holds_added[i]) + len(terms) - len(added)]
            reasons.append(f"holds words near the query's ({', '.join(near)})")
        if nb_part[i] > 0:
            reasons.append("next to a strong turn")
        if sp_part[i] > 0:
            reasons.append(f"said by {named[0]}, whom the query names")
        if date_part[i] > 0.01:
            reasons.append("dated near a date the query names")
        if cap_part[i] < 0:
            reasons.append(f"turn {1 - cap_part[i] / s.aggregate_session_penalty:.0f} of its "
                           "session for a question that gathers facts across sessions")
        ranked.append(Ranked(hit=h, score=float(score[i]), parts=parts, reasons=reasons))

    if s.recency_half_life_days:
        for r in ranked:
            age = max(0.0, (req.now - r.hit.occurred_at).total_seconds() / 86400.0)
            factor = 1.0 - s.recency_weight + s.recency_weight * 0.5 ** (
                age / s.recency_half_life_days)
            r.parts["recency"] = factor
            r.score *= factor
        ranked.sort(key=lambda r: (-r.score, r.hit.key))
    # the question penalty and the session cap move a chunk down, never out (min_score is
    # about relevance)
    ranked = [r for r in ranked if r.score - r.parts.get("asks", 0.0)
              - r.parts.get("session_cap", 0.0) > s.min_score]
    for i, r in enumerate(ranked, start=1):
        r.parts["rank"] = float(i)
    if s.mmr_lambda is not None and req.embeddings is not None and ranked:
        ranked = mmr(ranked, s.mmr_lambda, req.embeddings)
    return ranked

"""Whole-scope reads: every chunk of a small scope, for the whole-scope ranker (ranking/scope.py).

A small scope (one person's memory: hundreds to a few thousand chunks) is scored whole:
every chunk's cosine to the query and the query terms it holds, so the ranker can score
windows of turns and compute BM25 from the scope's own term statistics (document
frequencies counted here, bounded by the same position as everything else, so as_of and
replay see exactly the statistics of their time). No side index: the rows come from
memory_chunks, through the store's scope cache (scopecache.py) when the scope has an
entry, else by SQL; both give the same rows (tests/retrieval/test_retrieval_cache.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from ..pg.vectors import vector_literal
from .scopedata import ScopeData
from .scopeload import read_terms
from .scopeparts import cosines
from .search import HIT_COLUMNS, SCOPE_WHERE, ChunkSearch, Hit, hit_from_row

SCOPE_AUTHORS = f"""
SELECT DISTINCT c.author FROM memory_chunks c
 WHERE {SCOPE_WHERE} AND c.author IS NOT NULL AND c.author <> ''
 LIMIT %(cap)s
"""

SCOPE_VECTORS = f"""
SELECT c.event_position, c.chunk_index, c.session_id, c.author, length(c.tsv),
       1 - (c.embedding <=> %(q)s::vector) AS sim, c.occurred_at,
       right(rtrim(c.text, E' \t\r\n'), 1) = '?',
       (SELECT max(1 - (p <=> %(q)s::vector)) FROM unnest(c.pieces) AS p)
  FROM memory_chunks c
 WHERE {SCOPE_WHERE}
 ORDER BY c.session_id, c.event_position, c.chunk_index
 LIMIT %(cap)s
"""

# Per chunk (in the order of SCOPE_VECTORS), the norm of the sum of the unit vectors of the
# chunks within %(w)s rows of it in its session: the ranker's mean-vector windows.
SCOPE_WINDOW_NORMS = f"""
SELECT vector_norm(sum(l2_normalize(c.embedding)) OVER (
         PARTITION BY c.session_id ORDER BY c.event_position, c.chunk_index
         ROWS BETWEEN %(w)s PRECEDING AND %(w)s FOLLOWING))
  FROM memory_chunks c
 WHERE {SCOPE_WHERE}
 ORDER BY c.session_id, c.event_position, c.chunk_index
 LIMIT %(cap)s
"""

# (chunk, term, frequency) for every chunk in scope holding one of the terms; the rows per
# term are its document frequency in the scope.
SCOPE_TERMS = f"""
SELECT c.event_position, c.chunk_index, t.lexeme,
       coalesce(array_length(t.positions, 1), 1)
  FROM memory_chunks c CROSS JOIN LATERAL unnest(c.tsv) AS t(lexeme, positions, weights)
 WHERE {SCOPE_WHERE}
   AND c.tsv @@ (SELECT string_agg(quote_literal(x), ' | ') FROM unnest(%(terms)s::text[]) x
                )::tsquery
   AND t.lexeme = ANY(%(terms)s::text[])
"""

HITS_BY_KEY = f"""
SELECT {HIT_COLUMNS} FROM memory_chunks c
 WHERE c.tenant = %(tenant)s AND c.generation = %(generation)s
   AND c.actor_id = ANY(%(actors)s)
   AND (c.event_position, c.chunk_index) IN (SELECT * FROM unnest(%(positions)s::bigint[],
                                                                %(indexes)s::int[]))
"""


@dataclass
class ScopeRows:
    """Every chunk of a scope, ordered by session then position, as parallel lists."""

    positions: list[int]
    indexes: list[int]
    sessions: list[str]
    authors: list[str | None]
    lengths: list[int]
    sims: list[float]
    occurred: list[datetime] | None = None
    """The chunks' ``occurred_at`` (the ranker's date matching)."""
    asks: list[bool] | None = None
    """Whether each chunk's text ends with a question mark (the ranker's question
    penalty); trailing spaces, tabs and line breaks ignored."""
    pieces: list[float] | None = None
    """The cosine of each chunk's best sentence (``memory_chunks.pieces``); NaN for a
    chunk with none (one sentence, or a generation built without them)."""
    session_codes: np.ndarray | None = None
    """A number per session, per chunk (from the cache; the ranker numbers them itself
    otherwise). Only which chunks share a session matters, not the numbers."""
    entry_rows: np.ndarray | None = None
    """Each chunk's row in the cached entry (:func:`scope_tf`), when read from it."""


def scope_authors(finder: ChunkSearch, cap: int = 64) -> list[str]:
    """The authors (``name`` of messages) in the scope, for query rewriting."""
    data = finder.data()
    if data is not None:
        authors = data.authors
        found = set(authors) if finder.whole_entry else \
            {authors[r] for r in finder.rows().tolist()}
        return sorted(a for a in found if a)[:cap]
    rows = finder.conn.exec_driver_sql(SCOPE_AUTHORS, finder.sql_params(cap=cap))
    return sorted(r[0] for r in rows)


def scope_vectors(finder: ChunkSearch, query_vec: np.ndarray, cap: int) -> ScopeRows:
    data = finder.data()
    if data is not None:
        rows = finder.session_rows()[:cap]
        sims = data.sims(query_vec, None)[rows]  # per-row values: same as on the subset
        pieces = (_best_pieces(finder, query_vec)[rows].tolist()
                  if getattr(finder.settings, "sentence_max", False) else None)
        if len(rows) == data.n:  # every row: the columns in that order are kept per entry
            c = _ordered_columns(data)
            return ScopeRows(list(c["positions"]), list(c["indexes"]), list(c["sessions"]),
                             list(c["authors"]), list(c["lengths"]), sims.tolist(),
                             list(c["occurred"]), list(c["asks"]), pieces,
                             data.session_codes[rows], rows)
        c = _columns(data, rows)
        return ScopeRows(c["positions"], c["indexes"], c["sessions"], c["authors"],
                         c["lengths"], sims.tolist(), c["occurred"], c["asks"], pieces,
                         data.session_codes[rows], rows)
    params = finder.sql_params(q=vector_literal(query_vec), cap=cap)
    rows = finder.conn.exec_driver_sql(SCOPE_VECTORS, params).fetchall()
    return ScopeRows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                     [r[3] for r in rows], [int(r[4] or 0) for r in rows],
                     [float(r[5]) for r in rows], [r[6] for r in rows],
                     [bool(r[7]) for r in rows],
                     [float("nan") if r[8] is None else float(r[8]) for r in rows])


def _best_pieces(finder: ChunkSearch, query_vec: np.ndarray) -> np.ndarray:
    """Per row of the cached entry, the cosine of its best sentence vector (NaN for
    none)."""
    data = finder.data_parts()
    assert data is not None
    best = np.full(data.n, np.nan)
    p = data.pieces
    if p is not None and len(p.rows):
        sims = cosines(p.matrix, p.norms, query_vec)
        top = np.full(data.n, -np.inf)
        np.maximum.at(top, p.rows, sims)
        best = np.where(np.isfinite(top), top, np.nan)
    return best


def window_sum(x: np.ndarray, session: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the sum of ``x`` (a value or a vector per row) over rows within ``w`` of it
    in the same session (rows are ordered by session, then position), and how many rows
    that was. The ranker's turn windows, of scores and of unit vectors alike."""
    out = x.astype(np.float64, copy=True)
    count = np.ones(len(x))
    for d in range(1, w + 1):
        if d >= len(x):
            break
        same = session[d:] == session[:-d]
        out[:-d][same] += x[d:][same]
        out[d:][same] += x[:-d][same]
        count[:-d][same] += 1
        count[d:][same] += 1
    return out, count


def window_norms(finder: ChunkSearch, session: np.ndarray, width: int, cap: int
                 ) -> np.ndarray:
    """Per chunk of :func:`scope_vectors` (same order, same ``cap``), the norm of the sum
    of the unit vectors of the chunks within ``width`` rows of it in its session
    (``session``: a code per row). The cosine of a window's mean vector to a unit query is
    then the sum of the window's cosines over this norm. From the cached matrix when the
    scope has an entry (kept with it when every row is in), else in SQL."""
    data = finder.data()
    if data is not None:
        every = finder.whole_entry
        found = data.derived.get(("window_norms", width)) if every else None
        if found is not None and len(found) == len(session):
            return found
        rows = finder.session_rows()[:cap]
        norms = data.norms[rows].astype(np.float64)
        unit = data.matrix[rows].astype(np.float64) / np.where(norms > 0, norms, 1.0)[:, None]
        total = window_sum(unit, session, width)[0]
        out = np.sqrt(np.einsum("ij,ij->i", total, total))
        if every:
            data.derived[("window_norms", width)] = out
        return out
    rows = finder.conn.exec_driver_sql(SCOPE_WINDOW_NORMS,
                                       finder.sql_params(w=int(width), cap=cap))
    return np.array([float(r[0] or 0.0) for r in rows], dtype=np.float64)


def _columns(data: ScopeData, rows: np.ndarray) -> dict[str, list[Any]]:
    """The columns :class:`ScopeRows` holds, for ``rows`` of the cached data."""
    idx = rows.tolist()
    return {"positions": data.positions[rows].tolist(),
            "indexes": data.indexes[rows].tolist(),
            "sessions": [data.sessions[r] for r in idx],
            "authors": [data.authors[r] for r in idx],
            "lengths": data.lengths[rows].tolist(),
            "occurred": [data.occurred[r] for r in idx],
            "asks": [data.texts[r].rstrip(" \t\r\n").endswith("?") for r in idx]}


def _ordered_columns(data: ScopeData) -> dict[str, list[Any]]:
    """:func:`_columns` of every row in session order, built once per entry (a call
    then copies lists instead of rebuilding them row by row)."""
    found = data.derived.get("ordered_columns")
    if found is None:
        found = data.derived["ordered_columns"] = _columns(data, data.order)
    return found


def scope_tf(finder: ChunkSearch, rows: ScopeRows, terms: Sequence[str]) -> np.ndarray:
    """The (rows x terms) term frequencies of :func:`scope_vectors`' rows. From the cached
    entry's postings (row numbers mapped in one step) when ``rows`` came from it, else
    from :func:`scope_terms`' (position, index) pairs."""
    n = len(rows.positions)
    tf = np.zeros((n, len(terms)))
    data = finder.data()
    if data is not None and rows.entry_rows is not None and len(rows.entry_rows) == n:
        if data.terms is None:
            data.terms = read_terms(finder.conn, data, finder.scope.tenant,
                                    finder.scope.actors)
        where = np.full(data.n, -1, dtype=np.int64)
        where[rows.entry_rows] = np.arange(n)
        for j, t in enumerate(terms):
            found = data.terms.get(t)
            if found is None:
                continue
            at = where[found[0]]  # rows above the bound are not in ``rows``: -1
            keep = at >= 0
            tf[at[keep], j] = found[1][keep]
        return tf
    index = {k: i for i, k in enumerate(zip(rows.positions, rows.indexes, strict=True))}
    col = {t: j for j, t in enumerate(terms)}
    for pos, idx, lexeme, freq in scope_terms(finder, terms):
        i = index.get((pos, idx))
        if i is not None:
            tf[i, col[lexeme]] = freq
    return tf


def scope_terms(finder: ChunkSearch, terms: Sequence[str]
                ) -> list[tuple[int, int, str, int]]:
    if not terms:
        return []
    data = finder.data()
    if data is not None:
        if data.terms is None:
            data.terms = read_terms(finder.conn, data, finder.scope.tenant,
                                    finder.scope.actors)
        out: list[tuple[int, int, str, int]] = []
        for t in dict.fromkeys(terms):
            found = data.terms.get(t)
            if found is None:
                continue
            rows, freqs = found
            if not finder.whole_entry:
                keep = data.positions[rows] <= finder.bound
                rows, freqs = rows[keep], freqs[keep]
            out.extend(zip(data.positions[rows].tolist(), data.indexes[rows].tolist(),
                           [t] * len(rows), freqs.tolist(), strict=True))
        return out
    rows = finder.conn.exec_driver_sql(SCOPE_TERMS, finder.sql_params(terms=list(terms)))
    return [(r[0], r[1], r[2], int(r[3])) for r in rows]


def hits_by_key(finder: ChunkSearch, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int],
                                                                              Hit]:
    if not keys:
        return {}
    data = finder.data()
    if data is not None:
        out = {}
        for k in keys:
            r = data.key_index.get((int(k[0]), int(k[1])))
            if r is not None:
                out[(int(k[0]), int(k[1]))] = finder.hit(r)
        return out
    params = finder.sql_params(positions=[k[0] for k in keys],
                               indexes=[k[1] for k in keys])
    out = {}
    for row in finder.conn.exec_driver_sql(HITS_BY_KEY, params).fetchall():
        h = hit_from_row(row)
        out[h.key] = h
    return out

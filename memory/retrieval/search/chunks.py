"""ChunkSearch: the candidate queries on one scope of one chunks generation (vectors by
pgvector cosine, full text, neighbours, embeddings), from the scope cache when the store's
cache holds the scope, else in SQL. Nothing here decides what is relevant: that is
``ranking/``; nothing here decides what fits: ``context.py``.

Exact or approximate
--------------------
A scope (the actors' chunks in one generation) with at most
``settings.exact_search_max_chunks`` rows is searched exactly: every vector is compared,
in numpy over the scope cache (scopecache.py: the scope read once per store and checked by
two counts at every call; ~2 ms for 20k x 384 where the SQL scan through the btree on
``(tenant, generation, actor_id)`` took ~110 ms), or in SQL (``VECTOR_EXACT``, ordering by
``embedding <=> q`` on the untyped column, which no HNSW index serves) when the cache is
not used. Larger scopes order by ``embedding::vector(dim) <=> q``, the expression of the
generation's partial HNSW index, with ``hnsw.iterative_scan`` so the graph walk continues
until enough rows pass the scope filter; those results are re-sorted by exact distance.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from ...pg.vectors import to_array, vector_literal
from ..scopecache import LexemeMemo, ScopeCache, cache_key
from ..scopedata import Check, ScopeData
from ..scopeload import check as count_check
from ..settings import RetrievalSettings
from .hits import Hit, hit_from_row
from .scope import HIT_COLUMNS, SCOPE_WHERE, Generation, Scope, size_cap

SCOPE_SIZE = f"""
SELECT count(*) FROM (
  SELECT 1 FROM memory_chunks c WHERE {SCOPE_WHERE} LIMIT %(cap)s) s
"""

VECTOR_EXACT = f"""
SELECT {HIT_COLUMNS}, (c.embedding <=> %(q)s::vector) AS distance
  FROM memory_chunks c
 WHERE {SCOPE_WHERE}
 ORDER BY c.embedding <=> %(q)s::vector, c.event_position, c.chunk_index
 LIMIT %(k)s
"""

# {dim} and {generation} are integers from memory_projections, never user input; they are
# written into the statement so the planner can match the generation's partial HNSW index
# (``memory_chunks_hnsw_g<g>``, see memory/projections/chunks.py) even in a generic plan.
VECTOR_HNSW = """
SELECT {cols}, (c.embedding::vector({dim}) <=> %(q)s::vector({dim})) AS distance
  FROM memory_chunks c
 WHERE c.generation = {generation} AND {where}
 ORDER BY c.embedding::vector({dim}) <=> %(q)s::vector({dim})
 LIMIT %(k)s
"""

# The query's lexemes OR-ed (websearch/plainto would AND them, which a natural-language
# question rarely satisfies), cast straight to tsquery so they are not stemmed twice.
TEXT = f"""
WITH q AS (
  SELECT (SELECT string_agg(quote_literal(lex), ' | ')
            FROM (SELECT lex FROM unnest(tsvector_to_array(
                    to_tsvector(%(config)s::regconfig, %(query)s))) AS lex
                  LIMIT %(max_terms)s) t)::tsquery AS tq
)
SELECT {HIT_COLUMNS}, ts_rank_cd(c.tsv, q.tq) AS rank
  FROM memory_chunks c, q
 WHERE {SCOPE_WHERE} AND c.tsv @@ q.tq
 ORDER BY rank DESC, c.event_position, c.chunk_index
 LIMIT %(k)s
"""

# Both searches in one round trip (the vector part is VECTOR_EXACT or VECTOR_HNSW).
BOTH = """
SELECT 'v', v.* FROM ({vector}) v
UNION ALL
SELECT 't', t.* FROM ({text}) t
"""

HNSW_SETTINGS = """
SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan', %s, true),
       set_config('hnsw.max_scan_tuples', %s, true)
"""

NEIGHBOURS = f"""
SELECT h.pos, h.idx, n.* FROM unnest(%(positions)s::bigint[], %(indexes)s::int[],
                                     %(sessions)s::text[]) AS h(pos, idx, sess)
CROSS JOIN LATERAL (
  (SELECT {HIT_COLUMNS} FROM memory_chunks c
    WHERE c.tenant = %(tenant)s AND c.generation = %(generation)s
      AND c.actor_id = ANY(%(actors)s) AND c.session_id = h.sess
      AND c.event_position < h.pos
    ORDER BY c.event_position DESC, c.chunk_index DESC LIMIT %(w)s)
  UNION ALL
  (SELECT {HIT_COLUMNS} FROM memory_chunks c
    WHERE c.tenant = %(tenant)s AND c.generation = %(generation)s
      AND c.actor_id = ANY(%(actors)s) AND c.session_id = h.sess
      AND c.event_position > h.pos AND c.event_position <= %(bound)s
    ORDER BY c.event_position, c.chunk_index LIMIT %(w)s)
) n
"""

EMBEDDINGS = """
SELECT c.event_position, c.chunk_index, c.embedding FROM memory_chunks c
 WHERE c.tenant = %(tenant)s AND c.generation = %(generation)s
   AND (c.event_position, c.chunk_index) IN (SELECT * FROM unnest(%(positions)s::bigint[],
                                                                %(indexes)s::int[]))
"""

_SAFE_SETTING = re.compile(r"^[a-z_]+$")



class ChunkSearch:
    """Searches one scope of one chunks generation on one connection, bounded by position.

    ``plan`` tells which path the vector search took ("exact" or "hnsw") and the scope
    size it saw (capped at the threshold + 1).

    With ``cache`` (the store's :class:`ScopeCache`), a scope below :func:`size_cap` is
    read from it (validated in this connection's snapshot): exact vector search, the
    whole-scope ranker's data, hits by key, neighbours and embeddings then cost no round
    trip. Without one every read is SQL (the reference the cache is tested against);
    larger scopes always are.
    """

    def __init__(self, conn: sa.Connection, scope: Scope, gen: Generation, bound: int,
                 settings: RetrievalSettings, *, cache: ScopeCache | None = None) -> None:
        self.conn = conn
        self.scope = scope
        self.gen = gen
        self.bound = bound
        self.settings = settings
        self.plan: dict[str, Any] = {}
        self.cache = cache
        self.lexemes = cache.lexemes if cache is not None else LexemeMemo()
        """Where the lexemes of texts are remembered (the store's, with a cache)."""
        self._params = {"tenant": scope.tenant, "generation": gen.generation,
                        "actors": list(scope.actors), "bound": bound}
        self._data: ScopeData | None = None
        self._rows: np.ndarray | None = None
        self._checked = False
        self._check: tuple[Check, ScopeData | None] | None = None

    def sql_params(self, **extra: Any) -> dict[str, Any]:
        """The parameters of ``SCOPE_WHERE`` (tenant, generation, actors, bound), with
        ``extra``: a fresh dict for one statement."""
        return {**self._params, **extra}

    # -- the scope cache -------------------------------------------------------------------

    def attach(self, check: Check, probed: ScopeData | None) -> None:
        """Hand over the counts the start-of-call statement made (saves a round trip)."""
        self._check = (check, probed)

    def data(self) -> ScopeData | None:
        """The scope's cached rows, valid in this snapshot, or None (cache off, or a scope
        of :func:`size_cap` chunks or more). Read at most once per search."""
        if self._checked:
            return self._data
        self._checked = True
        cache = self.cache
        if cache is None:
            return None
        tenant, actors = self.scope.tenant, self.scope.actors
        key = cache_key(self.conn, tenant, actors)
        cap = size_cap(self.settings)
        if self._check is None:
            probed = cache.probe(key)
            check = count_check(self.conn, probed, tenant, actors, self.gen.generation, cap)
        else:
            check, probed = self._check
        if check.total >= cap:
            return None
        data = cache.fetch(self.conn, key, probed, tenant, actors, self.gen.generation,
                           self.gen.position, check,
                           int(getattr(self.settings, "scope_cache_bytes", 0)),
                           parts=check.total <= self.settings.scope_rank_max_chunks)
        self._data = data
        self._rows = data.rows_at(self.bound)
        if "scope_size" not in self.plan:
            self.plan["scope_size"] = data.n if self._rows is None else len(self._rows)
        self.plan["scope_cache"] = True
        return data

    def data_parts(self) -> ScopeData | None:
        """:meth:`data` with its sentence vectors and vocabulary read (a scope too large
        for whole-scope ranking is cached without them)."""
        data = self.data()
        if data is not None and data.pieces is None and self.cache is not None:
            self.cache.ensure_parts(self.conn, data, self.scope.tenant, self.scope.actors,
                                    int(getattr(self.settings, "scope_cache_bytes", 0)))
        return data

    @property
    def whole_entry(self) -> bool:
        """Whether the bound keeps every row of :meth:`data` (values computed over them
        all may then be kept with the entry)."""
        return self._rows is None

    def session_rows(self) -> np.ndarray:
        """Row numbers (in :meth:`data`) at or below the bound, in session order (the
        entry's ``order``: by session, then position)."""
        data = self.data()
        assert data is not None
        if self._rows is None:
            return data.order
        return data.order[data.positions[data.order] <= self.bound]

    def rows(self) -> np.ndarray:
        """Row numbers (in :meth:`data`) of the chunks at or below the bound."""
        data = self.data()
        assert data is not None
        return np.arange(data.n) if self._rows is None else self._rows

    def hit(self, r: int) -> Hit:
        """A fresh :class:`Hit` for row ``r`` of the cached data (rankers write into
        ``parts``, so a hit is never shared between calls)."""
        d = self._data
        assert d is not None
        return Hit(event_position=int(d.positions[r]), chunk_index=int(d.indexes[r]),
                   event_id=d.event_ids[r], session_id=d.sessions[r],
                   actor_id=d.actor_ids[r], role=d.roles[r], author=d.authors[r],
                   occurred_at=d.occurred[r], text=d.texts[r])

    # -- searches --------------------------------------------------------------------------

    def scope_size(self) -> int:
        """Chunks in scope, counted up to the exact-search threshold + 1 (cheap); counted
        once per search (:func:`state` or the scope cache may have counted it already)."""
        if "scope_size" in self.plan:
            return int(self.plan["scope_size"])
        if self.data() is not None:
            return int(self.plan["scope_size"])
        cap = size_cap(self.settings)
        n = int(self.conn.exec_driver_sql(SCOPE_SIZE, {**self._params, "cap": cap})
                .scalar_one())
        self.plan["scope_size"] = n
        return n

    def _cached_vector(self, query_vec: np.ndarray, k: int) -> list[Hit] | None:
        """Exact top ``k`` from the cached vectors (ties by position, as in SQL)."""
        data = self.data()
        if data is None:
            return None
        rows = self.rows()
        sims = data.sims(query_vec, None)  # every row (no copy of the matrix), then picked
        if self._rows is not None:
            sims = sims[self._rows]
        if len(sims) > k:  # the k best (and anything tied with the k-th), then sorted
            kth = np.partition(sims, len(sims) - k)[len(sims) - k]
            keep = np.flatnonzero(sims >= kth)
        else:
            keep = np.arange(len(sims))
        positions, indexes = data.positions[rows[keep]], data.indexes[rows[keep]]
        order = keep[np.lexsort((indexes, positions, -sims[keep]))[:k]]
        hits = []
        for rank, i in enumerate(order, start=1):
            h = self.hit(int(rows[i]))
            h.parts["vector_sim"] = float(sims[i])
            h.parts["vector_rank"] = float(rank)
            hits.append(h)
        return hits

    def vector(self, query_vec: np.ndarray, k: int | None = None,
               exact: bool | None = None) -> list[Hit]:
        k = k or self.settings.vector_candidates
        if exact is None:
            exact = (self.gen.dim is None
                     or self.scope_size() <= self.settings.exact_search_max_chunks)
        self.plan["vector"] = "exact" if exact else "hnsw"
        if exact:
            cached = self._cached_vector(query_vec, k)
            if cached is not None:
                return cached
        params = {**self._params, "q": vector_literal(query_vec), "k": k}
        if exact:
            rows = self.conn.exec_driver_sql(VECTOR_EXACT, params).fetchall()
        else:
            self._hnsw_settings()
            sql = VECTOR_HNSW.format(cols=HIT_COLUMNS, dim=int(self.gen.dim or 0),
                                     generation=int(self.gen.generation), where=SCOPE_WHERE)
            rows = sorted(self.conn.exec_driver_sql(sql, params).fetchall(),
                          key=lambda r: (r[9], r[0], r[1]))
        return self._vector_hits(rows)

    def both(self, query: str, query_vec: np.ndarray, *, exact: bool
             ) -> tuple[list[Hit], list[Hit]]:
        """The vector and the full-text candidates, in one round trip (the vector part
        from the scope cache when it has the scope)."""
        s = self.settings
        self.plan["vector"] = "exact" if exact else "hnsw"
        if exact:
            cached = self._cached_vector(query_vec, s.vector_candidates)
            if cached is not None:
                return cached, self.text(query)
        params = {**self._params, "q": vector_literal(query_vec), "k": s.vector_candidates,
                  "kt": s.text_candidates, "query": query, "config": s.text_search_config,
                  "max_terms": s.max_query_terms}
        if exact:
            vector_sql = VECTOR_EXACT
        else:
            self._hnsw_settings()
            vector_sql = VECTOR_HNSW.format(cols=HIT_COLUMNS, dim=int(self.gen.dim or 0),
                                            generation=int(self.gen.generation),
                                            where=SCOPE_WHERE)
        sql = BOTH.format(vector=vector_sql, text=TEXT.replace("%(k)s", "%(kt)s"))
        rows = self.conn.exec_driver_sql(sql, params).fetchall()
        vrows = [r[1:] for r in rows if r[0] == "v"]
        trows = [r[1:] for r in rows if r[0] == "t"]
        if not exact:
            vrows.sort(key=lambda r: (r[9], r[0], r[1]))
        return self._vector_hits(vrows), self._text_hits(trows)

    def _hnsw_settings(self) -> None:
        s = self.settings
        if not _SAFE_SETTING.match(s.hnsw_iterative_scan):
            raise ValueError(f"bad hnsw_iterative_scan {s.hnsw_iterative_scan!r}")
        self.conn.exec_driver_sql(HNSW_SETTINGS, (
            str(int(s.hnsw_ef_search)), s.hnsw_iterative_scan,
            str(int(s.hnsw_max_scan_tuples))))

    @staticmethod
    def _vector_hits(rows: Sequence[Sequence[Any]]) -> list[Hit]:
        hits = []
        for rank, row in enumerate(rows, start=1):
            h = hit_from_row(row)
            h.parts["vector_sim"] = 1.0 - float(row[9])
            h.parts["vector_rank"] = float(rank)
            hits.append(h)
        return hits

    @staticmethod
    def _text_hits(rows: Sequence[Sequence[Any]]) -> list[Hit]:
        hits = []
        for rank, row in enumerate(rows, start=1):
            h = hit_from_row(row)
            h.parts["text_rank_cd"] = float(row[9])
            h.parts["text_rank"] = float(rank)
            hits.append(h)
        return hits

    def text(self, query: str, k: int | None = None) -> list[Hit]:
        params = {**self._params, "query": query, "k": k or self.settings.text_candidates,
                  "config": self.settings.text_search_config,
                  "max_terms": self.settings.max_query_terms}
        rows = self.conn.exec_driver_sql(TEXT, params).fetchall()
        return self._text_hits(rows)

    def neighbours(self, hits: Sequence[Hit], window: int) -> dict[tuple[int, int], list[Hit]]:
        """The chunks of the ``window`` turns before and after each hit, in its session."""
        if not hits or window <= 0:
            return {}
        out: dict[tuple[int, int], list[Hit]] = {h.key: [] for h in hits}
        data = self.data()
        if data is not None:
            self._cached_neighbours(data, hits, window, out)
            return out
        params = {**self._params, "w": window,
                  "positions": [h.event_position for h in hits],
                  "indexes": [h.chunk_index for h in hits],
                  "sessions": [h.session_id for h in hits]}
        for row in self.conn.exec_driver_sql(NEIGHBOURS, params).fetchall():
            out[(row[0], row[1])].append(hit_from_row(row[2:]))
        for lst in out.values():
            lst.sort(key=lambda h: h.key)
        return out

    def _cached_neighbours(self, data: ScopeData, hits: Sequence[Hit],
                           window: int, out: dict[tuple[int, int], list[Hit]]) -> None:
        """As :data:`NEIGHBOURS`: up to ``window`` chunks of the hit's session before it
        and after it (the latter at or below the bound), from the cached rows."""
        where = data.order_rank()
        for h in hits:
            r = data.key_index.get(h.key)
            if r is None:
                continue
            found = data.neighbour_rows(r, window, self.bound, where)
            out[h.key] = sorted((self.hit(rj) for rj in found), key=lambda x: x.key)

    def embeddings(self, hits: Sequence[Hit]) -> None:
        """Fill ``hit.embedding`` (for MMR) in one round trip (none from the cache)."""
        todo = [h for h in hits if h.embedding is None]
        if not todo:
            return
        data = self.data()
        if data is not None:
            for h in todo:
                r = data.key_index.get(h.key)
                h.embedding = None if r is None else np.array(data.matrix[r])
            return
        params = {"tenant": self.scope.tenant, "generation": self.gen.generation,
                  "positions": [h.event_position for h in todo],
                  "indexes": [h.chunk_index for h in todo]}
        found = {}
        for pos, idx, emb in self.conn.exec_driver_sql(EMBEDDINGS, params).fetchall():
            found[(pos, idx)] = to_array(emb)
        for h in todo:
            h.embedding = found.get(h.key)

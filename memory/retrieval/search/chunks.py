"""Candidate search: the scope first, then vectors (pgvector, cosine) and full text.

Everything here reads the projections (``memory_chunks``, ``memory_summaries``) or the log
itself, always filtered by tenant, live generation, actor(s) and an upper bound on the
event position (so a context can be rebuilt "as of" a position). Nothing here decides
what is relevant: that is ``ranking/``; nothing here decides what fits: ``context.py``.

Exact or approximate
--------------------
A scope (the actors' chunks in one generation) with at most
``settings.exact_search_max_chunks`` rows is searched exactly: every vector is compared,
in numpy over the scope cache (``scopedata.py``: the scope read once per process and
checked by two counts at every call; ~2 ms for 20k x 384 where the SQL scan through the
btree on ``(tenant, generation, actor_id)`` took ~110 ms), or in SQL (``VECTOR_EXACT``,
ordering by ``embedding <=> q`` on the untyped column, which no HNSW index serves) when the
cache is not used. Larger scopes order by ``embedding::vector(dim) <=> q``, the expression
of the generation's partial HNSW index, with ``hnsw.iterative_scan`` so the graph walk
continues until enough rows pass the scope filter; those results are re-sorted by exact
distance.

Round trips of a call (context.py): one statement for the bound, the live generations,
the scope cache's check and the query's lexemes (:data:`STATE`); the session's tail from
the log; then only what the cache cannot answer: rows new since the cached entry, the
full-text candidates when the ranker reads them (not for whole-scope ranking), the
summary when older turns do not fit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import numpy as np
import sqlalchemy as sa

from ..log import Log, RecordedEvent
from ..log import sql as log_sql
from . import scopedata
from .settings import RetrievalSettings

CHUNKS_PROJECTION = "chunks"
SUMMARIES_PROJECTION = "summaries"

TURN_TYPES = ("message", "tool_call", "tool_result", "note")
"""Event types shown as turns of a session (a ``context_assembled`` event is not)."""


@dataclass(frozen=True)
class Scope:
    """Who a context is for. ``actors`` are the actors whose memories are searched: the
    actor alone unless the caller asks for more. The tenant is never widened."""

    tenant: str
    actor: str
    session: str
    actors: tuple[str, ...]


@dataclass(frozen=True)
class Generation:
    name: str
    generation: int
    position: int
    config: dict[str, Any]

    @property
    def dim(self) -> int | None:
        for key in ("dim", "embedding_dim", "dimension"):
            if isinstance(self.config.get(key), int):
                return int(self.config[key])
        model = self.config.get("model") or self.config.get("embedder")
        if isinstance(model, dict) and isinstance(model.get("dim"), int):
            return int(model["dim"])
        return None

    @property
    def model_name(self) -> str | None:
        model = self.config.get("model") or self.config.get("embedder")
        if isinstance(model, dict):
            return model.get("name")
        return model if isinstance(model, str) else self.config.get("model_name")


@dataclass
class Hit:
    """One candidate chunk with the raw score parts each search gave it."""

    event_position: int
    chunk_index: int
    event_id: UUID
    session_id: str
    actor_id: str
    role: str | None
    author: str | None
    occurred_at: datetime
    text: str
    parts: dict[str, float] = field(default_factory=dict)
    embedding: np.ndarray | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.event_position, self.chunk_index)


NeighbourLookup = Callable[[Sequence[Hit], int], dict[tuple[int, int], list[Hit]]]
"""Given hits and a window w, the chunks of the w events before and after each hit in its
session (keyed by the hit's key)."""


# -- projections state ---------------------------------------------------------------------

LIVE = """
SELECT name, generation, position, config FROM memory_projections
 WHERE status = 'live' AND name = ANY(%s)
"""

GENERATION = """
SELECT name, generation, position, config FROM memory_projections
 WHERE name = %s AND generation = %s
"""


def live_generations(conn: sa.Connection) -> dict[str, Generation]:
    rows = conn.exec_driver_sql(LIVE, ([CHUNKS_PROJECTION, SUMMARIES_PROJECTION],)).fetchall()
    return {r[0]: Generation(r[0], r[1], r[2], r[3] or {}) for r in rows}


def generation(conn: sa.Connection, name: str, number: int) -> Generation | None:
    row = conn.exec_driver_sql(GENERATION, (name, number)).fetchone()
    return Generation(row[0], row[1], row[2], row[3] or {}) if row else None


# -- the log: recent turns, read-your-writes -----------------------------------------------

HEAD_TENANT = log_sql.HEAD_TENANT

SESSION_TAIL = f"""
SELECT {log_sql.EVENT_COLUMNS} FROM memory_events
 WHERE tenant = %s AND session_id = %s AND actor_id = %s AND position <= %s
   AND version < %s AND type = ANY(%s)
 ORDER BY version DESC LIMIT %s
"""


def session_tail(conn: sa.Connection, log: Log, scope: Scope, bound: int,
                 before_version: int, limit: int) -> list[RecordedEvent]:
    """The session's turn events at or before ``bound``, newest first, older than
    ``before_version``: straight from the log, so an append is visible at once. Sealed
    payloads are opened by the log (a forgotten one comes back empty)."""
    rows = conn.exec_driver_sql(SESSION_TAIL, (
        scope.tenant, scope.session, scope.actor, bound, before_version, list(TURN_TYPES),
        limit)).fetchall()
    opener = getattr(log, "recorded_events", None)
    if opener is not None:
        return list(opener(conn, rows))
    return [log_sql.to_recorded(r, log.registry) for r in rows]


# -- summaries -----------------------------------------------------------------------------

SUMMARY = """
SELECT covers_position, events_covered, text, source_event_ids
  FROM memory_summaries
 WHERE tenant = %s AND generation = %s AND session_id = %s AND actor_id = %s
   AND covers_position <= %s
 ORDER BY covers_position DESC LIMIT 1
"""


@dataclass(frozen=True)
class SummaryRow:
    covers_position: int
    events_covered: int
    text: str
    source_event_ids: tuple[UUID, ...]


def session_summary(conn: sa.Connection, scope: Scope, gen: Generation, bound: int
                    ) -> SummaryRow | None:
    """The newest summary version of the session that covers no event after ``bound``."""
    row = conn.exec_driver_sql(SUMMARY, (scope.tenant, gen.generation, scope.session,
                                         scope.actor, bound)).fetchone()
    if row is None:
        return None
    return SummaryRow(row[0], row[1], row[2], tuple(row[3] or ()))


# -- chunks --------------------------------------------------------------------------------

HIT_COLUMNS = """c.event_position, c.chunk_index, c.event_id, c.session_id, c.actor_id,
       c.role, c.author, c.occurred_at, c.text"""

SCOPE_WHERE = """c.tenant = %(tenant)s AND c.generation = %(generation)s
   AND c.actor_id = ANY(%(actors)s) AND c.event_position <= %(bound)s"""

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

# Where a call starts, in one round trip: the log bound (the tenant's head, or as_of if
# lower), the live generations, the scope's check for the scope cache (scopedata.py: its
# rows in the live chunks generation, counted up to the cap by an index-only scan, and the
# rows above the cached entry's ``upto``) and the query's lexemes.
STATE = f"""
WITH b AS (
  SELECT LEAST(coalesce(max(position), 0), %(as_of)s::bigint) AS bound
    FROM memory_events WHERE tenant = %(tenant)s),
g AS (
  SELECT name, generation, position, config, created_at FROM memory_projections
   WHERE status = 'live' AND name = ANY(%(names)s))
SELECT b.bound,
       (SELECT json_agg(json_build_array(name, generation, position, config,
                                         created_at::text)) FROM g),
       (SELECT count(*) FROM (
          SELECT 1 FROM memory_chunks c, g
           WHERE g.name = '{CHUNKS_PROJECTION}' AND c.tenant = %(tenant)s
             AND c.generation = g.generation AND c.actor_id = ANY(%(actors)s)
           LIMIT %(cap)s) s),
       (SELECT count(*) FROM memory_chunks c
         WHERE c.tenant = %(tenant)s AND c.generation = %(cgen)s
           AND c.actor_id = ANY(%(actors)s) AND c.event_position > %(cupto)s),
       (SELECT array_agg(lex) FROM unnest(tsvector_to_array(
          to_tsvector(%(config)s::regconfig, %(query)s))) AS lex),
       (SELECT e.occurred_at FROM memory_events e
         WHERE e.tenant = %(tenant)s AND e.position <= b.bound
         ORDER BY e.position DESC LIMIT 1)
  FROM b
"""


def size_cap(settings: RetrievalSettings) -> int:
    """Scope sizes are counted up to this: one more than the largest size any decision
    compares them with (so counting a huge scope stays cheap). Scopes below it are read
    whole into the scope cache (scopedata.py)."""
    return max(settings.exact_search_max_chunks,
               int(getattr(settings, "scope_rank_max_chunks", 0) or 0)) + 1


@dataclass(frozen=True)
class State:
    bound: int
    generations: dict[str, Generation]
    check: scopedata.Check | None
    """The scope cache's counts (None without a live chunks generation)."""
    probed: scopedata.ScopeData | None
    """The cached entry ``check`` was counted against."""
    lexemes: list[str]
    """The query's lexemes, as :func:`query_lexemes` gives them."""
    bound_time: datetime | None
    """When the tenant's last event at or before the bound happened (recency's 'now')."""


def state(conn: sa.Connection, scope: Scope, as_of: int | None,
          settings: RetrievalSettings, query: str = "") -> State:
    key = scopedata.cache_key(conn, scope.tenant, scope.actors)
    probed = scopedata.probe(key)
    cgen, cupto = scopedata.probe_params(probed)
    row = conn.exec_driver_sql(STATE, {
        "as_of": as_of, "tenant": scope.tenant, "actors": list(scope.actors),
        "names": [CHUNKS_PROJECTION, SUMMARIES_PROJECTION],
        "cap": size_cap(settings), "cgen": cgen, "cupto": cupto,
        "config": settings.text_search_config, "query": query}).one()
    gens = {r[0]: Generation(r[0], int(r[1]), int(r[2]), r[3] or {}) for r in row[1] or []}
    created = {r[0]: str(r[4]) for r in row[1] or []}
    chunks = gens.get(CHUNKS_PROJECTION)
    check = None
    if chunks is not None:
        check = scopedata.Check(total=int(row[2]),
                                newer=int(row[3]) if cgen == chunks.generation else 0,
                                created=created[CHUNKS_PROJECTION])
    lexemes = list(row[4] or [])
    remember_lexemes(conn, settings.text_search_config, query, lexemes)
    return State(bound=int(row[0]), generations=gens, check=check, probed=probed,
                 lexemes=lexemes, bound_time=row[5])


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


def hit_from_row(row: Sequence[Any]) -> Hit:
    return Hit(event_position=row[0], chunk_index=row[1], event_id=row[2], session_id=row[3],
               actor_id=row[4], role=row[5], author=row[6], occurred_at=row[7], text=row[8])


def vector_literal(vec: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in np.asarray(vec, dtype=np.float32)) + "]"


class ChunkSearch:
    """Searches one scope of one chunks generation on one connection, bounded by position.

    ``plan`` tells which path the vector search took ("exact" or "hnsw") and the scope
    size it saw (capped at the threshold + 1).

    A scope below :func:`size_cap` is read from the scope cache (:mod:`.scopedata`,
    validated in this connection's snapshot): exact vector search, the whole-scope
    ranker's data, hits by key, neighbours and embeddings then cost no round trip.
    ``use_cache=False`` keeps every read in SQL (the reference the cache is tested
    against); larger scopes always are.
    """

    def __init__(self, conn: sa.Connection, scope: Scope, gen: Generation, bound: int,
                 settings: RetrievalSettings, *, use_cache: bool = True) -> None:
        self.conn = conn
        self.scope = scope
        self.gen = gen
        self.bound = bound
        self.settings = settings
        self.plan: dict[str, Any] = {}
        self._params = {"tenant": scope.tenant, "generation": gen.generation,
                        "actors": list(scope.actors), "bound": bound}
        self.use_cache = use_cache
        self._data: scopedata.ScopeData | None = None
        self._rows: np.ndarray | None = None
        self._checked = False
        self._check: tuple[scopedata.Check, scopedata.ScopeData | None] | None = None

    # -- the scope cache -------------------------------------------------------------------

    def attach(self, check: scopedata.Check, probed: scopedata.ScopeData | None) -> None:
        """Hand over the counts the start-of-call statement made (saves a round trip)."""
        self._check = (check, probed)

    def data(self) -> scopedata.ScopeData | None:
        """The scope's cached rows, valid in this snapshot, or None (cache off, or a scope
        of :func:`size_cap` chunks or more). Read at most once per search."""
        if self._checked:
            return self._data
        self._checked = True
        if not self.use_cache:
            return None
        tenant, actors = self.scope.tenant, self.scope.actors
        key = scopedata.cache_key(self.conn, tenant, actors)
        cap = size_cap(self.settings)
        if self._check is None:
            probed = scopedata.probe(key)
            check = scopedata.check(self.conn, probed, tenant, actors, self.gen.generation,
                                    cap)
        else:
            check, probed = self._check
        if check.total >= cap:
            return None
        data = scopedata.fetch(self.conn, key, probed, tenant, actors, self.gen.generation,
                               self.gen.position, check,
                               int(getattr(self.settings, "scope_cache_bytes", 0)),
                               parts=check.total <= self.settings.scope_rank_max_chunks)
        self._data = data
        self._rows = data.rows_at(self.bound)
        if "scope_size" not in self.plan:
            self.plan["scope_size"] = data.n if self._rows is None else len(self._rows)
        self.plan["scope_cache"] = True
        return data

    def data_parts(self) -> scopedata.ScopeData | None:
        """:meth:`data` with its sentence vectors and vocabulary read (a scope too large
        for whole-scope ranking is cached without them)."""
        data = self.data()
        if data is not None and data.pieces is None:
            scopedata.ensure_parts(self.conn, data, self.scope.tenant, self.scope.actors,
                                   int(getattr(self.settings, "scope_cache_bytes", 0)))
        return data

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

    def _cached_neighbours(self, data: scopedata.ScopeData, hits: Sequence[Hit],
                           window: int, out: dict[tuple[int, int], list[Hit]]) -> None:
        """As :data:`NEIGHBOURS`: up to ``window`` chunks of the hit's session before it
        and after it (the latter at or below the bound), from the cached rows."""
        order = data.order
        where = np.empty(data.n, dtype=np.int64)
        where[order] = np.arange(data.n)
        for h in hits:
            r = data.key_index.get(h.key)
            if r is None:
                continue
            i = int(where[r])
            code = data.session_codes[r]
            found: list[int] = []
            j = i - 1
            while j >= 0 and len(found) < window:
                rj = int(order[j])
                if data.session_codes[rj] != code:
                    break
                if data.positions[rj] != h.event_position:  # other events only
                    found.append(rj)  # earlier rows of the session are below the bound
                j -= 1
            after = 0
            j = i + 1
            while j < data.n and after < window:
                rj = int(order[j])
                if data.session_codes[rj] != code or data.positions[rj] > self.bound:
                    break
                if data.positions[rj] != h.event_position:
                    found.append(rj)
                    after += 1
                j += 1
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


def to_array(value: Any) -> np.ndarray:
    """A vector column as float32, whether the connection has pgvector's types registered
    (a ``Vector`` or an array) or not (the text ``[1,2,...]``)."""
    if isinstance(value, str):
        return np.asarray([float(x) for x in value.strip("[]").split(",") if x],
                          dtype=np.float32)
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float32)


def merge(*lists: Sequence[Hit]) -> list[Hit]:
    """One hit per chunk, score parts of every search that found it merged, in a stable
    order (first seen)."""
    merged: dict[tuple[int, int], Hit] = {}
    for hits in lists:
        for h in hits:
            if h.key in merged:
                merged[h.key].parts.update(h.parts)
            else:
                merged[h.key] = h
    return list(merged.values())


# -- the query's lexemes ------------------------------------------------------------------

QUERY_LEXEMES = """
SELECT lex FROM unnest(tsvector_to_array(to_tsvector(%(config)s::regconfig, %(query)s))) lex
"""

_LEXEMES: dict[tuple[str, str, str], list[str]] = {}
_LEXEMES_MAX = 4096
"""to_tsvector's lexemes of recent texts (queries, the scope's author names), per database
and configuration: a pure function of the text, so a query repeated, or the author names
of every call on one scope, cost no round trip."""


def remember_lexemes(conn: sa.Connection, config: str, text: str, lexemes: list[str]) -> None:
    if len(_LEXEMES) >= _LEXEMES_MAX:
        _LEXEMES.clear()  # crude but bounded; the texts come back on the next call
    _LEXEMES[(conn.engine.url.render_as_string(hide_password=True), config, text)] = \
        list(lexemes)


def known_lexemes(conn: sa.Connection, config: str, text: str) -> list[str] | None:
    """The remembered lexemes of ``text`` (:func:`remember_lexemes`), or None."""
    return _LEXEMES.get((conn.engine.url.render_as_string(hide_password=True), config, text))


def query_lexemes(finder: ChunkSearch, query: str) -> list[str]:
    """The query's lexemes as the chunks' tsvector would hold them (stemmed, no stop
    words), distinct, in the order Postgres gives them, at most ``max_query_terms``."""
    config = finder.settings.text_search_config
    key = (finder.conn.engine.url.render_as_string(hide_password=True), config, query)
    found = _LEXEMES.get(key)
    if found is None:
        rows = finder.conn.exec_driver_sql(QUERY_LEXEMES, {
            "config": config, "query": query}).fetchall()
        found = [r[0] for r in rows]
        remember_lexemes(finder.conn, config, query, found)
    return list(found)[: finder.settings.max_query_terms]

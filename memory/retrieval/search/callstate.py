"""Where a call starts, in one round trip: the log bound, the live generations, the scope
cache's check, the query's lexemes and whether the session's view may differ from its own
events (:data:`STATE`).

Round trips of a call (retrieval/context.py): this statement; the session's view
(memory/retrieval/sessionview.py) only when this statement says a fork or a retraction
may shape it; the session's tail from the log; then only what the scope cache cannot
answer: rows new since the cached entry, the full-text candidates when the ranker reads
them (not for whole-scope ranking), the summary when older turns do not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from ...log import sql as log_sql
from ..scopecache import ScopeCache, cache_key
from ..scopedata import Check, ScopeData, probe_params
from ..settings import RetrievalSettings
from .scope import CHUNKS_PROJECTION, SUMMARIES_PROJECTION, Generation, Scope, size_cap

# Where a call starts, in one round trip: the log bound (the tenant's head, or as_of if
# lower), the live generations, the scope's check for the scope cache (scopecache.py: its
# rows in the live chunks generation, counted up to the cap by an index-only scan, and the
# rows above the cached entry's ``upto``), the query's lexemes, and whether the session's
# view may be shaped by a fork or a retraction at or below the bound (memory/log/sql.py,
# ``view_may_filter``: three index probes, false for a session never forked in a scope
# without retractions, which then reads no view).
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
         ORDER BY e.position DESC LIMIT 1),
       {log_sql.view_may_filter("b.bound")}
  FROM b
"""


@dataclass(frozen=True)
class State:
    """What :data:`STATE` found."""

    bound: int
    generations: dict[str, Generation]
    check: Check | None
    """The scope cache's counts (None without a live chunks generation)."""
    probed: ScopeData | None
    """The cached entry ``check`` was counted against."""
    lexemes: list[str]
    """The query's lexemes, as :func:`query_lexemes` gives them."""
    bound_time: datetime | None
    """When the tenant's last event at or before the bound happened (recency's 'now')."""
    views: bool
    """Whether a fork or a retraction at or below the bound may shape the session's view
    (the session's, or the searched actors'); when False the view is the session's own
    events and hides nothing, and the call does not read it."""


def state(conn: sa.Connection, scope: Scope, as_of: int | None,
          settings: RetrievalSettings, query: str = "", cache: ScopeCache | None = None
          ) -> State:
    """Run :data:`STATE`; ``cache`` (the store's) gives the entry to check and remembers
    the query's lexemes. Without one nothing is probed (the counts still come back)."""
    probed = cache.probe(cache_key(conn, scope.tenant, scope.actors)) \
        if cache is not None else None
    cgen, cupto = probe_params(probed)
    row = conn.exec_driver_sql(STATE, {
        "as_of": as_of, "tenant": scope.tenant, "session": scope.session,
        "actors": list(scope.actors),
        "names": [CHUNKS_PROJECTION, SUMMARIES_PROJECTION],
        "cap": size_cap(settings), "cgen": cgen, "cupto": cupto,
        "config": settings.text_search_config, "query": query}).one()
    gens = {r[0]: Generation(r[0], int(r[1]), int(r[2]), r[3] or {}) for r in row[1] or []}
    created = {r[0]: str(r[4]) for r in row[1] or []}
    chunks = gens.get(CHUNKS_PROJECTION)
    check = None
    if chunks is not None:
        check = Check(total=int(row[2]),
                                newer=int(row[3]) if cgen == chunks.generation else 0,
                                created=created[CHUNKS_PROJECTION])
    lexemes = list(row[4] or [])
    if cache is not None:
        cache.lexemes.put(conn, settings.text_search_config, query, lexemes)
    return State(bound=int(row[0]), generations=gens, check=check, probed=probed,
                 lexemes=lexemes, bound_time=row[5], views=bool(row[6]))

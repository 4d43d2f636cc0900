"""Who and what a search covers: the :class:`Scope` (tenant, actor, session, the actors
searched), the projections' :class:`Generation` it reads, and the SQL filter every chunk
query applies (tenant, live generation, actors, an upper bound on the event position, so a
context can be rebuilt "as of" a position).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..settings import RetrievalSettings

CHUNKS_PROJECTION = "chunks"
SUMMARIES_PROJECTION = "summaries"


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
    """One generation of a projection: its number, checkpoint and config."""

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


LIVE = """
SELECT name, generation, position, config FROM memory_projections
 WHERE status = 'live' AND name = ANY(%s)
"""

GENERATION = """
SELECT name, generation, position, config FROM memory_projections
 WHERE name = %s AND generation = %s
"""


def live_generations(conn: sa.Connection) -> dict[str, Generation]:
    """The live generation of each projection retrieval reads."""
    rows = conn.exec_driver_sql(LIVE, ([CHUNKS_PROJECTION, SUMMARIES_PROJECTION],)).fetchall()
    return {r[0]: Generation(r[0], r[1], r[2], r[3] or {}) for r in rows}


def generation(conn: sa.Connection, name: str, number: int) -> Generation | None:
    """Generation ``number`` of projection ``name`` (a recorded context's pin), or None."""
    row = conn.exec_driver_sql(GENERATION, (name, number)).fetchone()
    return Generation(row[0], row[1], row[2], row[3] or {}) if row else None


HIT_COLUMNS = """c.event_position, c.chunk_index, c.event_id, c.session_id, c.actor_id,
       c.role, c.author, c.occurred_at, c.text"""

SCOPE_WHERE = """c.tenant = %(tenant)s AND c.generation = %(generation)s
   AND c.actor_id = ANY(%(actors)s) AND c.event_position <= %(bound)s"""

def size_cap(settings: RetrievalSettings) -> int:
    """Scope sizes are counted up to this: one more than the largest size any decision
    compares them with (so counting a huge scope stays cheap). Scopes below it are read
    whole into the scope cache (scopecache.py)."""
    return max(settings.exact_search_max_chunks,
               int(getattr(settings, "scope_rank_max_chunks", 0) or 0)) + 1

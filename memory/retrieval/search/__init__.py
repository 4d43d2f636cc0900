"""Candidate search: the scope first, then vectors (pgvector, cosine) and full text.

Everything here reads the projections (``memory_chunks``, ``memory_summaries``) or the log
itself, always filtered by tenant, live generation, actor(s) and an upper bound on the
event position (so a context can be rebuilt "as of" a position). Nothing here decides
what is relevant: that is ``ranking/``; nothing here decides what fits: ``context.py``.

Open ``scope`` for who a search covers and the SQL filter every chunk query applies;
``callstate`` for the one statement a call starts with; ``chunks`` for :class:`ChunkSearch`
(exact or HNSW vector search, full text, neighbours); ``hits`` for what a search returns;
``session`` for the session's recent turns and summary; ``lexemes`` for the query's terms.
"""

from .callstate import STATE, State, state
from .chunks import ChunkSearch
from .hits import Hit, NeighbourLookup, hit_from_row, merge
from .lexemes import query_lexemes
from .scope import (
    CHUNKS_PROJECTION,
    HIT_COLUMNS,
    SCOPE_WHERE,
    SUMMARIES_PROJECTION,
    Generation,
    Scope,
    generation,
    live_generations,
    size_cap,
)
from .session import HEAD_TENANT, TURN_TYPES, SummaryRow, session_summary, session_tail

__all__ = [
    "CHUNKS_PROJECTION",
    "HEAD_TENANT",
    "HIT_COLUMNS",
    "SCOPE_WHERE",
    "STATE",
    "SUMMARIES_PROJECTION",
    "TURN_TYPES",
    "ChunkSearch",
    "Generation",
    "Hit",
    "NeighbourLookup",
    "Scope",
    "State",
    "SummaryRow",
    "generation",
    "hit_from_row",
    "live_generations",
    "merge",
    "query_lexemes",
    "session_summary",
    "session_tail",
    "size_cap",
    "state",
]

"""Searching an actor's memories without building a context: the ranked chunks of its
sessions for a query, each with its source (event, session, position, chunk, score).

The same search and ranking a context call makes (``search/`` finds candidates,
``ranking/`` orders them), on one snapshot bounded by a log position, but nothing is
packed: no recent turns, no summary, no budget. No session is being continued, so no
session's view applies; an event withdrawn by a retraction in its own session is left out,
as it is from every context. Entry point: :meth:`memory.Store.search`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import ValidationError
from ..log import check_id, check_int
from ..pg import tenant_scope
from . import render, search
from .context import EPOCH, catch_up, exact_path, rank_chunks
from .ranking import Ranked, Ranker, rank
from .result import Memory
from .search import ChunkSearch, Scope
from .sessionview import ContextView
from .settings import DEFAULT_SETTINGS, RetrievalSettings
from .store_view import StoreView
from .tokens import TokenCounter, default_counter

if TYPE_CHECKING:
    from ..embedding import Embedder

MAX_LIMIT = 1000
"""The most memories one search may ask for (the ranker hands on fewer: at most
``rank_depth`` for a scope ranked whole, the candidates otherwise)."""

NO_SESSION = ""
"""The scope's session for a search: a name no session has (ids are non-empty), so no
session's view shapes the result."""

MAX_POSITION = 2**63 - 1


def search_memories(store: StoreView, query: str, *, actor: str, limit: int = 10,
                    actors: Sequence[str] | None = None, as_of: int | None = None,
                    strong: bool = False, settings: RetrievalSettings | None = None,
                    counter: TokenCounter | None = None, embedder: Embedder | None = None,
                    ranker: Ranker | None = None) -> list[Memory]:
    """See :meth:`memory.Store.search`."""
    s = settings or DEFAULT_SETTINGS
    check_id(actor, "actor", store.limits)
    if not isinstance(query, str):
        raise ValidationError("query must be a string", field="query")
    check_int(limit, "limit", 1, MAX_LIMIT)
    check_int(as_of, "as_of", 0, MAX_POSITION, none=True)
    searched = tuple(dict.fromkeys([actor, *(actors or ())]))
    for a in searched:
        check_id(a, "actors", store.limits)
    scope = Scope(tenant=store.tenant, actor=actor, session=NO_SESSION, actors=searched)
    if strong:
        catch_up(store)
    with tenant_scope(scope.tenant), store.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            st = search.state(conn, scope, as_of, s, query, cache=store.scope_cache)
            gen = st.generations.get(search.CHUNKS_PROJECTION)
            if gen is None:
                return []
            finder = ChunkSearch(conn, scope, gen, min(st.bound, gen.position), s,
                                 cache=store.scope_cache)
            if st.check is not None:
                finder.attach(st.check, st.probed)
            if finder.scope_size() == 0:
                return []
            ranked = rank_chunks(store, finder, query, s, embedder, ranker or rank,
                                 st.bound_time or EPOCH, exact_path(finder, s, None))
            # withdrawn events: read only when the first statement found a retraction
            view = ContextView.load(conn, scope, st.bound) if st.views \
                else ContextView.plain(scope)
            if view.filters:
                ranked = [r for r in ranked if view.keeps(r.hit)]
            ranked = ranked[:limit]
    counter = counter or default_counter()
    tokens = counter.count_many([render.memory_line(r.hit, s.date_format) for r in ranked])
    return [_memory(r, i, n) for i, (r, n) in enumerate(zip(ranked, tokens, strict=True),
                                                         start=1)]


def _memory(r: Ranked, rank_: int, tokens: int) -> Memory:
    h = r.hit
    return Memory(event_id=h.event_id, position=h.event_position, chunk_index=h.chunk_index,
                  session_id=h.session_id, actor_id=h.actor_id, role=h.role,
                  author=h.author, occurred_at=h.occurred_at, text=h.text, tokens=tokens,
                  score=r.score, rank=rank_, parts=dict(r.parts), reasons=tuple(r.reasons))

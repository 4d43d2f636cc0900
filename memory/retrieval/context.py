"""Packing a context under a token budget: recent turns, a summary, relevant memories.

How the budget is spent (all knobs in :class:`RetrievalSettings`):

1. **Recent turns** of the session, newest first, verbatim **from the log** (so an event
   appended a moment ago is there even if no projection has seen it), while they fit in
   ``recent_share`` of the budget. The newest turn is always kept: cut to fit if it alone
   is over the whole budget.
2. If older turns are left out, the session's **summary** (newest version covering no event
   after the bound), cut to ``summary_max_share`` of the budget at most.
3. **Memories**: candidates from this actor's chunks (older part of this session and
   earlier sessions) found by ``search/``, ordered by the ranker (``ranking/``),
   taken in that order while they fit (up to ``max_memories`` if set); shown oldest first, each
   with its date.
4. What is left goes back to **older turns** (contiguously); a turn that becomes verbatim
   replaces its memory, and once every turn fits the summary is dropped.
5. The final messages are counted again; if a non-additive counter overshoots, the
   lowest-ranked memory (then the summary, then the oldest turn) goes until it fits. The
   budget is never exceeded.

The session is read as its view (memory/retrieval/sessionview.py): a branch's turns are its
parent's prefix then its own, hidden events are neither turns nor memories, and memories
out of the view (an ancestor's events after the fork point) are left out after ranking.
The view costs a statement only when the call's first statement finds a fork or a
retraction at or below the bound that may shape it.

Consistency: the whole call reads one snapshot bounded by a log position (the tenant's head
when the call starts, or ``as_of``); chunks and summaries are bounded by the same position
and by the projection's checkpoint at that time, and both are recorded, so a recorded
context can be rebuilt exactly (``replaying.py``). The steps 1-2 and the reads are here;
reading turns is ``turns.py``, steps 3-5 are ``packing.py``, recording is ``recording.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import ConfigurationError, Error, ValidationError
from ..log import check_id
from ..pg import tenant_scope
from . import recording, render, search, wholescope
from .packing import Parts, assemble, enforce, extend_turns, take_memories
from .ranking import Ranked, Ranker, RankRequest, expansion, rank, vector_query
from .result import Context, Summary
from .search import ChunkSearch, Generation, Hit, Scope
from .sessionview import ContextView
from .settings import DEFAULT_SETTINGS, RetrievalSettings
from .store_view import StoreView
from .tokens import TokenCounter, default_counter
from .turns import TurnReader, truncate_turn

if TYPE_CHECKING:
    from ..embedding import Embedder


def build_context(store: StoreView, query: str, *, actor: str, session: str, budget: int,
                  settings: RetrievalSettings | None = None, as_of: int | None = None,
                  strong: bool = False, actors: Sequence[str] | None = None,
                  counter: TokenCounter | None = None, embedder: Embedder | None = None,
                  ranker: Ranker | None = None, record: bool = False,
                  _pins: dict[str, Any] | None = None) -> Context:
    """See :meth:`memory.Store.context`."""
    t_start = time.perf_counter()
    s = settings or DEFAULT_SETTINGS
    counter = counter or default_counter()
    ranker = ranker or rank
    limits = store.limits
    check_id(actor, "actor", limits)
    check_id(session, "session", limits)
    if not isinstance(query, str):
        raise ValidationError("query must be a string", field="query")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
        raise ValidationError("budget must be a non-negative integer", field="budget")
    if as_of is not None and (not isinstance(as_of, int) or as_of < 0):
        raise ValidationError("as_of must be a log position (>= 0)", field="as_of")
    searched = tuple(dict.fromkeys([actor, *(actors or ())]))
    for a in searched:
        check_id(a, "actors", limits)
    scope = Scope(tenant=store.tenant, actor=actor, session=session, actors=searched)
    if strong:
        catch_up(store)

    timings = {"embed_ms": 0.0, "search_ms": 0.0}
    plan: dict[str, Any] = {}
    overhead = s.message_overhead_tokens
    with tenant_scope(scope.tenant), store.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            # where the call starts, in one round trip: bound, live generations, the
            # scope cache's check (search.STATE, scopecache.py), the query's lexemes
            st = search.state(conn, scope, as_of, s, query, cache=store.scope_cache) \
                if _pins is None else None
            if st is not None:
                bound = st.bound
            else:
                head = int(conn.exec_driver_sql(search.HEAD_TENANT,
                                                (scope.tenant,)).scalar_one())
                bound = head if as_of is None else min(as_of, head)
            chunks_gen, chunk_bound, sum_gen, sum_bound = _generations(conn, bound, _pins, st)
            pins: dict[str, Any] = {"chunks": _pin(chunks_gen, chunk_bound),
                                    "summaries": _pin(sum_gen, sum_bound)}

            # the session's view: forks and retractions (memory/retrieval/sessionview.py),
            # read only when the first statement found one that may shape it
            view = ContextView.load(conn, scope, bound) if st is None or st.views \
                else ContextView.plain(scope)

            # 1. recent turns, newest first, within recent_share of the budget
            tail = TurnReader(conn, store, scope, bound, s, counter,
                              view.tail() if view.shaped else None)
            parts = Parts(turns=[], more_older=False)
            used = 0
            recent_cap = math.floor(budget * s.recent_share)
            while True:
                turn = tail.peek()
                if turn is None:
                    break
                cost = turn.tokens + overhead
                if not parts.turns and cost > recent_cap:
                    if cost > budget:
                        turn = truncate_turn(turn, budget - overhead, counter)
                        if turn is None:
                            break
                        cost = turn.tokens + overhead
                    parts.turns.append(turn)
                    used += cost
                    tail.pop()
                    break
                if used + cost > recent_cap:
                    break
                parts.turns.append(turn)
                used += cost
                tail.pop()
            parts.more_older = tail.peek() is not None

            # 2. the summary, when older turns are left out
            system_cost = 0
            if parts.more_older and sum_gen is not None:
                row = view.summary(search.session_summary(conn, scope, sum_gen, sum_bound))
                if row is not None and row.text.strip():
                    header = counter.count(render.SUMMARY_HEADER) + overhead
                    room = min(math.floor(budget * s.summary_max_share), budget - used) - header
                    if room > 0:
                        text = row.text
                        n = counter.count(text)
                        cut = False
                        if n > room:
                            text, cut = counter.truncate(text, room), True
                            n = counter.count(text)
                        if text.strip():
                            parts.summary = Summary(text, row.covers_position,
                                                    row.events_covered, row.source_event_ids,
                                                    n, cut)
                            system_cost = header + n
                            used += system_cost

            # 3. memories
            ranked: list[Ranked] = []
            if chunks_gen is not None and budget - used > overhead:
                t_search = time.perf_counter()
                finder = ChunkSearch(conn, scope, chunks_gen, chunk_bound, s,
                                     cache=store.scope_cache)
                if st is not None and st.check is not None:
                    finder.attach(st.check, st.probed)
                if finder.scope_size() > 0:
                    exact = exact_path(finder, s, _pins)
                    finder.plan["vector"] = "exact" if exact else "hnsw"
                    pins["vector"] = finder.plan["vector"]
                    now = (st.bound_time or EPOCH) if st is not None else \
                        _bound_time(conn, scope, bound)
                    ranked = rank_chunks(store, finder, query, s, embedder, ranker, now,
                                         exact, timings)
                    if view.filters:  # out of this session's view: never a memory
                        ranked = [r for r in ranked if view.keeps(r.hit)]
                    used = take_memories(parts, ranked, finder, s, counter, budget, used,
                                         system_cost, view.keeps if view.filters else None)
                plan.update(finder.plan)
                timings["search_ms"] = ((time.perf_counter() - t_search) * 1000
                                        - timings["embed_ms"])

            # 4. what is left goes back to older turns
            used = extend_turns(parts, tail, counter, s, budget, used)
            if not parts.more_older and parts.summary is not None:
                parts.summary = None
            ctx = assemble(query, budget, bound, scope, parts, s, counter, plan, pins)
    # 5. the final count decides
    enforce(ctx, counter)
    timings["total_ms"] = (time.perf_counter() - t_start) * 1000
    timings["assemble_ms"] = timings["total_ms"] - timings["embed_ms"] - timings["search_ms"]
    ctx.timings = {k: round(v, 3) for k, v in timings.items()}
    if record:
        ctx.recorded = recording.record(store, ctx)
    return ctx


def catch_up(store: StoreView) -> None:
    """Bring the projections retrieval reads up to the head of the log (``strong=True``).
    The runner works over the whole log, so this scope is caught up with everything."""
    project = getattr(store, "project", None)
    if callable(project):
        project()
        return
    from ..projections import Projector

    Projector(store.engine, log=store.log, embedder=getattr(store, "embedder", None),
              progress=False).catch_up()


def _pin(gen: Generation | None, bound: int) -> dict[str, int] | None:
    return None if gen is None else {"generation": gen.generation, "bound": bound}


EPOCH = datetime.fromtimestamp(0, UTC)
"""The ranker's "now" when the log holds no event yet."""


def rank_chunks(store: StoreView, finder: ChunkSearch, query: str, s: RetrievalSettings,
                embedder: Embedder | None, ranker: Ranker, now: datetime, exact: bool,
                timings: dict[str, float] | None = None) -> list[Ranked]:
    """The scope's chunks in ``ranker``'s order for ``query``: the query embedded (author
    names left out when the settings say so), the candidates, and the word vectors the
    query expansion asks for. What a context call and :meth:`memory.Store.search` share;
    ``timings["embed_ms"]`` (when given) gains the time spent embedding."""
    spent = timings if timings is not None else {}
    vquery = query
    if s.strip_author_names:
        vquery = vector_query(query, wholescope.scope_authors(finder))
    t_embed = time.perf_counter()
    model = _query_embedder(store, embedder, finder.gen)
    qvec = model.embed([vquery])[0]
    spent["embed_ms"] = spent.get("embed_ms", 0.0) + (time.perf_counter() - t_embed) * 1000

    def embed_words(words: Sequence[str]) -> Any:
        t0 = time.perf_counter()  # query embedding: timed as such
        out = expansion.word_vectors(model, words, store.scope_cache.word_vectors)
        spent["embed_ms"] += (time.perf_counter() - t0) * 1000
        return out

    return ranker(RankRequest(
        query=query, hits=_Candidates(finder, query, qvec, exact),
        neighbours=finder.neighbours, settings=s, now=now, embeddings=finder.embeddings,
        query_vec=qvec, finder=finder, embed=embed_words))


def exact_path(finder: ChunkSearch, s: RetrievalSettings, pins: dict[str, Any] | None
               ) -> bool:
    """Exact search for a scope within ``exact_search_max_chunks`` (or a generation of
    unknown dimension, which has no HNSW index); a replay takes the recorded path."""
    if pins is not None and pins.get("vector") in ("exact", "hnsw"):
        return bool(pins["vector"] == "exact")
    return finder.gen.dim is None or finder.scope_size() <= s.exact_search_max_chunks


def _generations(conn: sa.Connection, bound: int, pins: dict[str, Any] | None,
                 st: search.State | None = None
                 ) -> tuple[Generation | None, int, Generation | None, int]:
    if pins is None:
        live = st.generations if st is not None else search.live_generations(conn)
        chunks = live.get(search.CHUNKS_PROJECTION)
        summaries = live.get(search.SUMMARIES_PROJECTION)
        return (chunks, min(bound, chunks.position) if chunks else bound,
                summaries, min(bound, summaries.position) if summaries else bound)
    out: list[Any] = []
    for name, key in ((search.CHUNKS_PROJECTION, "chunks"),
                      (search.SUMMARIES_PROJECTION, "summaries")):
        pin = pins.get(key)
        if pin is None:
            out += [None, bound]
            continue
        gen = search.generation(conn, name, int(pin["generation"]))
        if gen is None:
            raise Error(f"projection {name} generation {pin['generation']} no longer exists; "
                        "the context cannot be replayed exactly")
        out += [gen, int(pin["bound"])]
    return out[0], out[1], out[2], out[3]


def _query_embedder(store: StoreView, embedder: Embedder | None, gen: Generation) -> Embedder:
    """The query's embedder (``embedder``, else the store's, else the default),
    refused with a typed error unless it is the model the live chunks generation was built
    with: vectors of two models are never compared (a search shares this check)."""
    if embedder is None:
        embedder = getattr(store, "embedder", None)
    if embedder is None:
        from ..embedding import default_embedder

        embedder = default_embedder()
    if gen.dim is not None and embedder.dim != gen.dim:
        raise ConfigurationError(
            f"the query embedder {embedder.name!r} has {embedder.dim} dimensions, the live "
            f"chunks generation {gen.generation} has {gen.dim}: use the model it was built "
            "with, or re-project (memory reproject chunks --model PATH)")
    if gen.model_name is not None and embedder.name != gen.model_name:
        # same dimension, other vector space (e.g. int8 against fp32): never mixed silently
        from ..projections import ProjectionConfigMismatch

        raise ProjectionConfigMismatch(
            f"the live chunks generation {gen.generation} was built with "
            f"{gen.model_name!r}, the query embedder is {embedder.name!r}: query with the "
            "same model (MEMORY_EMBEDDER), or re-project (memory reproject chunks)")
    return embedder


BOUND_TIME = "SELECT occurred_at FROM memory_events WHERE tenant = %s AND position <= %s " \
    "ORDER BY position DESC LIMIT 1"


def _bound_time(conn: sa.Connection, scope: Scope, bound: int) -> datetime:
    """The 'now' of recency weighting: when the tenant's last event at or before the
    bound happened (a function of the bound, so as_of and replay weigh recency exactly as
    the original call did)."""
    row = conn.exec_driver_sql(BOUND_TIME, (scope.tenant, bound)).fetchone()
    return row[0] if row is not None else EPOCH


class _Candidates(Sequence[Hit]):
    """The vector and full-text candidates, searched on first use: the default ranker
    scores a small scope whole and never looks at them (ranking.rank_scope), so a call
    it handles skips the search; any other ranker gets them as before."""

    def __init__(self, finder: ChunkSearch, query: str, qvec: Any, exact: bool) -> None:
        self._args = (finder, query, qvec, exact)
        self._hits: list[Hit] | None = None

    def _load(self) -> list[Hit]:
        if self._hits is None:
            finder, query, qvec, exact = self._args
            self._hits = search.merge(*finder.both(query, qvec, exact=exact))
        return self._hits

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, i: Any) -> Any:
        return self._load()[i]

    def __iter__(self) -> Iterator[Hit]:
        return iter(self._load())

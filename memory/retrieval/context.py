"""Packing a context under a token budget: recent turns, a summary, relevant memories.

How the budget is spent (all knobs in :class:`RetrievalSettings`):

1. **Recent turns** of the session, newest first, verbatim **from the log** (so an event
   appended a moment ago is there even if no projection has seen it), while they fit in
   ``recent_share`` of the budget. The newest turn is always kept: cut to fit if it alone
   is over the whole budget.
2. If older turns are left out, the session's **summary** (newest version covering no event
   after the bound), cut to ``summary_max_share`` of the budget at most.
3. **Memories**: candidates from this actor's chunks (older part of this session and
   earlier sessions) found by ``search.py``, ordered by the ranker (``ranking.py``),
   taken in that order while they fit (up to ``max_memories`` if set); shown oldest first, each
   with its date.
4. What is left goes back to **older turns** (contiguously); a turn that becomes verbatim
   replaces its memory, and once every turn fits the summary is dropped.
5. The final messages are counted again; if a non-additive counter overshoots, the
   lowest-ranked memory (then the summary, then the oldest turn) goes until it fits. The
   budget is never exceeded.

Consistency: the whole call reads one snapshot bounded by a log position (the tenant's head
when the call starts, or ``as_of``); chunks and summaries are bounded by the same position
and by the projection's checkpoint at that time, and both are recorded, so a recorded
context can be rebuilt exactly (:func:`replay`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import ConfigurationError, Error, ValidationError
from ..events import NewEvent, RecordedEvent, check_id
from ..security import tenant_scope
from . import expansion, render, search, wholescope
from .ranking import Ranked, Ranker, RankRequest, rank, vector_query
from .result import Context, Memory, Source, Summary, Turn
from .search import ChunkSearch, Generation, Hit, Scope
from .settings import DEFAULT_SETTINGS, RetrievalSettings
from .tokens import TokenCounter, default_counter

if TYPE_CHECKING:
    from ..embedding import Embedder
    from ..events import Appended
    from ..store import Store

CONTEXT_EVENT = "context_assembled"


# -- building ------------------------------------------------------------------------------


@dataclass
class _Parts:
    turns: list[Turn]  # newest first while packing
    more_older: bool
    summary: Summary | None = None
    chosen: list[Ranked] = field(default_factory=list)
    memory_tokens: dict[tuple[int, int], int] = field(default_factory=dict)
    neighbours: list[tuple[Hit, Ranked]] = field(default_factory=list)


def build_context(store: Store, query: str, *, actor: str, session: str, budget: int,
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
            # scope cache's check (search.STATE, scopedata.py), the query's lexemes
            st = search.state(conn, scope, as_of, s, query) if _pins is None else None
            if st is not None:
                bound = st.bound
            else:
                head = int(conn.exec_driver_sql(search.HEAD_TENANT,
                                                (scope.tenant,)).scalar_one())
                bound = head if as_of is None else min(as_of, head)
            chunks_gen, chunk_bound, sum_gen, sum_bound = _generations(conn, bound, _pins, st)
            pins: dict[str, Any] = {"chunks": _pin(chunks_gen, chunk_bound),
                                    "summaries": _pin(sum_gen, sum_bound)}

            # 1. recent turns, newest first, within recent_share of the budget
            tail = _TurnReader(conn, store, scope, bound, s, counter)
            parts = _Parts(turns=[], more_older=False)
            used = 0
            recent_cap = math.floor(budget * s.recent_share)
            while True:
                turn = tail.peek()
                if turn is None:
                    break
                cost = turn.tokens + overhead
                if not parts.turns and cost > recent_cap:
                    if cost > budget:
                        turn = _truncate_turn(turn, budget - overhead, counter)
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
                row = search.session_summary(conn, scope, sum_gen, sum_bound)
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
                finder = ChunkSearch(conn, scope, chunks_gen, chunk_bound, s)
                if st is not None and st.check is not None:
                    finder.attach(st.check, st.probed)
                if finder.scope_size() > 0:
                    t_embed = time.perf_counter()
                    vquery = query
                    if s.strip_author_names:
                        vquery = vector_query(query, wholescope.scope_authors(finder))
                        t_embed = time.perf_counter()
                    model = _query_embedder(store, embedder, chunks_gen)
                    qvec = model.embed([vquery])[0]
                    timings["embed_ms"] = (time.perf_counter() - t_embed) * 1000

                    def embed_words(words: Sequence[str], model: Embedder = model) -> Any:
                        t0 = time.perf_counter()  # query embedding: timed as such
                        out = expansion.word_vectors(model, words)
                        timings["embed_ms"] += (time.perf_counter() - t0) * 1000
                        return out

                    exact = _exact_path(finder, s, _pins)
                    finder.plan["vector"] = "exact" if exact else "hnsw"
                    pins["vector"] = finder.plan["vector"]
                    hits = _Candidates(finder, query, qvec, exact)
                    now = (st.bound_time or _EPOCH) if st is not None else \
                        _bound_time(conn, scope, bound)
                    ranked = ranker(RankRequest(
                        query=query, hits=hits, neighbours=finder.neighbours, settings=s,
                        now=now, embeddings=finder.embeddings,
                        query_vec=qvec, finder=finder, embed=embed_words))
                    used = _take_memories(parts, ranked, finder, s, counter, budget, used,
                                          system_cost)
                plan.update(finder.plan)
                timings["search_ms"] = ((time.perf_counter() - t_search) * 1000
                                        - timings["embed_ms"])

            # 4. what is left goes back to older turns
            used = _extend_turns(parts, tail, counter, s, budget, used)
            if not parts.more_older and parts.summary is not None:
                parts.summary = None
            ctx = _assemble(query, budget, bound, scope, parts, s, counter, plan, pins)
    # 5. the final count decides
    _enforce(ctx, counter)
    timings["total_ms"] = (time.perf_counter() - t_start) * 1000
    timings["assemble_ms"] = timings["total_ms"] - timings["embed_ms"] - timings["search_ms"]
    ctx.timings = {k: round(v, 3) for k, v in timings.items()}
    if record:
        ctx.recorded = _record(store, ctx)
    return ctx


def catch_up(store: Store) -> None:
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


_EPOCH = datetime.fromtimestamp(0, UTC)


def _exact_path(finder: ChunkSearch, s: RetrievalSettings, pins: dict[str, Any] | None
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


class _TurnReader:
    """The session's turns from the log, newest first, a page at a time."""

    def __init__(self, conn: sa.Connection, store: Store, scope: Scope, bound: int,
                 s: RetrievalSettings, counter: TokenCounter) -> None:
        self.conn, self.store, self.scope, self.bound = conn, store, scope, bound
        self.s, self.counter = s, counter
        self.buffer: list[Turn] = []
        self.before = 2**31 - 1
        self.done = False

    def _fill(self) -> None:
        while not self.buffer and not self.done:
            events = search.session_tail(self.conn, self.store.log, self.scope,
                                         self.bound, self.before, self.s.recent_page)
            if len(events) < self.s.recent_page:
                self.done = True
            if events:
                self.before = events[-1].version
            turns = [_turn(e) for e in events]
            turns = [t for t in turns if t is not None]
            counts = self.counter.count_many([t[1] for t in turns])
            self.buffer = [
                Turn(event_id=e.event_id, position=e.position, version=e.version,
                     type=e.type, role=role, content=content, occurred_at=e.occurred_at,
                     tokens=n)
                for (e, content, role), n in zip(turns, counts, strict=True)]
            self.buffer.reverse()  # pop() from the end gives the newest

    def peek(self) -> Turn | None:
        self._fill()
        return self.buffer[-1] if self.buffer else None

    def pop(self) -> Turn:
        return self.buffer.pop()


def _turn(e: RecordedEvent) -> tuple[RecordedEvent, str, str] | None:
    if not e.payload:
        return None  # a sealed (forgotten) payload shows nothing
    role, content = render.turn_role_and_content(e.type, e.payload)
    if not content.strip():
        return None
    return e, content, role


def _truncate_turn(turn: Turn, limit: int, counter: TokenCounter) -> Turn | None:
    if limit <= 0:
        return None
    text = counter.truncate(turn.content, limit)
    if not text.strip():
        return None
    return Turn(turn.event_id, turn.position, turn.version, turn.type, turn.role, text,
                turn.occurred_at, counter.count(text), truncated=True)


def _query_embedder(store: Store, embedder: Embedder | None, gen: Generation) -> Embedder:
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
    return row[0] if row is not None else _EPOCH


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


def _memory_cost(r: Ranked | Hit, s: RetrievalSettings, counter: TokenCounter) -> int:
    h = r.hit if isinstance(r, Ranked) else r
    return counter.count(render.memory_line(h, s.date_format))


def _as_memory(h: Hit, tokens: int, score: float, parts: dict[str, float],
               reasons: tuple[str, ...], kind: str, rank_: int) -> Memory:
    return Memory(event_id=h.event_id, position=h.event_position, chunk_index=h.chunk_index,
                  session_id=h.session_id, actor_id=h.actor_id, role=h.role,
                  author=h.author, occurred_at=h.occurred_at, text=h.text, tokens=tokens,
                  score=score, rank=rank_, parts=parts, reasons=reasons, kind=kind)


def _take_memories(parts: _Parts, ranked: list[Ranked], finder: ChunkSearch,
                   s: RetrievalSettings, counter: TokenCounter, budget: int, used: int,
                   system_cost: int) -> int:
    in_turns = {t.position for t in parts.turns}
    opening = 0 if system_cost else s.message_overhead_tokens
    header = counter.count(render.MEMORIES_HEADER)
    first = True
    taken: set[tuple[int, int]] = set()
    # every candidate's line counted in one batch (one tokenizer call, not one per line)
    lines = counter.count_many([render.memory_line(r.hit, s.date_format) for r in ranked])
    for r, line_cost in zip(ranked, lines, strict=True):
        if s.max_memories is not None and len(parts.chosen) >= s.max_memories:
            break
        if r.hit.event_position in in_turns:
            continue
        cost = line_cost + (opening + header if first else 0)
        if used + cost > budget:
            continue
        parts.chosen.append(r)
        parts.memory_tokens[r.hit.key] = cost
        taken.add(r.hit.key)
        used += cost
        first = False
    if s.include_neighbours and parts.chosen:
        found = finder.neighbours([r.hit for r in parts.chosen], s.neighbour_window)
        for r in parts.chosen:
            for n in found.get(r.hit.key, []):
                if n.key in taken or n.event_position in in_turns:
                    continue
                cost = _memory_cost(n, s, counter)
                if used + cost > budget:
                    continue
                parts.neighbours.append((n, r))
                parts.memory_tokens[n.key] = cost
                taken.add(n.key)
                used += cost
    return used


def _extend_turns(parts: _Parts, tail: _TurnReader, counter: TokenCounter,
                  s: RetrievalSettings, budget: int, used: int) -> int:
    overhead = s.message_overhead_tokens
    while parts.turns:
        turn = tail.peek()
        if turn is None:
            parts.more_older = False
            break
        refund = 0
        dupes = [r for r in parts.chosen if r.hit.event_position == turn.position]
        dupes_n = [p for p in parts.neighbours if p[0].event_position == turn.position]
        for r in dupes:
            refund += parts.memory_tokens[r.hit.key]
        for n, _ in dupes_n:
            refund += parts.memory_tokens[n.key]
        cost = turn.tokens + overhead
        if used - refund + cost > budget:
            break
        for r in dupes:
            parts.chosen.remove(r)
        for p in dupes_n:
            parts.neighbours.remove(p)
        used += cost - refund
        parts.turns.append(tail.pop())
    return used


def _assemble(query: str, budget: int, bound: int, scope: Scope, parts: _Parts,
              s: RetrievalSettings, counter: TokenCounter, plan: dict[str, Any],
              pins: dict[str, Any]) -> Context:
    memories: list[Memory] = []
    for r in parts.chosen:
        rank_ = int(r.parts.get("rank", 0))
        memories.append(_as_memory(r.hit, 0, r.score, dict(r.parts), tuple(r.reasons),
                                   "memory", rank_))
    for n, r in parts.neighbours:
        memories.append(_as_memory(n, 0, 0.0, {}, (f"neighbour of event "
                                                   f"{r.hit.event_position}",),
                                   "neighbour", 0))
    memories.sort(key=lambda m: (m.occurred_at, m.position, m.chunk_index))
    counts = counter.count_many([render.memory_line(m, s.date_format) for m in memories])
    memories = [_with_tokens(m, n) for m, n in zip(memories, counts, strict=True)]
    turns = list(reversed(parts.turns))
    ctx = Context(query=query, budget=budget, tokens=0, position=bound, scope=scope,
                  turns=turns, summary=parts.summary, memories=memories, sources=[],
                  settings=s, counter=counter.name, plan=plan, pins=pins)
    return ctx


def _with_tokens(m: Memory, n: int) -> Memory:
    return Memory(**{**m.__dict__, "tokens": n})


def _sources(ctx: Context) -> list[Source]:
    out: list[Source] = []
    n = len(ctx.turns)
    for i, t in enumerate(ctx.turns):
        why = f"recent turn {n - i} of {n} counting back, verbatim from the log"
        if t.truncated:
            why += " (cut to fit the budget)"
        out.append(Source("turn", t.event_id, t.position, ctx.scope.session, t.tokens, why))
    if ctx.summary is not None:
        sm = ctx.summary
        out.append(Source("summary", None, sm.covers_position, ctx.scope.session, sm.tokens,
                          f"summary of the {sm.events_covered} events of this session up to "
                          f"position {sm.covers_position}; older turns did not fit"
                          + (" (cut to fit)" if sm.truncated else ""),
                          event_ids=sm.source_event_ids))
    for m in ctx.memories:
        where = "this session" if m.session_id == ctx.scope.session else \
            f"session {m.session_id}"
        why = f"{m.kind} from {where}: " + "; ".join(m.reasons)
        if m.kind == "memory":
            why = f"rank {m.rank}, " + why
        out.append(Source(m.kind, m.event_id, m.position, m.session_id, m.tokens, why,
                          chunk_index=m.chunk_index, score=m.score, parts=m.parts))
    return out


def count_messages(messages: list[dict[str, str]], counter: TokenCounter,
                   overhead: int) -> int:
    return sum(n + overhead for n in counter.count_many([m["content"] for m in messages]))


def _enforce(ctx: Context, counter: TokenCounter) -> None:
    overhead = ctx.settings.message_overhead_tokens
    while True:
        total = count_messages(ctx.messages(), counter, overhead)
        if total <= ctx.budget:
            break
        if ctx.memories:
            worst = max(ctx.memories, key=lambda m: (m.kind == "neighbour", m.rank))
            ctx.memories.remove(worst)
        elif ctx.summary is not None:
            ctx.summary = None
        elif ctx.turns:
            ctx.turns.pop(0)
        else:  # pragma: no cover - an empty context counts 0
            break
    ctx.tokens = total
    ctx.sources = _sources(ctx)


# -- audit ---------------------------------------------------------------------------------


def _record(store: Store, ctx: Context) -> Appended:
    payload = {
        "query": ctx.query, "budget": ctx.budget, "as_of": ctx.position,
        "actors": list(ctx.scope.actors), "settings": ctx.settings.to_dict(),
        "counter": ctx.counter, "tokens": ctx.tokens, "pins": ctx.pins,
        "source_event_ids": list(dict.fromkeys(
            str(e) for s in ctx.sources for e in ((s.event_id,) if s.event_id else s.event_ids))),
        "sources": [{"kind": s.kind, "event_id": str(s.event_id) if s.event_id else None,
                     "position": s.position, "chunk_index": s.chunk_index}
                    for s in ctx.sources],
        "messages_sha256": ctx.digest(),
    }
    appended = store.append(ctx.scope.session, NewEvent(CONTEXT_EVENT, payload),
                            actor=ctx.scope.actor)
    return appended[0]


def replay(store: Store, event: RecordedEvent, *, counter: TokenCounter | None = None,
           embedder: Embedder | None = None, ranker: Ranker | None = None) -> Context:
    """Rebuild a recorded context from the log: same query, budget, settings, bound and
    projection generations. ``replay_matches`` tells whether the messages are identical
    to the recorded ones (they are, unless the recorded generation was re-built with other
    content or another counter, embedder or ranker is given)."""
    if event.type != CONTEXT_EVENT:
        raise ValidationError(f"not a {CONTEXT_EVENT} event: {event.type}", field="type")
    if event.tenant != store.tenant:
        raise ValidationError("the event belongs to another tenant", field="tenant")
    p = event.payload
    counter = counter or default_counter()
    if counter.name != p["counter"]:
        raise ConfigurationError(f"the context was counted with {p['counter']!r}; replay "
                                 f"with that counter, not {counter.name!r}")
    ctx = build_context(store, p["query"], actor=event.actor_id, session=event.session_id,
                        budget=p["budget"], settings=RetrievalSettings.from_dict(p["settings"]),
                        as_of=p["as_of"], actors=p["actors"], counter=counter,
                        embedder=embedder, ranker=ranker, _pins=p["pins"])
    ctx.replay_matches = ctx.digest() == p["messages_sha256"]
    return ctx

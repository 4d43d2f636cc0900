"""Spending the budget: taking ranked memories while they fit, giving what is left back to
older turns, assembling the :class:`Context` and enforcing the final count (steps 3-5 of
``context.py``), with the sources that explain each piece."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import render
from .ranking import Ranked
from .result import Context, Memory, Source, Summary, Turn
from .search import ChunkSearch, Hit, Scope
from .settings import RetrievalSettings
from .tokens import TokenCounter
from .turns import TurnReader


@dataclass
class Parts:
    turns: list[Turn]  # newest first while packing
    more_older: bool
    summary: Summary | None = None
    chosen: list[Ranked] = field(default_factory=list)
    memory_tokens: dict[tuple[int, int], int] = field(default_factory=dict)
    neighbours: list[tuple[Hit, Ranked]] = field(default_factory=list)


def _memory_cost(r: Ranked | Hit, s: RetrievalSettings, counter: TokenCounter) -> int:
    h = r.hit if isinstance(r, Ranked) else r
    return counter.count(render.memory_line(h, s.date_format))


def _as_memory(h: Hit, tokens: int, score: float, parts: dict[str, float],
               reasons: tuple[str, ...], kind: str, rank_: int) -> Memory:
    return Memory(event_id=h.event_id, position=h.event_position, chunk_index=h.chunk_index,
                  session_id=h.session_id, actor_id=h.actor_id, role=h.role,
                  author=h.author, occurred_at=h.occurred_at, text=h.text, tokens=tokens,
                  score=score, rank=rank_, parts=parts, reasons=reasons, kind=kind)


def take_memories(parts: Parts, ranked: list[Ranked], finder: ChunkSearch,
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


def extend_turns(parts: Parts, tail: TurnReader, counter: TokenCounter,
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


def assemble(query: str, budget: int, bound: int, scope: Scope, parts: Parts,
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


def enforce(ctx: Context, counter: TokenCounter) -> None:
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

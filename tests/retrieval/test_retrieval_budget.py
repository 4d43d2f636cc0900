"""The budget is never exceeded: a property over random histories, queries and budgets
(real database, real projections, real model)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import memory
from memory import message, note
from memory.retrieval import CharCounter, RetrievalSettings, default_counter
from memory.retrieval.packing import count_messages

WORDS = ["dog", "Kyoto", "tofu", "piano", "Zoë", "Montréal", "🐶", "🌸", "日本", "naïve",
         "garden", "birthday", "the", "a", "is", "on", "Tuesday", "🎉🎉", "über",
         "x" * 120, "password", "42", "!", "?", "—"]

text = st.lists(st.sampled_from(WORDS), min_size=0, max_size=60).map(" ".join)
turn = st.tuples(st.sampled_from(["user", "assistant", "note"]), text)
history = st.lists(st.lists(turn, min_size=1, max_size=8), min_size=1, max_size=4)


def _event(kind: str, body: str, when: datetime) -> memory.NewEvent:
    if kind == "note":
        return note(body or "-", occurred_at=when)
    return message(kind, body, occurred_at=when)


# No shrinking phase: each example projects with the real model, and a failure is easier
# to read from the unshrunk example than to wait minutes for a smaller one.
@settings(max_examples=8, deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(sessions=history, query=text,
       budgets=st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=3),
       recent_share=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
       neighbours=st.booleans(), mmr=st.sampled_from([None, 0.7]))
def test_budget_is_never_exceeded(store: memory.Store, embedder, sessions, query,  # type: ignore[no-untyped-def]
                                  budgets, recent_share, neighbours, mmr) -> None:
    actor = f"a-{uuid.uuid4()}"
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for i, turns in enumerate(sessions):
        store.append(f"{actor}-s{i}", [_event(k, b, start + timedelta(days=i, minutes=j))
                                       for j, (k, b) in enumerate(turns)], actor=actor)
    store.project(embedder=embedder)
    current = f"{actor}-s{len(sessions) - 1}"
    s = RetrievalSettings(recent_share=recent_share, include_neighbours=neighbours,
                          mmr_lambda=mmr, recency_half_life_days=10.0)
    counter = default_counter()
    for n, budget in enumerate(budgets):
        ctx = store.context(query, actor=actor, session=current, budget=budget, settings=s,
                            embedder=embedder)
        overhead = s.message_overhead_tokens
        assert ctx.tokens <= budget
        assert count_messages(ctx.messages(), counter, overhead) == ctx.tokens
        system, msgs = ctx.anthropic()
        assert counter.count(system) + count_messages(msgs, counter, overhead) <= budget
        assert counter.count(ctx.text()) <= budget
        assert sum(src.tokens for src in ctx.sources) <= ctx.tokens
        if n:
            continue
        # any counter: the guarantee is about whichever counter is used
        chars = CharCounter()
        cctx = store.context(query, actor=actor, session=current, budget=budget, settings=s,
                             embedder=embedder, counter=chars)
        assert count_messages(cctx.messages(), chars, overhead) == cctx.tokens <= budget

"""The retriever against a real Postgres and the real model (all-MiniLM-L6-v2, offline):
budget, scopes, read-your-writes, as_of, replay, unicode, empty memory."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

import memory
from memory import message, note
from memory.retrieval import RetrievalSettings, default_counter
from memory.retrieval.packing import count_messages

DAY0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def at(days: float) -> datetime:
    return DAY0 + timedelta(days=days)


def check_budget(ctx: memory.retrieval.Context) -> None:
    """The budget holds for every rendering, recounted from scratch."""
    counter = default_counter()
    overhead = ctx.settings.message_overhead_tokens
    assert ctx.tokens <= ctx.budget
    assert count_messages(ctx.messages(), counter, overhead) == ctx.tokens
    system, msgs = ctx.anthropic()
    anthropic_tokens = counter.count(system) + count_messages(msgs, counter, overhead)
    assert anthropic_tokens <= ctx.budget
    assert counter.count(ctx.text()) <= ctx.budget


def conversation(store: memory.Store, actor: str = "alice") -> None:
    store.append("trip", [
        message("user", "I'm planning a trip to Kyoto in April 🌸", occurred_at=at(0)),
        message("assistant", "Lovely! Cherry blossom season. Temples or food?",
                occurred_at=at(0)),
        message("user", "Mostly food. I'm vegetarian, so tofu places please.",
                occurred_at=at(0.01)),
    ], actor=actor)
    store.append("pets", [
        message("user", "We adopted a border collie puppy called Biscuit.", occurred_at=at(5)),
        message("assistant", "Biscuit is a great name! Collies need lots of exercise.",
                occurred_at=at(5)),
        note("Alice's sister Zoë lives in Montréal.", occurred_at=at(6)),
    ], actor=actor)
    store.append("today", [
        message("user", "Hi again! Quick question coming.", occurred_at=at(30)),
        message("assistant", "Sure, ask away.", occurred_at=at(30)),
    ], actor=actor)


@pytest.fixture
def proj(embedder):  # type: ignore[no-untyped-def]
    def run(store: memory.Store) -> None:
        store.project(embedder=embedder)
    return run


def test_empty_memory(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    ctx = store.context("anything at all?", actor="nobody", session="s", budget=500)
    assert ctx.messages() == [] and ctx.tokens == 0 and ctx.sources == []
    assert ctx.anthropic() == ("", []) and ctx.text() == ""
    store.project(embedder=embedder)  # projections built over an empty log
    ctx = store.context("anything at all?", actor="nobody", session="s", budget=500)
    assert ctx.messages() == [] and ctx.tokens == 0


def test_recent_turns_summary_and_memories(store: memory.Store, proj) -> None:  # type: ignore[no-untyped-def]
    conversation(store)
    proj(store)
    store.append("today", message("user", "What's my dog called?", occurred_at=at(30.1)),
                 actor="alice")
    ctx = store.context("What's my dog called?", actor="alice", session="today", budget=300)
    check_budget(ctx)
    msgs = ctx.messages()
    # recent turns verbatim, oldest first, the newest last
    assert msgs[-1] == {"role": "user", "content": "What's my dog called?"}
    assert [m["content"] for m in msgs[1:]] == [
        "Hi again! Quick question coming.", "Sure, ask away.", "What's my dog called?"]
    # the memory that answers, with its date
    assert "[2025-03-06] user: We adopted a border collie puppy called Biscuit." in msgs[0][
        "content"]
    kinds = {s.kind for s in ctx.sources}
    assert kinds == {"turn", "memory"}
    for s in ctx.sources:
        assert s.event_id is not None and s.position > 0 and s.reason
    best = min((s for s in ctx.sources if s.kind == "memory"), key=lambda s: s.parts["rank"])
    assert "Biscuit" in store.log.read_page(best.position - 1, tenant=store.tenant,
                                            limit=1)[0].payload["content"]
    assert {"vector", "text", "fused", "rank"} <= set(best.parts)
    # memories are shown in a stable order: by date
    lines = [ln for ln in msgs[0]["content"].splitlines() if ln.startswith("- [")]
    assert lines == sorted(lines, key=lambda ln: ln[3:13])


def test_read_your_writes_without_projection(store: memory.Store, proj) -> None:  # type: ignore[no-untyped-def]
    conversation(store)
    proj(store)
    store.append("today", message("user", "Remember: my locker code is 4471 🔐"),
                 actor="alice")
    ctx = store.context("locker code?", actor="alice", session="today", budget=200)
    assert ctx.messages()[-1]["content"] == "Remember: my locker code is 4471 🔐"
    assert ctx.turns[-1].position == store.head()


def test_scopes_never_leak(store: memory.Store, proj) -> None:  # type: ignore[no-untyped-def]
    other = store.for_tenant("acme")
    store.append("a1", message("user", "My secret password is tangerine-42"), actor="alice")
    store.append("b1", message("user", "My secret password is walrus-99"), actor="bob")
    other.append("x1", message("user", "My secret password is acme-zebra-7"), actor="alice")
    proj(store)
    q = "what is the secret password?"
    ctx = store.context(q, actor="alice", session="new", budget=500)
    text = ctx.text()
    assert "tangerine-42" in text
    assert "walrus-99" not in text and "acme-zebra-7" not in text
    # asked for explicitly: bob's memories too, still never the other tenant's
    both = store.context(q, actor="alice", session="new", budget=500, actors=["bob"])
    assert "walrus-99" in both.text() and "acme-zebra-7" not in both.text()
    # the other tenant sees its own alice only
    theirs = other.context(q, actor="alice", session="new", budget=500, actors=["bob"])
    assert "acme-zebra-7" in theirs.text()
    assert "tangerine-42" not in theirs.text() and "walrus-99" not in theirs.text()
    # a session of another actor is never shown as recent turns
    assert "walrus-99" not in store.context(q, actor="alice", session="b1",
                                            budget=500).text()


def test_as_of_equals_context_built_then(store: memory.Store, proj) -> None:  # type: ignore[no-untyped-def]
    conversation(store)
    proj(store)
    q = "Where am I travelling and what do I eat?"
    then = store.context(q, actor="alice", session="today", budget=250)
    store.append("today", [message("user", "Actually I now eat fish too, Kyoto plans changed"),
                           message("assistant", "Noted: pescatarian now.")], actor="alice")
    store.append("trip", message("user", "Trip moved to Osaka in May."), actor="alice")
    proj(store)
    now = store.context(q, actor="alice", session="today", budget=250)
    assert now.messages() != then.messages()
    again = store.context(q, actor="alice", session="today", budget=250, as_of=then.position)
    assert again.messages() == then.messages()
    assert [s.to_dict() for s in again.sources] == [s.to_dict() for s in then.sources]


def test_recorded_context_replays_identically(store: memory.Store, proj) -> None:  # type: ignore[no-untyped-def]
    conversation(store)
    proj(store)
    settings = RetrievalSettings(max_memories=3, recency_half_life_days=30.0)
    ctx = store.context("food preferences for the trip", actor="alice", session="today",
                        budget=220, settings=settings, record=True)
    assert ctx.recorded is not None
    store.append("today", message("user", "New stuff after the recording"), actor="alice")
    proj(store)
    recorded = [e for e in store.read_session("today") if e.type == "context_assembled"]
    assert len(recorded) == 1
    payload = recorded[0].payload
    assert payload["budget"] == 220 and payload["query"] == "food preferences for the trip"
    assert payload["settings"]["max_memories"] == 3
    assert set(payload["source_event_ids"]) == {str(s.event_id) for s in ctx.sources
                                                if s.event_id}
    replayed = store.replay_context(recorded[0])
    assert replayed.replay_matches is True
    assert replayed.messages() == ctx.messages()
    # the recording is not itself a turn of the session
    later = store.context("x", actor="alice", session="today", budget=1000)
    assert all("food preferences" not in m["content"] for m in later.messages())


def test_long_unicode_query_and_tiny_budgets(store: memory.Store, proj) -> None:  # type: ignore[no-untyped-def]
    conversation(store)
    proj(store)
    query = ("Wo ist mein Hund? 🐕 犬はどこ? " * 400)[:10_000]
    assert len(query) == 10_000
    for budget in (0, 1, 5, 17, 60, 400, 4000):
        ctx = store.context(query, actor="alice", session="today", budget=budget)
        check_budget(ctx)
    big = store.context(query, actor="alice", session="today", budget=4000)
    assert "Zoë" in big.text() and "🌸" in big.text()


def test_newest_turn_is_cut_to_fit(store: memory.Store, proj) -> None:  # type: ignore[no-untyped-def]
    huge = "Emoji and prose 😀 " * 2000
    store.append("s", message("user", huge), actor="alice")
    ctx = store.context("q", actor="alice", session="s", budget=50)
    check_budget(ctx)
    assert len(ctx.turns) == 1 and ctx.turns[0].truncated
    assert huge.startswith(ctx.turns[0].content)
    assert "cut to fit" in ctx.sources[0].reason


def test_summary_when_older_turns_do_not_fit(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    turns = []
    for i in range(30):
        turns.append(message("user" if i % 2 == 0 else "assistant",
                             f"Turn {i}: we talked about topic number {i} and the "
                             f"weather in city {i}. It was a long and winding chat.",
                             occurred_at=at(i / 100)))
    store.append("long", turns, actor="alice")
    store.project(embedder=embedder)
    ctx = store.context("what did we say about topic 3?", actor="alice", session="long",
                        budget=300)
    check_budget(ctx)
    assert ctx.summary is not None
    assert ctx.messages()[0]["content"].startswith("Summary of the earlier part")
    src = next(s for s in ctx.sources if s.kind == "summary")
    assert src.event_ids and src.position <= ctx.position
    assert ctx.turns[-1].content.startswith("Turn 29")
    # with a budget that holds everything, no summary is needed
    full = store.context("topic 3", actor="alice", session="long", budget=100_000)
    assert full.summary is None and len(full.turns) == 30


def test_strong_catches_projections_up(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    store.project(embedder=embedder)
    store.append("old", message("user", "The wifi password at the cabin is moose-lake"),
                 actor="alice")
    weak = store.context("cabin wifi password", actor="alice", session="new", budget=200)
    assert "moose-lake" not in weak.text()  # projections lag; another session, not recent
    strong = store.context("cabin wifi password", actor="alice", session="new", budget=200,
                           strong=True, embedder=embedder)
    assert "moose-lake" in strong.text()


def test_bad_arguments(store: memory.Store) -> None:
    with pytest.raises(memory.ValidationError):
        store.context("q", actor="", session="s", budget=10)
    with pytest.raises(memory.ValidationError):
        store.context("q", actor="a", session="s", budget=-1)
    with pytest.raises(memory.ValidationError):
        store.context("q", actor="a", session="s", budget=10, as_of=-3)


def test_unknown_ids_are_just_empty(store: memory.Store) -> None:
    ctx = store.context("q", actor=str(uuid.uuid4()), session="🙂 session", budget=100)
    assert ctx.tokens == 0

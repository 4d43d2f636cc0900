"""Retrieval follows the session's view (memory/log/views.py) against a real Postgres and the
real model: a branch's context never holds its parent's later turns, retracted events
are neither turns nor memories (from the retraction on), a branch's summary covers its
view, and recorded contexts still replay exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import memory
from memory import message
from memory.projections.summaries import summary_at
from memory.retrieval import RetrievalSettings

DAY0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ALL_RECENT = RetrievalSettings(recent_share=1.0)


def at(minutes: float) -> datetime:
    return DAY0 + timedelta(minutes=minutes)


@pytest.fixture
def proj(embedder):  # type: ignore[no-untyped-def]
    def run(store: memory.Store) -> None:
        store.project(embedder=embedder)
    return run


def turn_texts(ctx: memory.retrieval.Context) -> list[str]:
    return [t.content for t in ctx.turns]


def memory_texts(ctx: memory.retrieval.Context) -> list[str]:
    return [m.text for m in ctx.memories]


def parent_and_branch(store: memory.Store) -> None:
    store.append("p", [
        message("user", "We should plan the garden this spring.", occurred_at=at(0)),
        message("assistant", "Tomatoes and basil grow well together.", occurred_at=at(1)),
        message("user", "Let's also plant sunflowers by the fence.", occurred_at=at(2)),
    ], actor="maya")
    store.fork("p", at_version=2, new_session="b", actor="maya")
    store.append("p", [
        message("user", "My bank PIN reminder: the pineapple code.", occurred_at=at(3)),
        message("user", "The pineapple code opens the garage too.", occurred_at=at(4)),
    ], actor="maya")
    store.append("b", message("user", "Instead, what about a herb spiral?",
                              occurred_at=at(5)), actor="maya")
    store.append("elsewhere", message("user", "Unrelated chat about trains.",
                                      occurred_at=at(6)), actor="maya")


def test_a_branch_context_never_holds_the_parents_later_turns(store: memory.Store,
                                                              proj) -> None:  # type: ignore[no-untyped-def]
    parent_and_branch(store)
    proj(store)
    for budget in (40, 400, 4000):
        ctx = store.context("pineapple code garage PIN", actor="maya", session="b",
                            budget=budget)
        assert "pineapple" not in ctx.text() and "sunflowers" not in ctx.text()
    ctx = store.context("pineapple code garage PIN", actor="maya", session="b",
                        budget=4000, settings=ALL_RECENT)
    assert turn_texts(ctx) == ["We should plan the garden this spring.",
                               "Tomatoes and basil grow well together.",
                               "Instead, what about a herb spiral?"]
    # the parent is another session for the actor's other sessions: still eligible
    other = store.context("pineapple code garage PIN", actor="maya", session="elsewhere",
                          budget=4000)
    assert any("pineapple" in t for t in memory_texts(other))
    # and the parent's own context has its later turns
    assert "pineapple" in store.context("garden", actor="maya", session="p",
                                        budget=4000).text()


def test_a_retracted_event_is_neither_turn_nor_memory_from_the_retraction_on(
        store: memory.Store, proj) -> None:  # type: ignore[no-untyped-def]
    store.append("s", [
        message("user", "I adore durian fruit above everything.", occurred_at=at(0)),
        message("assistant", "Durian is famously pungent!", occurred_at=at(1)),
        message("user", "Anyway, book a table for Friday.", occurred_at=at(2)),
    ], actor="maya")
    store.append("t", message("user", "New day, new chat.", occurred_at=at(10)),
                 actor="maya")
    proj(store)
    before = store.head()
    recorded = store.context("durian fruit", actor="maya", session="s", budget=4000,
                             record=True)
    assert "adore durian" in recorded.text()
    first = store.read_session("s")[0]
    store.retract("s", actor="maya", event_ids=[first.event_id], reason="typo")
    for session in ("s", "t"):
        for settings in (None, ALL_RECENT):
            ctx = store.context("durian fruit", actor="maya", session=session,
                                budget=4000, settings=settings)
            assert "adore durian" not in ctx.text(), session
    # as of a position before it, the event is there again; the recorded context replays
    assert "adore durian" in store.context("durian fruit", actor="maya", session="s",
                                           budget=4000, as_of=before).text()
    [event] = [e for e in store.read_session("s") if e.type == "context_assembled"]
    assert store.replay_context(event).replay_matches
    # retract the last item, then everything: nothing of the session is left as a turn
    store.retract("s", actor="maya", last=1)
    ctx = store.context("table Friday", actor="maya", session="s", budget=4000,
                        settings=ALL_RECENT)
    assert turn_texts(ctx) == ["Durian is famously pungent!"]
    store.retract("s", actor="maya", all=True)
    ctx = store.context("durian table Friday pungent", actor="maya", session="s",
                        budget=4000, settings=ALL_RECENT)
    assert ctx.turns == [] and ctx.memories == []


def test_a_branch_hides_an_inherited_event_in_its_own_view_only(
        store: memory.Store, proj) -> None:  # type: ignore[no-untyped-def]
    store.append("p", [
        message("user", "My favourite fruit is mango.", occurred_at=at(0)),
        message("user", "I cycle to work every day.", occurred_at=at(1)),
    ], actor="maya")
    store.fork("p", at_version=2, new_session="b", actor="maya")
    mango = store.read_session("p")[0]
    store.retract("b", actor="maya", event_ids=[mango.event_id])
    proj(store)
    branch = store.context("favourite fruit mango", actor="maya", session="b",
                           budget=4000, settings=ALL_RECENT)
    assert "mango" not in branch.text()
    assert turn_texts(branch) == ["I cycle to work every day."]
    parent = store.context("favourite fruit mango", actor="maya", session="p",
                           budget=4000)
    assert "mango" in parent.text()


def test_a_branch_summary_covers_its_view(store: memory.Store, proj) -> None:  # type: ignore[no-untyped-def]
    parent_and_branch(store)
    proj(store)
    with store.maintenance_engine.connect() as conn:
        summary = summary_at(conn, store.tenant, "b")
    assert summary is not None
    view_ids = {e.event_id for e in store.read_session("b")}
    assert summary.source_event_ids and set(summary.source_event_ids) <= view_ids
    assert "pineapple" not in summary.text
    # a retraction in the branch reshapes its summary at once
    first = store.read_session("b")[0]
    store.retract("b", actor="maya", event_ids=[first.event_id])
    proj(store)
    with store.maintenance_engine.connect() as conn:
        summary = summary_at(conn, store.tenant, "b")
    assert summary is not None and first.event_id not in summary.source_event_ids
    assert "plan the garden" not in summary.text


def test_a_neighbour_of_an_inherited_memory_stops_at_the_fork_point(
        store: memory.Store, proj) -> None:  # type: ignore[no-untyped-def]
    store.append("p", [
        message("user", "Tomatoes and basil grow well together.", occurred_at=at(0)),
        message("user", "Let's also plant sunflowers by the fence.", occurred_at=at(1)),
    ], actor="maya")
    store.fork("p", at_version=1, new_session="b", actor="maya")
    store.append("p", message("user", "The pineapple code opens the garage.",
                              occurred_at=at(2)), actor="maya")
    filler = ("about the weather, the train timetable, the price of coffee, the colour "
              "of the office walls and nothing in particular at all")
    store.append("b", [message("user", f"Filler turn {i} {filler}; {filler}.",
                               occurred_at=at(3 + i)) for i in range(12)], actor="maya")
    proj(store)
    settings = RetrievalSettings(include_neighbours=True, neighbour_window=2)
    ctx = store.context("tomatoes and basil", actor="maya", session="b", budget=260,
                        settings=settings)
    assert any("Tomatoes" in t for t in memory_texts(ctx))  # inherited, as a memory
    assert "sunflowers" not in ctx.text() and "pineapple" not in ctx.text()
    # the parent's own context shows the neighbour
    ctx = store.context("tomatoes and basil", actor="maya", session="elsewhere",
                        budget=4000, settings=settings)
    assert "sunflowers" in ctx.text()

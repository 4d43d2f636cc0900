"""A context call reads the session's view only when a fork or a retraction may shape it:
the call's first statement (memory/retrieval/search/callstate.py) says so, so a session
never forked, in a scope without retractions, costs no view statement. Against a real
Postgres: statements counted on the store's engine, and the flag checked against the
view itself at every log position (a false flag must mean an unshaped view)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

import memory
from memory import message
from memory.log import ViewFilter
from memory.pg import tenant_scope
from memory.retrieval import RetrievalSettings, search

DAY0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ALL_RECENT = RetrievalSettings(recent_share=1.0)
VIEW_MARK = "WITH RECURSIVE chain"  # memory.log.sql.VIEW_FILTER (and READ_VIEW)


def at(minutes: float) -> datetime:
    return DAY0 + timedelta(minutes=minutes)


@contextmanager
def statements(store: memory.Store) -> Iterator[list[str]]:
    """The SQL of every statement run on the store's engine inside the block."""
    seen: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", note)


def view_reads(seen: list[str]) -> int:
    return sum(VIEW_MARK in s for s in seen)


def chat(store: memory.Store, session: str, actor: str, texts: list[str],
         start: float = 0) -> None:
    store.append(session, [message("user" if i % 2 == 0 else "assistant", t,
                                   occurred_at=at(start + i)) for i, t in enumerate(texts)],
                 actor=actor)


def test_an_unforked_session_context_runs_one_statement_fewer(store: memory.Store) -> None:
    chat(store, "s", "maya", ["We should plan the garden this spring.",
                              "Tomatoes and basil grow well together.",
                              "Let's also plant sunflowers by the fence."])
    chat(store, "t", "maya", ["My cousin visits in May.", "Book the guest room."], 10)
    store.context("garden", actor="maya", session="s", budget=400)  # warm the caches
    with statements(store) as plain:
        before = store.context("garden", actor="maya", session="s", budget=400,
                               settings=ALL_RECENT)
    assert view_reads(plain) == 0
    assert len(before.turns) == 3

    # a retraction in the actor's other session: memories of this call may be filtered,
    # so the same call now reads the view, and that statement is the only extra one
    cousin = store.read_session("t")[0]
    store.retract("t", actor="maya", event_ids=[cousin.event_id])
    with statements(store) as shaped:
        after = store.context("garden", actor="maya", session="s", budget=400,
                              settings=ALL_RECENT)
    assert view_reads(shaped) == 1
    assert len(plain) == len(shaped) - 1
    assert [t.content for t in after.turns] == [t.content for t in before.turns]

    # as of a position before the retraction the view cannot be shaped: no view statement
    with statements(store) as earlier:
        again = store.context("garden", actor="maya", session="s", budget=400,
                              settings=ALL_RECENT, as_of=before.position)
    assert view_reads(earlier) == 0 and len(earlier) == len(plain)
    assert again.messages() == before.messages()


def test_a_fork_is_read_by_the_branch_not_by_its_parent(store: memory.Store) -> None:
    chat(store, "p", "maya", ["We should plan the garden this spring.",
                              "Tomatoes and basil grow well together."])
    store.fork("p", at_version=2, new_session="b", actor="maya")
    chat(store, "p", "maya", ["My bank PIN reminder: the pineapple code."], 5)
    chat(store, "b", "maya", ["Instead, what about a herb spiral?"], 6)
    with statements(store) as parent:
        store.context("garden", actor="maya", session="p", budget=400)
    with statements(store) as branch:
        ctx = store.context("garden", actor="maya", session="b", budget=400,
                            settings=ALL_RECENT)
    assert view_reads(parent) == 0 and view_reads(branch) == 1
    assert [t.content for t in ctx.turns] == ["We should plan the garden this spring.",
                                              "Tomatoes and basil grow well together.",
                                              "Instead, what about a herb spiral?"]


def flag(store: memory.Store, session: str, actors: tuple[str, ...], bound: int) -> bool:
    scope = search.Scope(store.tenant, actors[0], session, actors)
    with tenant_scope(store.tenant), store.engine.connect() as conn, conn.begin():
        return search.state(conn, scope, bound, RetrievalSettings()).views


def unshaped(store: memory.Store, session: str, actors: tuple[str, ...], bound: int
             ) -> bool:
    with tenant_scope(store.tenant), store.engine.connect() as conn, conn.begin():
        view = ViewFilter.query(conn, store.tenant, session, actors, bound)
    return not view.filters


def test_a_false_flag_always_means_an_unshaped_view(store: memory.Store) -> None:
    """At every log position, for sessions forked, retracted in, untouched, and for
    another actor's retraction: the flag is false only where the view filters nothing,
    and true wherever a fork or a retraction is in scope."""
    chat(store, "p", "maya", ["one", "two", "three"])
    chat(store, "q", "maya", ["alone"], 3)
    chat(store, "o", "bob", ["bob's own", "bob's second"], 4)
    store.fork("p", at_version=2, new_session="b", actor="maya")
    fork_at = store.head()
    chat(store, "b", "maya", ["branch turn"], 6)
    store.retract("o", actor="bob", last=1)
    bob_retracts_at = store.head()
    chat(store, "p", "maya", ["four"], 7)
    store.retract("p", actor="maya", event_ids=[store.read_session("p")[0].event_id])
    maya_retracts_at = store.head()
    chat(store, "q", "maya", ["later"], 8)

    cases = [(s, a) for s in ("p", "q", "b", "o") for a in (("maya",), ("bob",),
                                                             ("maya", "bob"))]
    for bound in range(store.head() + 1):
        for session, actors in cases:
            shaped = flag(store, session, actors, bound)
            if not shaped:
                assert unshaped(store, session, actors, bound), (session, actors, bound)
    # where it must be true
    assert flag(store, "b", ("maya",), fork_at)
    assert not flag(store, "b", ("maya",), fork_at - 1)
    assert flag(store, "q", ("bob",), bob_retracts_at)
    assert not flag(store, "q", ("maya",), maya_retracts_at - 1)
    assert flag(store, "q", ("maya",), maya_retracts_at)
    assert flag(store, "o", ("maya",), bob_retracts_at)  # the session's own retraction
    assert not flag(store, "o", ("maya",), bob_retracts_at - 1)


def test_contexts_recorded_before_a_fork_or_a_retraction_replay_identically(
        store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    chat(store, "s", "maya", ["I adore durian fruit above everything.",
                              "Durian is famously pungent!",
                              "Anyway, book a table for Friday."])
    chat(store, "t", "maya", ["New day, new chat about durian."], 10)
    store.project(embedder=embedder)
    recorded = [store.context("durian fruit", actor="maya", session=s, budget=4000,
                              record=True, embedder=embedder) for s in ("s", "t")]
    store.fork("s", at_version=2, new_session="b", actor="maya")
    first = store.read_session("s")[0]
    store.retract("s", actor="maya", event_ids=[first.event_id])
    store.project(embedder=embedder)
    branch = store.context("durian fruit", actor="maya", session="b", budget=4000,
                           record=True, embedder=embedder)
    # the branch keeps the parent's prefix (a later retraction in the parent is the
    # parent's view) and never the parent's turn after the fork point
    assert "adore durian" in branch.text() and "Friday" not in branch.text()
    after = store.context("durian fruit", actor="maya", session="s", budget=4000,
                          embedder=embedder)
    assert "adore durian" not in after.text()
    for ctx in (*recorded, branch):
        assert ctx.recorded is not None
    events = [e for s in ("s", "t", "b") for e in store.read_session(s)
              if e.type == "context_assembled"]
    assert len(events) == 3
    for event in events:
        assert store.replay_context(event, embedder=embedder).replay_matches
    assert "adore durian" in recorded[0].text()

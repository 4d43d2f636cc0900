"""Session views (memory/log/views.py) against the real server: forks at every position, forks
of forks, concurrent appends to a parent and its branch, retractions (one, the last, all)
and reading as of a position before them, forgetting a parent's events, the refusals."""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

import memory
from memory import message, note
from memory.errors import (
    ConcurrencyError,
    ForkPointError,
    InvalidArgument,
    RetractionError,
    SessionExists,
    SessionOwnershipError,
    UnknownSession,
    ValidationError,
)
from memory.log import FORK_TYPE, RETRACT_TYPE


def texts(events: list[memory.RecordedEvent]) -> list[str]:
    return [e.payload.get("content") or e.payload.get("text") or e.type for e in events]


def origins(events: list[memory.RecordedEvent]) -> list[tuple[str, int]]:
    return [(e.session_id, e.version) for e in events]


def session(store: memory.Store, name: str, n: int, actor: str = "maya") -> None:
    store.append(name, [message("user", f"{name} {i}") for i in range(1, n + 1)],
                 actor=actor)


def test_a_fork_at_every_position_shows_the_prefix_then_its_own(store: memory.Store
                                                                 ) -> None:
    session(store, "p", 5)
    for n in range(1, 6):
        store.fork("p", at_version=n, new_session=f"b{n}", actor="maya")
        store.append(f"b{n}", message("assistant", f"own of b{n}"), actor="maya")
    store.append("p", message("user", "p later"), actor="maya")
    for n in range(1, 6):
        view = store.read_session(f"b{n}")
        assert texts(view) == [f"p {i}" for i in range(1, n + 1)] + [FORK_TYPE,
                                                                    f"own of b{n}"]
        assert origins(view) == [("p", i) for i in range(1, n + 1)] + [(f"b{n}", 1),
                                                                      (f"b{n}", 2)]
        assert [e.position for e in view] == sorted(e.position for e in view)
        assert texts(store.read_session(f"b{n}", from_version=2)) == [f"own of b{n}"]
    assert texts(store.read_session("p"))[-1] == "p later"  # the parent is untouched


def test_a_fork_of_a_fork_inherits_each_prefix(store: memory.Store) -> None:
    session(store, "a", 3)
    store.fork("a", at_version=2, new_session="b", actor="maya")
    store.append("b", [message("user", "b 2"), message("user", "b 3")], actor="maya")
    store.append("a", message("user", "a later"), actor="maya")
    store.fork("b", at_version=2, new_session="c", actor="maya")  # a1 a2 fork(b) b2
    store.append("c", message("user", "c 2"), actor="maya")
    store.append("b", message("user", "b later"), actor="maya")
    assert texts(store.read_session("c")) == ["a 1", "a 2", FORK_TYPE, "b 2", FORK_TYPE,
                                              "c 2"]
    assert origins(store.read_session("c")) == [("a", 1), ("a", 2), ("b", 1), ("b", 2),
                                                ("c", 1), ("c", 2)]
    view = store.view("c")
    assert [(s.session_id, s.upto) for s in view.segments] == [("c", None), ("b", 2),
                                                               ("a", 2)]
    assert view.version == 2


def test_concurrent_appends_to_parent_and_branch_keep_each_its_own_versions(
        store: memory.Store) -> None:
    session(store, "p", 2)
    store.fork("p", at_version=2, new_session="b", actor="maya")
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(15):
                store.append(name, message("user", f"{name}-{i}"), actor="maya")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in ("p", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert texts(store.read_session("b")) == ["p 1", "p 2", FORK_TYPE] + [
        f"b-{i}" for i in range(15)]
    assert [e.version for e in store.read_session("b")][2:] == list(range(1, 17))
    assert texts(store.read_session("p")) == ["p 1", "p 2"] + [f"p-{i}" for i in range(15)]
    # optimistic concurrency counts the branch's own versions
    with pytest.raises(ConcurrencyError):
        store.append("b", note("stale"), actor="maya", expected_version=3)
    store.append("b", note("fresh"), actor="maya", expected_version=16)


def test_forks_are_refused_with_a_typed_error_and_nothing_written(store: memory.Store
                                                                  ) -> None:
    session(store, "p", 3)
    session(store, "other", 1, actor="sam")
    head = store.head()
    with pytest.raises(UnknownSession):
        store.fork("missing", at_version=1, new_session="x", actor="maya")
    with pytest.raises(SessionOwnershipError):
        store.fork("other", at_version=1, new_session="x", actor="maya")
    with pytest.raises(ForkPointError):
        store.fork("p", at_version=4, new_session="x", actor="maya")
    with pytest.raises(ForkPointError):
        store.fork("p", at_version=0, new_session="x", actor="maya")
    with pytest.raises(SessionExists):
        store.fork("p", at_version=1, new_session="other", actor="maya")
    with pytest.raises(SessionExists):
        store.fork("p", at_version=1, new_session="p", actor="maya")
    with pytest.raises(InvalidArgument):
        store.fork("p", at_version="1", new_session="x", actor="maya")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):  # control events go through fork and retract
        store.append("x", memory.NewEvent(FORK_TYPE, {"parent_session_id": "other",
                                                      "parent_version": 1}), actor="maya")
    assert store.head() == head
    assert store.read_session("x") == []


def test_retract_the_last_item_then_everything(store: memory.Store) -> None:
    session(store, "s", 3)
    store.retract("s", actor="maya", last=1, reason="undo")
    assert texts(store.read_session("s")) == ["s 1", "s 2", RETRACT_TYPE]
    store.append("s", message("user", "s 4"), actor="maya")
    store.retract("s", actor="maya", all=True)
    assert texts(store.read_session("s")) == [RETRACT_TYPE, RETRACT_TYPE]
    view = store.view("s")
    assert [texts([h.event])[0] for h in view.hidden] == ["s 1", "s 2", "s 3", "s 4"]
    assert view.hidden[2].hidden_by is not None
    assert view.hidden[2].hidden_by.payload["reason"] == "undo"
    with pytest.raises(RetractionError):  # nothing visible is left
        store.retract("s", actor="maya", last=1)
    with pytest.raises(RetractionError):  # already hidden
        store.retract("s", actor="maya", event_ids=[view.hidden[0].event.event_id])


def test_retraction_then_as_of_before_it_still_shows_the_events(store: memory.Store
                                                                ) -> None:
    session(store, "s", 3)
    before = store.head()
    second = store.read_session("s")[1]
    out = store.retract("s", actor="maya", event_ids=[second.event_id], reason="wrong")
    assert texts(store.read_session("s")) == ["s 1", "s 3", RETRACT_TYPE]
    assert texts(store.read_session("s", as_of=before)) == ["s 1", "s 2", "s 3"]
    assert texts(store.read_session("s", as_of=out.position)) == ["s 1", "s 3",
                                                                  RETRACT_TYPE]


def test_a_branch_retracting_an_inherited_event_hides_it_in_its_own_view_only(
        store: memory.Store) -> None:
    session(store, "p", 3)
    store.fork("p", at_version=3, new_session="b", actor="maya")
    first = store.read_session("p")[0]
    store.retract("b", actor="maya", event_ids=[first.event_id])
    assert texts(store.read_session("b")) == ["p 2", "p 3", FORK_TYPE, RETRACT_TYPE]
    assert texts(store.read_session("p")) == ["p 1", "p 2", "p 3"]
    # a branch of the branch inherits the retraction (it is in its prefix)
    store.fork("b", at_version=2, new_session="c", actor="maya")
    assert texts(store.read_session("c"))[:2] == ["p 2", "p 3"]


def test_retract_refuses_bad_input_and_writes_nothing(store: memory.Store) -> None:
    session(store, "s", 2)
    head = store.head()
    with pytest.raises(InvalidArgument):
        store.retract("s", actor="maya")
    with pytest.raises(InvalidArgument):
        store.retract("s", actor="maya", last=1, all=True)
    with pytest.raises(InvalidArgument):
        store.retract("s", actor="maya", last=0)
    with pytest.raises(RetractionError):
        store.retract("s", actor="maya", event_ids=[uuid.uuid4()])
    with pytest.raises(SessionOwnershipError):
        store.retract("s", actor="sam", last=1)
    with pytest.raises(UnknownSession):
        store.retract("none", actor="maya", last=1)
    with pytest.raises(InvalidArgument):
        store.retract("s", actor="maya", last=1, reason="x" * 1001)
    assert store.head() == head


def test_forgetting_the_parents_events_reaches_every_branch(store: memory.Store) -> None:
    session(store, "p", 3)
    store.fork("p", at_version=3, new_session="b", actor="maya")
    store.fork("b", at_version=1, new_session="c", actor="maya")
    second = store.read_session("p")[1]
    store.retract("b", actor="maya", event_ids=[second.event_id])
    store.forget(event_ids=[second.event_id])
    for name in ("p", "b", "c"):
        view = store.view(name)
        found = [en.event for en in view.entries if en.event.event_id == second.event_id]
        assert len(found) == 1 and found[0].forgotten and found[0].payload == {}
    # the rows hold no clear text of it anywhere
    with store.maintenance_engine.connect() as conn:
        n = conn.exec_driver_sql("SELECT count(*) FROM memory_events WHERE "
                                 "payload::text LIKE '%%p 2%%'").scalar_one()
    assert n == 0
    store.forget(actor="maya")
    assert all(e.forgotten or e.type in (FORK_TYPE, RETRACT_TYPE)
               for e in store.view("c").events)


def test_a_view_never_reaches_another_actor_even_through_a_raw_fork_event(
        store: memory.Store) -> None:
    """A fork event appended below the library (Log.append, no checks) that names another
    actor's session, or a version past what was written before it, shows nothing more."""
    session(store, "theirs", 2, actor="sam")
    session(store, "mine", 1)
    store.log.append(store.tenant, "maya", "sneaky", memory.NewEvent(
        FORK_TYPE, {"parent_session_id": "theirs", "parent_version": 2}))
    assert texts(store.read_session("sneaky")) == [FORK_TYPE]
    store.log.append(store.tenant, "maya", "ahead", memory.NewEvent(
        FORK_TYPE, {"parent_session_id": "mine", "parent_version": 5}))
    assert texts(store.read_session("ahead")) == [FORK_TYPE]


def test_control_events_are_stored_in_clear_and_the_rest_sealed(store: memory.Store
                                                                ) -> None:
    session(store, "p", 1)
    store.fork("p", at_version=1, new_session="b", actor="maya")
    store.retract("b", actor="maya", last=1)
    with store.maintenance_engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT type, payload IS NULL, payload_enc IS NULL FROM memory_events "
            "ORDER BY position")).fetchall()
    assert [tuple(r) for r in rows] == [("message", True, False),
                                        (FORK_TYPE, False, True),
                                        (RETRACT_TYPE, False, True)]


def raw_append(store: memory.Store, session: str, type_: str, payload_json: str) -> None:
    """An event written below the library's validation (as SQL on the app's connection
    could), through the log's own append function."""
    from datetime import UTC, datetime

    from memory.log import sql as log_sql
    from memory.log.events import PreparedEvent

    event = PreparedEvent(uuid.uuid4(), type_, 1, payload_json, "{}",
                          datetime.now(UTC), uuid.uuid4().bytes * 2)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("SELECT set_config('memory.tenant', %s, true)", (store.tenant,))
        conn.exec_driver_sql(log_sql.APPEND, log_sql.append_params(
            store.tenant, "maya", session, None, [event])).fetchall()


def test_malformed_control_events_below_the_library_shape_nothing(store: memory.Store
                                                                  ) -> None:
    session(store, "p", 2)
    raw_append(store, "f", FORK_TYPE, '{"parent_session_id": "p", "parent_version": "x"}')
    raw_append(store, "p", RETRACT_TYPE, '{"event_ids": "all of them", "reason": ""}')
    raw_append(store, "p", RETRACT_TYPE, '{"event_ids": ["not-a-uuid", 7], "reason": ""}')
    assert texts(store.read_session("f")) == [FORK_TYPE]
    assert texts(store.read_session("p")) == ["p 1", "p 2", RETRACT_TYPE, RETRACT_TYPE]
    ctx = store.context("p", actor="maya", session="p", budget=500)
    assert [t.content for t in ctx.turns] == ["p 1", "p 2"]


def test_a_chain_deeper_than_the_limit_is_refused(store: memory.Store) -> None:
    from memory.errors import ViewError
    from memory.log.views import MAX_DEPTH

    session(store, "s0", 1)
    for k in range(1, MAX_DEPTH + 1):
        store.fork(f"s{k - 1}", at_version=1, new_session=f"s{k}", actor="maya")
    assert texts(store.read_session(f"s{MAX_DEPTH}")) == ["s0 1"] + [FORK_TYPE] * MAX_DEPTH
    head = store.head()
    with pytest.raises(ViewError):
        store.fork(f"s{MAX_DEPTH}", at_version=1, new_session="too-deep", actor="maya")
    assert store.head() == head

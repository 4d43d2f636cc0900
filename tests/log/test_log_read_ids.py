"""Reading events by id (``read_ids``, both faces) and what shapes a view without its events
(``ViewFilter.read``): a reader that derives the ids it needs finds them whatever their
session, never another tenant's, forgotten ones marked so, and bad ids refused."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from aioface import SyncAsyncLog

import memory
from memory import EventLog
from memory.config import DEFAULT_TENANT
from memory.errors import InvalidArgument
from memory.log import ViewFilter

T = DEFAULT_TENANT

FACES: dict[str, Callable[[memory.Store], EventLog]] = {
    "sync": lambda store: store.log,
    "async": SyncAsyncLog,
}


@pytest.fixture(params=sorted(FACES))
def event_log(request: pytest.FixtureRequest, store: memory.Store) -> Iterator[EventLog]:
    log = FACES[request.param](store)
    yield log
    log.close()


def test_events_are_found_by_id_across_sessions_in_log_order(
        event_log: EventLog, store: memory.Store) -> None:
    a = store.append("a", [memory.note("first"), memory.note("second")], actor="x")
    b = store.append("b", memory.note("third"), actor="x")
    wanted = [b[0].event_id, str(a[1].event_id), a[0].event_id, uuid.uuid4(), b[0].event_id]
    found = event_log.read_ids(T, wanted)
    assert [e.payload["text"] for e in found] == ["first", "second", "third"]
    assert [(e.session_id, e.version) for e in found] == [("a", 1), ("a", 2), ("b", 1)]
    assert event_log.read_ids(T, []) == []
    assert event_log.read_ids(T, a[0].event_id)[0].payload == {"text": "first"}


def test_another_tenants_events_and_forgotten_payloads_are_not_read(
        event_log: EventLog, store: memory.Store) -> None:
    mine = store.append("s", [memory.note("kept"), memory.note("gone")], actor="x")
    other = store.for_tenant("other")
    theirs = other.append("s", memory.note("theirs"), actor="y")
    store.forget(event_ids=[mine[1].event_id], erase=False)
    found = event_log.read_ids(T, [m.event_id for m in mine] + [theirs[0].event_id])
    assert [(e.payload, e.forgotten) for e in found] == [({"text": "kept"}, False),
                                                         ({}, True)]
    assert [e.payload for e in other.log.read_ids("other", [theirs[0].event_id])] \
        == [{"text": "theirs"}]


@pytest.mark.parametrize("bad", [["not-a-uuid"], [None], [3]])
def test_ids_that_are_not_uuids_are_refused(event_log: EventLog, bad: list[object]) -> None:
    with pytest.raises(InvalidArgument, match="event_ids"):
        event_log.read_ids(T, bad)  # type: ignore[arg-type]


def test_too_many_ids_at_once_are_refused(event_log: EventLog, store: memory.Store) -> None:
    many = [uuid.uuid4() for _ in range(store.limits.max_batch + 1)]
    with pytest.raises(InvalidArgument, match="at most"):
        event_log.read_ids(T, many)


def test_view_filter_read_gives_a_forks_segments_and_hidden_ids(store: memory.Store) -> None:
    parent = store.append("p", [memory.note(str(i)) for i in range(4)], actor="x")
    store.fork("p", at_version=3, new_session="b", actor="x")
    store.retract("b", actor="x", event_ids=[parent[0].event_id])
    view = ViewFilter.read(store.log, T, "b")
    assert [(s.session_id, s.upto) for s in view.segments] == [("b", None), ("p", 3)]
    assert view.hidden == frozenset({str(parent[0].event_id)})
    assert ViewFilter.read(store.log, T, "b", as_of=parent[-1].position).segments[0].upto \
        is None
    plain = ViewFilter.read(store.log, T, "p")
    assert not plain.shaped and [s.session_id for s in plain.segments] == ["p"]
    # a retraction in the session itself shapes it too; before it, nothing did
    store.retract("p", actor="x", event_ids=[parent[1].event_id])
    own = ViewFilter.read(store.log, T, "p")
    assert own.shaped and own.hidden == frozenset({str(parent[1].event_id)})
    assert not ViewFilter.read(store.log, T, "p", as_of=parent[-1].position).shaped
    assert ViewFilter.read(store.log, T, "never").segments[0].session_id == "never"

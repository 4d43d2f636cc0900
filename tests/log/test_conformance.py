"""The event log's contract (memory/log/contract.py), proven for every implementation.

Every test takes the ``event_log`` fixture, parametrised over ``IMPLEMENTATIONS``: a face
of the log is added to the suite by adding one entry there (an async face enters as an
adapter that runs its coroutines to completion and returns their results). Each
implementation is built over a fresh, migrated database, so every test starts from an
empty log. Tests of one implementation's internals (group commit, the SQL's lock, the
NOTIFY wake-up) stay beside it in tests/log/test_log_*.py.
"""

from __future__ import annotations

import inspect
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from aioface import SyncAsyncLog
from support import open_append, psycopg_url

import memory
from memory import EventLog, EventSubscription
from memory.config import DEFAULT_TENANT
from memory.log import Log
from memory.log import sql as log_sql

T = DEFAULT_TENANT
"""The tenant every test writes as (the store's own, so row-level security lets it)."""

IMPLEMENTATIONS: dict[str, Callable[[memory.Store], EventLog]] = {
    "sync": lambda store: store.log,
    "async": SyncAsyncLog,  # memory.aio.AsyncLog, its coroutines run on a private loop
}
"""Each face of the log, built from a store over a fresh database."""


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def event_log(request: pytest.FixtureRequest, store: memory.Store) -> Iterator[EventLog]:
    log = IMPLEMENTATIONS[request.param](store)
    yield log
    log.close()


def count(log: EventLog) -> int:
    return len(list(log.read(0, tenant=T)))


def notes(prefix: str, n: int) -> list[memory.NewEvent]:
    return [memory.note(f"{prefix} {i}") for i in range(n)]


# -- the protocol itself -----------------------------------------------------------------


def test_the_sync_log_is_an_event_log(store: memory.Store) -> None:
    log: EventLog = store.log  # the typed assignment a type checker verifies
    assert isinstance(log, Log) and isinstance(log, EventLog)


@pytest.mark.parametrize("name", ["append", "read", "read_session", "subscribe", "head",
                                  "session_version", "close"])
def test_each_operation_takes_the_contracts_arguments(event_log: EventLog, name: str) -> None:
    """Same parameter names, kinds and defaults as the protocol: a caller written against
    the contract works with any face."""
    assert isinstance(event_log, EventLog)

    def shape(fn: Any) -> list[tuple[str, Any, Any]]:
        params = list(inspect.signature(fn).parameters.values())
        return [(p.name, p.kind, p.default) for p in params if p.name != "self"]

    assert shape(getattr(event_log, name)) == shape(getattr(EventLog, name))


# -- global order ------------------------------------------------------------------------


def test_positions_increase_across_sessions_in_append_order(event_log: EventLog) -> None:
    landed = []
    for session, actor, n in [("a", "alice", 2), ("b", "bob", 1), ("a", "alice", 3),
                              ("c", "carol", 2), ("b", "bob", 1)]:
        landed += event_log.append(T, actor, session, notes(session, n))
    positions = [r.position for r in landed]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    everything = list(event_log.read(0, tenant=T))
    assert [(e.position, e.event_id) for e in everything] == \
        [(r.position, r.event_id) for r in landed]
    assert event_log.head(T) == positions[-1]
    assert [e.version for e in event_log.read_session(T, "a")] == [1, 2, 3, 4, 5]
    assert [e.payload["text"] for e in event_log.read_session(T, "a")] == \
        ["a 0", "a 1", "a 0", "a 1", "a 2"]
    assert event_log.session_version(T, "b") == 2
    assert event_log.session_version(T, "never") == 0
    # ``from_position`` is exclusive; ``from_version`` inclusive.
    assert [e.position for e in event_log.read(positions[3], tenant=T)] == positions[4:]
    assert [e.version for e in event_log.read_session(T, "a", 4)] == [4, 5]
    assert [e.position for e in event_log.read(0, tenant=T, batch_size=2)] == positions


# -- no gaps for readers -----------------------------------------------------------------


def test_follower_sees_every_committed_event_once_despite_late_commits(
        event_log: EventLog, store: memory.Store, database_url: str) -> None:
    """Writers with random delays append while a foreign writer of the same database holds
    its append transaction open for a while (twice); a subscription follows the whole
    time. Its sequence must equal a full read afterwards: nothing skipped, nothing twice."""
    rng = random.Random(20261127)
    delivered: list[memory.RecordedEvent] = []
    sub = event_log.subscribe(0, tenant=T, poll_interval=0.05)
    assert isinstance(sub, EventSubscription)
    follower = threading.Thread(target=lambda: delivered.extend(sub))
    follower.start()
    written: list[int] = []
    errors: list[BaseException] = []
    slow_holding = threading.Event()

    def slow_writer() -> None:
        try:
            for batch in range(2):
                events = [memory.note(f"slow {batch}.{i}") for i in range(3)]
                with open_append(database_url, store, "slow-session", events) as rows:
                    slow_holding.set()
                    time.sleep(0.6)  # others queue behind the lock meanwhile
                written.append(len(rows))
                time.sleep(0.2)
        except BaseException as exc:
            errors.append(exc)

    def fast_writer(k: int, delays: list[float], sizes: list[int]) -> None:
        try:
            slow_holding.wait(10)
            for i, (delay, size) in enumerate(zip(delays, sizes, strict=True)):
                time.sleep(delay)
                batch = [memory.message("user", f"writer {k} turn {i}.{j}")
                         for j in range(size)]
                written.append(len(event_log.append(T, f"user-{k}", f"fast-{k}", batch)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=slow_writer)] + [
        threading.Thread(target=fast_writer, args=(
            k, [rng.uniform(0, 0.06) for _ in range(12)], [rng.randint(1, 3) for _ in range(12)]))
        for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    total = sum(written)
    deadline = time.monotonic() + 15
    while len(delivered) < total and time.monotonic() < deadline:
        time.sleep(0.02)
    sub.stop()
    follower.join(10)
    assert not follower.is_alive()

    full = list(event_log.read(0, tenant=T))
    assert len(full) == total
    seen = [(e.position, e.event_id) for e in delivered]
    assert seen == [(e.position, e.event_id) for e in full]
    assert len({e.event_id for e in delivered}) == total
    assert sub.position == full[-1].position  # the checkpoint a follower keeps


def test_a_subscription_resumes_after_its_checkpoint(event_log: EventLog) -> None:
    event_log.append(T, "alice", "s", notes("a", 5))
    first = list(event_log.read(0, tenant=T))
    got: list[memory.RecordedEvent] = []
    with event_log.subscribe(first[2].position, tenant=T, poll_interval=0.05) as sub:
        follower = threading.Thread(target=lambda: got.extend(sub))
        follower.start()
        event_log.append(T, "alice", "s", notes("b", 2))
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    follower.join(10)
    assert not follower.is_alive()
    assert [e.version for e in got] == [4, 5, 6, 7]


# -- optimistic concurrency per session --------------------------------------------------


@pytest.mark.parametrize("expected", [1, memory.NO_STREAM], ids=["version-1", "no-stream"])
def test_eight_writers_same_expected_version_one_wins(event_log: EventLog, database_url: str,
                                                      expected: int) -> None:
    session = "race"
    if expected == 1:
        event_log.append(T, "alice", session, memory.note("before the race"))
    else:
        event_log.append(T, "alice", "warm-up", memory.note("the actor exists"))
    barrier = threading.Barrier(8)
    wins: list[int] = []
    conflicts: list[memory.ConcurrencyError] = []
    other: list[BaseException] = []

    def write(k: int) -> None:
        barrier.wait()
        try:
            event_log.append(T, "alice", session, memory.note(f"writer {k}"),
                             expected_version=expected)
            wins.append(k)
        except memory.ConcurrencyError as exc:
            conflicts.append(exc)
        except BaseException as exc:
            other.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not other, other
    assert len(wins) == 1
    assert len(conflicts) == 7
    for exc in conflicts:
        assert exc.session_id == session
        assert exc.expected == expected
        assert exc.actual == expected + 1
        assert "re-read the session" in str(exc)
    events = event_log.read_session(T, session)
    assert [e.version for e in events] == list(range(1, expected + 2))
    assert events[-1].payload == {"text": f"writer {wins[0]}"}
    with psycopg.connect(psycopg_url(database_url)) as conn:
        dupes = conn.execute(
            "SELECT version, count(*) FROM memory_events WHERE session_id = %s "
            "GROUP BY version HAVING count(*) > 1", (session,)).fetchall()
    assert dupes == []


def test_stale_expectation_writes_nothing(event_log: EventLog) -> None:
    event_log.append(T, "a", "s", [memory.note("one"), memory.note("two")])
    head = event_log.head(T)
    with pytest.raises(memory.ConcurrencyError) as info:
        event_log.append(T, "a", "s", [memory.note("three"), memory.note("four")],
                         expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    with pytest.raises(memory.ConcurrencyError):
        event_log.append(T, "a", "s", memory.note("three"), expected_version=memory.NO_STREAM)
    with pytest.raises(memory.ConcurrencyError) as ahead:
        event_log.append(T, "a", "never-written", notes("x", 2), expected_version=3)
    assert (ahead.value.expected, ahead.value.actual) == (3, 0)
    assert event_log.head(T) == head
    assert [e.version for e in event_log.read_session(T, "s")] == [1, 2]
    assert event_log.read_session(T, "never-written") == []
    event_log.append(T, "a", "s", memory.note("three"), expected_version=2)
    assert [e.version for e in event_log.read_session(T, "s")] == [1, 2, 3]


# -- idempotent appends ------------------------------------------------------------------


def batch(n: int = 3, prefix: str = "turn") -> list[memory.NewEvent]:
    return [memory.message("user" if i % 2 else "assistant", f"{prefix} {i}",
                           event_id=uuid.uuid4(), metadata={"i": i}) for i in range(n)]


def test_first_append_is_not_a_duplicate(event_log: EventLog) -> None:
    out = event_log.append(T, "alice", "s", batch(2))
    assert [r.duplicate for r in out] == [False, False]
    assert [r.version for r in out] == [1, 2]
    assert out[1].position > out[0].position


def test_resent_batch_returns_the_original_positions(event_log: EventLog) -> None:
    event_log.append(T, "bob", "other", memory.note("someone else's event first"))
    events = batch(3)
    first = event_log.append(T, "alice", "s", events, expected_version=memory.NO_STREAM)
    head = event_log.head(T)
    retry = event_log.append(T, "alice", "s", events, expected_version=memory.NO_STREAM)
    assert [(r.event_id, r.position, r.version) for r in retry] == \
        [(r.event_id, r.position, r.version) for r in first]
    assert all(r.duplicate for r in retry)
    one = event_log.append(T, "alice", "s", events[1], expected_version=memory.NO_STREAM)
    assert one[0].position == first[1].position and one[0].duplicate
    assert event_log.head(T) == head and count(event_log) == 4


def test_retry_matches_with_defaulted_occurred_at(event_log: EventLog) -> None:
    """occurred_at defaults to the time of the call; a plain retry (a second later) of the
    same event must still match, so the default is not part of the identity."""
    event = memory.note("remember the milk", event_id=uuid.uuid4())
    first = event_log.append(T, "alice", "s", event)
    second = event_log.append(T, "alice", "s", event)
    assert second[0].duplicate and second[0].position == first[0].position


def test_explicit_occurred_at_is_part_of_the_identity(event_log: EventLog) -> None:
    eid = uuid.uuid4()
    when = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    event_log.append(T, "alice", "s", memory.note("x", event_id=eid, occurred_at=when))
    same = event_log.append(T, "alice", "s", memory.note("x", event_id=eid, occurred_at=when))
    assert same[0].duplicate
    with pytest.raises(memory.IdempotencyConflict):
        event_log.append(T, "alice", "s", memory.note(
            "x", event_id=eid, occurred_at=datetime(2026, 5, 2, tzinfo=UTC)))


@pytest.mark.parametrize("change", ["payload", "metadata", "type", "actor", "session"])
def test_same_id_other_content_is_refused_and_writes_nothing(event_log: EventLog,
                                                             change: str) -> None:
    eid = uuid.uuid4()
    event_log.append(T, "alice", "s",
                     memory.message("user", "hello", event_id=eid, metadata={"k": 1}))
    head, before = event_log.head(T), count(event_log)
    fresh = memory.note("a new event in the same batch")
    variants: dict[str, tuple[str, str, memory.NewEvent]] = {
        "payload": ("s", "alice", memory.message("user", "HELLO", event_id=eid,
                                                 metadata={"k": 1})),
        "metadata": ("s", "alice", memory.message("user", "hello", event_id=eid,
                                                  metadata={"k": 2})),
        "type": ("s", "alice", memory.note("hello", event_id=eid, metadata={"k": 1})),
        "actor": ("other", "bob", memory.message("user", "hello", event_id=eid,
                                                 metadata={"k": 1})),
        "session": ("s2", "alice", memory.message("user", "hello", event_id=eid,
                                                  metadata={"k": 1})),
    }
    session, actor, event = variants[change]
    with pytest.raises(memory.IdempotencyConflict) as info:
        event_log.append(T, actor, session, [fresh, event])
    assert str(eid) in str(info.value)
    assert info.value.event_id == str(eid)
    assert event_log.head(T) == head and count(event_log) == before
    assert event_log.read_session(T, "s")[0].payload == {"role": "user", "content": "hello"}


def test_batch_overlapping_an_earlier_one_is_refused_whole(event_log: EventLog) -> None:
    first = batch(2)
    event_log.append(T, "alice", "s", first)
    head = event_log.head(T)
    with pytest.raises(memory.IdempotencyConflict) as info:
        event_log.append(T, "alice", "s", [first[0], memory.note("not in the first batch")])
    assert info.value.event_id == str(first[0].event_id)
    assert event_log.head(T) == head and count(event_log) == 2


def test_event_id_as_string_is_the_same_event(event_log: EventLog) -> None:
    eid = uuid.uuid4()
    first = event_log.append(T, "alice", "s", memory.note("a", event_id=eid))
    second = event_log.append(T, "alice", "s", memory.note("a", event_id=str(eid).upper()))
    assert second[0].duplicate and second[0].position == first[0].position


# -- immutability ------------------------------------------------------------------------

TAMPERING = {
    "update": "UPDATE memory_events SET type = 'tampered'",
    "update-no-match": "UPDATE memory_events SET type = 'tampered' WHERE false",
    "delete": "DELETE FROM memory_events",
    "delete-one": "DELETE FROM memory_events WHERE version = 1",
    "delete-no-match": "DELETE FROM memory_events WHERE false",
    "truncate": "TRUNCATE memory_events",
    "truncate-cascade": "TRUNCATE memory_events CASCADE",
}


def snapshot(database_url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(psycopg_url(database_url)) as conn:
        return conn.execute("SELECT position, event_id, type, payload, payload_enc, metadata "
                            "FROM memory_events ORDER BY position").fetchall()


def test_raw_sql_cannot_change_history(event_log: EventLog, database_url: str) -> None:
    """As the superuser that owns the table; ``session_replication_role = replica`` (which
    silences ordinary triggers) does not help either."""
    event_log.append(T, "alice", "s", [memory.message("user", "hello"),
                                       memory.note("likes tea")])
    written = snapshot(database_url)
    assert len(written) == 2
    for replica in (False, True):
        for name, statement in TAMPERING.items():
            with psycopg.connect(psycopg_url(database_url)) as conn:
                if replica:
                    conn.execute("SET session_replication_role = replica")
                with pytest.raises(psycopg.Error) as info:
                    conn.execute(statement)
                assert info.value.sqlstate == log_sql.SQLSTATE_APPEND_ONLY, (name, replica)
                assert "append-only" in str(info.value)
    assert snapshot(database_url) == written
    assert [e.payload for e in event_log.read_session(T, "s")] == [
        {"role": "user", "content": "hello"}, {"text": "likes tea"}]


# -- bad input refused whole -------------------------------------------------------------

BAD_THIRD_EVENT: dict[str, tuple[memory.NewEvent, type[memory.Error], str]] = {
    "unknown type": (memory.NewEvent("no_such_type", {"text": "x"}),
                     memory.UnknownEventType, "type"),
    "payload off its schema": (memory.NewEvent("message", {"role": "user"}),
                               memory.ValidationError, "payload"),
    "NaN in the payload": (memory.NewEvent("note", {"text": "x", "score": float("nan")}),
                           memory.ValidationError, "payload"),
    "metadata not an object": (memory.NewEvent("note", {"text": "x"}, metadata=["x"]),
                               memory.ValidationError, "metadata"),
    "bad event id": (memory.note("x", event_id="not-a-uuid"),
                     memory.ValidationError, "event_id"),
}


@pytest.mark.parametrize("case", BAD_THIRD_EVENT.values(), ids=BAD_THIRD_EVENT.keys())
def test_a_batch_with_one_bad_event_writes_none_of_it(
        event_log: EventLog, case: tuple[memory.NewEvent, type[memory.Error], str]) -> None:
    bad, error, field = case
    event_log.append(T, "alice", "s", memory.note("already there"))
    head = event_log.head(T)
    with pytest.raises(error) as info:
        event_log.append(T, "alice", "s", [memory.note("fine"), memory.note("fine too"), bad])
    assert info.value.index == 2
    assert info.value.field == field, info.value
    assert event_log.head(T) == head and count(event_log) == 1
    assert event_log.session_version(T, "s") == 1


def test_same_id_twice_in_one_batch_is_refused(event_log: EventLog) -> None:
    eid = uuid.uuid4()
    with pytest.raises(memory.ValidationError) as info:
        event_log.append(T, "alice", "s", [memory.note("a", event_id=eid),
                                           memory.note("a", event_id=eid)])
    assert info.value.index == 1 and info.value.field == "event_id"
    assert event_log.head(T) == 0


@pytest.mark.parametrize("args,field", [
    (("", "alice", "s"), "tenant"),
    ((T, "", "s"), "actor_id"),
    ((T, "alice", "a\x00b"), "session_id"),
], ids=["empty tenant", "empty actor", "NUL in session"])
def test_bad_ids_write_nothing(event_log: EventLog, args: tuple[str, str, str],
                               field: str) -> None:
    with pytest.raises(memory.ValidationError) as info:
        event_log.append(*args, notes("x", 2))
    assert info.value.field == field
    assert event_log.head(T) == 0

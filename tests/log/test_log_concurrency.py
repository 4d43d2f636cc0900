"""Optimistic concurrency and the no-gap guarantee, against the real server.

Invariants 2 and 3 of DESIGN.md: writers racing on one session with the same expectation
produce exactly one winner; a reader following the log by position never skips an event
that commits late, so its checkpoint ("everything up to the highest position I saw") is
safe.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

import memory
from memory.log import sql as log_sql


def psycopg_url(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
        hide_password=False)


@contextmanager
def open_append(database_url: str, store: memory.Store, session: str,
                events: list[memory.NewEvent], actor: str = "slow") -> Iterator[list[Any]]:
    """An append whose transaction stays open inside the block (raw SQL: BEGIN, the same
    statement the library runs, ..., COMMIT when the block ends)."""
    prepared = store.log.prepare(actor, events)
    params = log_sql.append_params(store.tenant, actor, session, None, prepared)
    with psycopg.connect(psycopg_url(database_url)) as conn:
        rows = conn.execute(log_sql.APPEND, params).fetchall()
        yield rows
        conn.commit()


def wait_for_advisory_waiter(database_url: str, timeout: float = 10.0) -> None:
    """Block until some backend of this database waits on the append lock."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as conn:
        while time.monotonic() < deadline:
            n = conn.execute("""SELECT count(*) FROM pg_stat_activity
                                 WHERE datname = current_database()
                                   AND wait_event_type = 'Lock'
                                   AND wait_event = 'advisory'""").fetchone()[0]
            if n:
                return
            time.sleep(0.02)
    raise AssertionError("no append waited on the append lock")


# -- optimistic concurrency --------------------------------------------------------------


@pytest.mark.parametrize("expected", [1, memory.NO_STREAM], ids=["version-1", "no-stream"])
def test_eight_writers_same_expected_version_one_wins(store: memory.Store,
                                                      expected: int) -> None:
    session = "race"
    if expected == 1:
        store.append(session, memory.note("before the race"), actor="alice")
    else:
        store.append("warm-up", memory.note("the actor exists"), actor="alice")
    barrier = threading.Barrier(8)
    wins: list[int] = []
    conflicts: list[memory.ConcurrencyError] = []
    other: list[BaseException] = []

    def write(k: int) -> None:
        barrier.wait()
        try:
            store.append(session, memory.note(f"writer {k}"), actor="alice",
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
    events = store.read_session(session)
    assert [e.version for e in events] == list(range(1, expected + 2))
    assert events[-1].payload == {"text": f"writer {wins[0]}"}
    with store.engine.connect() as conn:
        dupes = conn.exec_driver_sql(
            "SELECT version, count(*) FROM memory_events WHERE session_id = %s "
            "GROUP BY version HAVING count(*) > 1", (session,)).fetchall()
    assert dupes == []


def test_stale_expectation_writes_nothing(store: memory.Store) -> None:
    store.append("s", [memory.note("one"), memory.note("two")], actor="a")
    head = store.head()
    with pytest.raises(memory.ConcurrencyError) as info:
        store.append("s", [memory.note("three"), memory.note("four")], actor="a",
                     expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    with pytest.raises(memory.ConcurrencyError):
        store.append("s", memory.note("three"), actor="a", expected_version=memory.NO_STREAM)
    assert store.head() == head
    assert [e.version for e in store.read_session("s")] == [1, 2]
    store.append("s", memory.note("three"), actor="a", expected_version=2)
    assert [e.version for e in store.read_session("s")] == [1, 2, 3]


# -- no gaps -----------------------------------------------------------------------------


def test_follower_sees_every_committed_event_once_despite_late_commits(
        store: memory.Store, database_url: str) -> None:
    """Writers with random delays, one of them holding its transaction open for a while
    (twice) while the others try to append; a subscription follows the whole time. Its
    sequence must equal a full read afterwards: nothing skipped, nothing twice."""
    rng = random.Random(20261127)
    delivered: list[memory.RecordedEvent] = []
    sub = store.subscribe(0, poll_interval=0.05)
    follower = threading.Thread(target=lambda: delivered.extend(sub))
    follower.start()
    written: list[int] = []
    errors: list[BaseException] = []
    slow_holding = threading.Event()

    def slow_writer() -> None:
        try:
            for round_ in range(2):
                events = [memory.note(f"slow {round_}.{i}") for i in range(3)]
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
                written.append(len(store.append(f"fast-{k}", batch, actor=f"user-{k}")))
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

    full = list(store.read())
    assert len(full) == total
    seen = [(e.position, e.event_id) for e in delivered]
    assert seen == [(e.position, e.event_id) for e in full]
    assert len({e.event_id for e in delivered}) == total
    positions = [p for p, _ in seen]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert sub.position == full[-1].position  # the checkpoint a follower keeps


def _checkpoint_scenario(store: memory.Store, database_url: str, *, lock_expected: bool
                         ) -> tuple[list[int], list[int], list[int]]:
    """A appends and keeps its transaction open; B appends meanwhile; a reader reads and
    keeps its checkpoint; A commits; the reader resumes from its checkpoint.
    Returns (positions of A, positions of B, positions the reader got in both reads)."""
    store.append("before", memory.note("already there"), actor="a")
    b_done = threading.Event()
    b_rows: list[memory.Appended] = []

    def writer_b() -> None:
        b_rows.extend(store.append("b", memory.note("B"), actor="b"))
        b_done.set()

    with open_append(database_url, store, "a", [memory.note("A")], actor="a") as a_rows:
        b = threading.Thread(target=writer_b)
        b.start()
        if lock_expected:
            wait_for_advisory_waiter(database_url)
            assert not b_done.is_set()
        else:
            assert b_done.wait(10)
        first = list(store.read(0))
        checkpoint = first[-1].position if first else 0
    b.join(10)
    second = list(store.read(checkpoint))
    return ([r[1] for r in a_rows], [r.position for r in b_rows],
            [e.position for e in first + second])


def test_checkpoint_is_safe_while_an_append_is_uncommitted(store: memory.Store,
                                                           database_url: str) -> None:
    """While A's transaction is open, B waits for the append lock instead of committing a
    later position, so the reader's checkpoint never passes A's position."""
    a, b, read = _checkpoint_scenario(store, database_url, lock_expected=True)
    assert b[0] > a[0]
    assert read == [1, a[0], b[0]]  # every event once, in position order


def test_without_the_append_lock_the_same_reader_would_skip(store: memory.Store,
                                                            database_url: str) -> None:
    """Control: the same scenario on copies of the append functions without their lock
    (only in this test's throwaway database) loses A's event. This is what the tests
    above guard."""
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as conn:
        for function in ("memory_append_request", "memory_append_group",
                         "memory_append_set"):
            source = conn.execute("SELECT pg_get_functiondef(%s::regproc)",
                                  (function,)).fetchone()[0]
            lockless = "\n".join(line for line in source.splitlines()
                                 if "pg_advisory_xact_lock" not in line)
            assert lockless != source
            conn.execute(lockless)
    a, b, read = _checkpoint_scenario(store, database_url, lock_expected=False)
    assert b[0] > a[0]
    assert a[0] not in read  # committed late, behind the reader's checkpoint: skipped
    assert len(list(store.read(0))) == 3

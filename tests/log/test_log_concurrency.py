"""Why a reader's checkpoint is safe: the append lock of the server-side function.

The guarantees themselves (one winner among racing writers, no gaps for a follower) are
proven for every face of the log in tests/log/test_conformance.py; here the mechanism is
shown directly: a later append waits for an open one, and without the lock a reader would
skip an event that commits late.
"""

from __future__ import annotations

import threading
import time

import psycopg
from support import open_append, psycopg_url

import memory


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


# -- no gaps -----------------------------------------------------------------------------


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

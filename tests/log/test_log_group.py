"""Grouped appends (memory/log/group.py): concurrent appends of one process share one
transaction, and each keeps its own semantics.

To make a group deterministic, the tests hold the append lock from another connection:
the first append blocks in flight, the next ones queue behind it, and once the lock is
released they go together as one group (checked by counting what ``Combiner._run`` got).
Most tests let one group be in flight at a time (``MAX_IN_FLIGHT`` = 1) so that the queue
forms behind the first append; ``test_two_groups_in_flight`` runs the default of two.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from support import psycopg_url

import memory
from memory.log import group as log_group
from memory.log import sql as log_sql
from memory.pg.constants import APPEND_LOCK_KEY

LOCK_KEY = APPEND_LOCK_KEY  # the no-gap lock


@pytest.fixture(autouse=True)
def one_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_group, "MAX_IN_FLIGHT", 1)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The append statement of every execute on an append connection, in order."""
    sent: list[str] = []
    execute = psycopg.Cursor.execute
    names = {id(log_sql.APPEND): "request", id(log_sql.APPEND_SET): "set",
             id(log_sql.APPEND_GROUP): "group", id(log_sql.APPEND_SET_EPOCHS): "set",
             id(log_sql.APPEND_GROUP_EPOCHS): "group"}

    def recording(self: psycopg.Cursor[Any], query: Any, *a: Any, **k: Any) -> Any:
        if id(query) in names:
            sent.append(names[id(query)])
        return execute(self, query, *a, **k)

    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    return sent


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every group the combiners ran, in order."""
    sizes: list[int] = []
    run = log_group.Combiner._run

    def counting(self: log_group.Combiner, group: Any) -> None:
        sizes.append(len(group))
        run(self, group)

    monkeypatch.setattr(log_group.Combiner, "_run", counting)
    return sizes


@contextmanager
def append_lock_held(database_url: str) -> Iterator[None]:
    """Hold the append lock (session level) from another connection inside the block."""
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def queued(store: memory.Store) -> int:
    combiner = store.log._appender.combiners.get(store.tenant)
    return len(combiner._queue) if combiner is not None else 0


def run_grouped(store: memory.Store, database_url: str, first: Callable[[], Any],
                calls: list[Callable[[], Any]]) -> tuple[Any, list[Any]]:
    """``first`` blocks in flight on the held lock; ``calls`` queue behind it (in this
    order) and then run as one group. Returns each call's result or exception."""
    results: list[Any] = [None] * len(calls)
    head: list[Any] = [None]

    def call(k: int, f: Callable[[], Any], out: list[Any]) -> None:
        try:
            out[k] = f()
        except BaseException as exc:
            out[k] = exc

    with append_lock_held(database_url):
        lead = threading.Thread(target=call, args=(0, first, head))
        lead.start()
        deadline = time.monotonic() + 10
        while store.log._appender.combiners.get(store.tenant) is None or \
                not store.log._appender.combiners[store.tenant]._in_flight:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(0.05)  # its statement is waiting for the lock
        threads = []
        for k, f in enumerate(calls):  # one by one, so the queue keeps this order
            t = threading.Thread(target=call, args=(k, f, results))
            t.start()
            threads.append(t)
            while queued(store) < k + 1:
                assert time.monotonic() < deadline
                time.sleep(0.002)
    for t in [lead, *threads]:
        t.join(30)
    return head[0], results


def test_a_group_keeps_each_request_own_semantics(store: memory.Store, database_url: str,
                                                  groups: list[int]) -> None:
    """In one group: two appends that succeed, a stale expectation, an id re-used for
    other content, a later request that sees an earlier one's write, an idempotent retry.
    The failures write nothing and fail nobody else."""
    store.append("s", memory.note("one"), actor="a")
    kept = memory.note("kept", event_id=uuid.uuid4())
    original = store.append("k", kept, actor="a")[0]
    reused = memory.note("other content", event_id=kept.event_id)
    head_before = store.head()
    first, results = run_grouped(store, database_url,
                                 lambda: store.append("x", memory.note("first"), actor="x"), [
        lambda: store.append("s", memory.note("two"), actor="a", expected_version=1),
        lambda: store.append("s", memory.note("stale"), actor="a", expected_version=1),
        lambda: store.append("k", reused, actor="a"),
        lambda: store.append("s", memory.note("three"), actor="a", expected_version=2),
        lambda: store.append("k", kept, actor="a"),
        lambda: store.append("s", memory.note("not a's"), actor="b"),
    ])
    assert groups[-2:] == [1, 6]
    assert first[0].version == 1
    two, stale, conflict, three, retry, foreign = results
    assert [r.version for r in two] == [2] and not two[0].duplicate
    assert isinstance(stale, memory.ConcurrencyError)
    assert (stale.expected, stale.actual) == (1, 2)
    assert isinstance(conflict, memory.IdempotencyConflict)
    assert [r.version for r in three] == [3]
    assert retry[0].duplicate and retry[0].position == original.position
    assert isinstance(foreign, memory.SessionOwnershipError)
    assert [e.payload["text"] for e in store.read_session("s")] == ["one", "two", "three"]
    assert [e.payload["text"] for e in store.read_session("k")] == ["kept"]
    events = list(store.read(head_before))
    assert [e.payload["text"] for e in events] == ["first", "two", "three"]
    positions = [e.position for e in events]
    assert positions == sorted(positions)  # in queue order (a refused or duplicate
    # request may leave a hole in the numbering, which readers never wait for)


def test_racing_writers_with_expected_versions(store: memory.Store, database_url: str,
                                               groups: list[int]) -> None:
    """Eight writers in one group expecting the same version: the first wins, the
    seven others get the concurrency error; no duplicate versions."""
    store.append("race", memory.note("before"), actor="alice")
    _, results = run_grouped(
        store, database_url, lambda: store.append("w", memory.note("w"), actor="w"),
        [lambda k=k: store.append("race", memory.note(f"writer {k}"), actor="alice",
                                  expected_version=1) for k in range(8)])
    assert groups[-1] == 8
    wins = [r for r in results if isinstance(r, list)]
    assert len(wins) == 1 and wins[0][0].version == 2
    assert all(isinstance(r, memory.ConcurrencyError) for r in results if r is not wins[0])
    assert [e.payload["text"] for e in store.read_session("race")] == ["before", "writer 0"]


def test_the_same_event_twice_in_one_group_is_written_once(store: memory.Store,
                                                           database_url: str,
                                                           groups: list[int]) -> None:
    events = [memory.note(f"e{i}", event_id=uuid.uuid4()) for i in range(3)]
    _, (a, b) = run_grouped(
        store, database_url, lambda: store.append("w", memory.note("w"), actor="w"),
        [lambda: store.append("s", events, actor="a"),
         lambda: store.append("s", events, actor="a", expected_version=memory.NO_STREAM)])
    assert groups[-1] == 2
    assert [r.duplicate for r in a] == [False] * 3 and [r.duplicate for r in b] == [True] * 3
    assert [r.position for r in a] == [r.position for r in b]
    assert len(store.read_session("s")) == 3


@pytest.mark.parametrize("encrypt", [True, False])
def test_a_group_of_common_appends_is_one_set_based_statement(
        database_url: str, groups: list[int], statements: list[str], encrypt: bool) -> None:
    """Requests that are all the common case (new ids, heads as expected, one request per
    session) are written by one ``memory_append_set`` call, never request by request;
    versions and positions come out as if they had run one after another."""
    with memory.Store.open(database_url, migrate=False, encrypt=encrypt) as store:
        store.append("s", memory.note("one"), actor="a")
        first, (two, t1, u) = run_grouped(
            store, database_url, lambda: store.append("x", memory.note("first"), actor="x"), [
                lambda: store.append("s", [memory.note("two"), memory.note("three")],
                                     actor="a", expected_version=1),
                lambda: store.append("t", memory.note("t1"), actor="b",
                                     expected_version=memory.NO_STREAM),
                lambda: store.append("u", [memory.note(f"u{i}") for i in range(3)],
                                     actor="a")])
        assert groups[-2:] == [1, 3]
        assert statements[-2:] == ["request", "set"] and "group" not in statements
        assert [r.version for r in two] == [2, 3] and [r.version for r in t1] == [1]
        assert [r.version for r in u] == [1, 2, 3]
        positions = [r.position for r in two + t1 + u]
        assert positions == list(range(positions[0], positions[0] + 6))
        assert positions[0] > first[0].position
        assert [e.payload["text"] for e in store.read_session("s")] == ["one", "two", "three"]
        assert [e.payload["text"] for e in store.read(first[0].position)] == \
            ["two", "three", "t1", "u0", "u1", "u2"]
        with store.engine.connect() as conn:
            batches = conn.exec_driver_sql(
                "SELECT count(*) FROM memory_event_secrets").scalar_one()
        assert batches == (3 if encrypt else 0)  # one epoch per actor, none per append


def test_a_retry_in_a_group_is_sent_again_request_by_request(
        store: memory.Store, database_url: str, groups: list[int],
        statements: list[str]) -> None:
    """An idempotent retry looks like the common case until its insert meets its id: the
    set-based statement then raises MM020, nothing is written, and the group is sent to
    ``memory_append_group``, which gives the retry its original position and appends
    the other request once."""
    kept = memory.note("kept", event_id=uuid.uuid4())
    original = store.append("k", kept, actor="a")[0]
    _, (retry, new) = run_grouped(
        store, database_url, lambda: store.append("x", memory.note("first"), actor="x"), [
            lambda: store.append("k", kept, actor="a"),
            lambda: store.append("n", memory.note("new"), actor="a")])
    assert groups[-1] == 2
    assert statements[-2:] == ["set", "group"]
    assert retry[0].duplicate and retry[0].position == original.position
    assert not new[0].duplicate and new[0].version == 1
    assert [e.payload["text"] for e in store.read_session("k")] == ["kept"]
    assert [e.payload["text"] for e in store.read_session("n")] == ["new"]


def test_two_groups_in_flight(store: memory.Store, database_url: str, groups: list[int],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With two groups allowed in flight, a second append is sent while the first waits
    for the lock, the next ones queue and go together when a slot frees (as one group, or
    split between the two slots when both free before the first waiting leader gathers:
    the two groups ahead commit one right after the other); every append lands once, in
    its own session, and the combiner ends idle."""
    monkeypatch.setattr(log_group, "MAX_IN_FLIGHT", 2)
    out: dict[str, Any] = {}

    def call(name: str) -> None:
        try:
            out[name] = store.append(name, memory.note(name), actor="a")
        except BaseException as exc:
            out[name] = exc

    def in_flight() -> int:
        c = store.log._appender.combiners.get(store.tenant)
        return c._in_flight if c is not None else 0

    def waiting() -> int:
        return len(store.log._appender.combiners[store.tenant]._queue)

    def wait_for(count: Callable[[], int], n: int) -> None:
        deadline = time.monotonic() + 10
        while count() != n:
            assert time.monotonic() < deadline
            time.sleep(0.002)

    threads = []
    before = len(groups)
    with append_lock_held(database_url):
        for k, name in enumerate(("a1", "a2", "q1", "q2", "q3")):
            threads.append(threading.Thread(target=call, args=(name,)))
            threads[-1].start()
            if k < 2:
                wait_for(in_flight, k + 1)  # leads a group of its own, blocked on the lock
            else:
                wait_for(waiting, k - 1)
        time.sleep(0.05)
        assert in_flight() == 2
    for t in threads:
        t.join(30)
    assert sorted(groups[before:]) in ([1, 1, 3], [1, 1, 1, 2])
    assert all(isinstance(r, list) and r[0].version == 1 for r in out.values()), out
    assert len({r[0].position for r in out.values()}) == 5
    assert in_flight() == 0 and waiting() == 0


def test_sealed_group_of_several_actors_reads_back_and_forgets_one_event(
        store: memory.Store, database_url: str, groups: list[int]) -> None:
    """Sealed appends of three actors in one group: one epoch per actor, no secrets row
    per append; each reads back; forgetting one event of a batch leaves its neighbours
    readable."""
    _, results = run_grouped(
        store, database_url, lambda: store.append("w", memory.note("w"), actor="w"),
        [lambda k=k: store.append(f"s{k}", [memory.note(f"actor {k} note {i}")
                                           for i in range(3)], actor=f"actor-{k}")
         for k in range(3)])
    assert groups[-1] == 3
    assert all(isinstance(r, list) and len(r) == 3 for r in results)
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT count(*), sum(length(secrets)) FROM memory_event_secrets").one()
    assert tuple(rows) == (4, 32 * 4)
    for k in range(3):
        assert [e.payload["text"] for e in store.read_session(f"s{k}")] == \
            [f"actor {k} note {i}" for i in range(3)]
    store.forget(event_ids=[results[1][1].event_id])
    events = store.read_session("s1")
    assert [e.forgotten for e in events] == [False, True, False]
    assert [e.payload.get("text") for e in events] == ["actor 1 note 0", None,
                                                      "actor 1 note 2"]


def test_a_key_destroyed_while_queued_is_renewed(store: memory.Store, database_url: str,
                                                 groups: list[int]) -> None:
    """The actor is forgotten (its key deleted) after its append was sealed but before
    the group ran: the group's epoch check fails (dave's epoch went with his key),
    nothing is written, and each request is sealed again and retried, dave's under a new
    key and epoch; both land."""
    store.append("old", memory.note("before the forget"), actor="dave")
    with memory.Store.open(database_url, migrate=False) as other:
        other.forget(actor="dave")  # dave's key is gone; store still caches it
    _, (dave, erin) = run_grouped(
        store, database_url, lambda: store.append("w", memory.note("w"), actor="w"),
        [lambda: store.append("new", memory.note("after the forget"), actor="dave"),
         lambda: store.append("e", memory.note("erin"), actor="erin")])
    assert isinstance(dave, list) and isinstance(erin, list)
    assert [e.payload for e in store.read_session("new")] == [{"text": "after the forget"}]
    assert store.read_session("e")[0].payload == {"text": "erin"}


def test_a_dropped_connection_is_retried_once(store: memory.Store,
                                              database_url: str) -> None:
    """The server ends the append connection (pg_terminate_backend); the next append
    notices when its statement fails, reconnects and succeeds, writing its event once."""
    store.append("s", memory.note("first"), actor="a")
    held = store.log._appender.connections.acquire(store.tenant)
    pid = held.conn.info.backend_pid
    store.log._appender.connections.release(held)
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
    out = store.append("s", memory.note("second"), actor="a")
    assert out[0].version == 2 and not out[0].duplicate
    assert [e.payload["text"] for e in store.read_session("s")] == ["first", "second"]


def lose_the_answer_once(monkeypatch: pytest.MonkeyPatch, *statements: str
                         ) -> dict[str, int]:
    """The first of ``statements`` executed commits, then its connection breaks before
    the answer is read (as when the server or the network fails at that moment). Returns
    a counter of how often that happened."""
    execute = psycopg.Cursor.execute
    broken = {"n": 0}

    def commit_then_break(self: psycopg.Cursor[Any], query: Any, *a: Any,
                          **k: Any) -> Any:
        cursor = execute(self, query, *a, **k)
        if any(query is s for s in statements) and broken["n"] == 0:
            broken["n"] += 1
            cursor.fetchall()
            self.connection.close()  # the answer is lost with the connection
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return cursor

    monkeypatch.setattr(psycopg.Cursor, "execute", commit_then_break)
    return broken


def test_a_retry_after_a_commit_whose_answer_was_lost_is_a_duplicate(
        store: memory.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The case the reconnect-and-retry relies on: the statement committed, then the
    connection broke before the answer arrived. The retry sends the same events and gets
    their original positions, marked duplicate; nothing is written twice."""
    calls = lose_the_answer_once(monkeypatch, log_sql.APPEND)
    out = store.append("s", memory.note("once"), actor="a")
    monkeypatch.undo()
    assert calls["n"] == 1
    assert out[0].duplicate and out[0].version == 1
    assert [e.payload["text"] for e in store.read_session("s")] == ["once"]


def test_a_group_resent_after_its_answer_was_lost_is_all_duplicates(
        store: memory.Store, database_url: str, groups: list[int],
        statements: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A sealed group committed by the set-based statement, then the connection broke
    before the answer came: the resent group (the same events) meets its own ids (MM020),
    goes request by request, and every caller gets its original position marked
    duplicate; no event is written twice."""
    broken = lose_the_answer_once(monkeypatch, log_sql.APPEND_SET, log_sql.APPEND_SET_EPOCHS)
    _, results = run_grouped(
        store, database_url, lambda: store.append("x", memory.note("first"), actor="x"),
        [lambda k=k: store.append(f"s{k}", [memory.note(f"{k}.{i}") for i in range(2)],
                                  actor="a") for k in range(3)])
    assert groups[-1] == 3 and broken["n"] == 1
    assert statements[-3:] == ["set", "set", "group"]
    assert all(isinstance(r, list) and [e.duplicate for e in r] == [True, True]
               for r in results), results
    for k in range(3):
        assert [e.payload["text"] for e in store.read_session(f"s{k}")] == [f"{k}.0",
                                                                          f"{k}.1"]
    with store.engine.connect() as conn:
        batches = conn.exec_driver_sql(
            "SELECT count(*) FROM memory_event_secrets").scalar_one()
    assert batches == 2  # the epochs of x and a: the group wrote no secrets row


# -- the combiner alone (no database): callers that leave while waiting -----------------


class _Gate:
    """A fake ``Combiner._run``: holds every group until released, records it."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.groups: list[list[str]] = []

    def __call__(self, combiner: log_group.Combiner, group: Any) -> None:
        self.groups.append([r.params[0] for r in group])
        assert self.open.wait(10)
        for r in group:
            r.rows = [r.params[0]]


@pytest.mark.parametrize("when", ["queued", "promoted"])
def test_a_caller_interrupted_while_waiting_blocks_nobody(
        monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """A waiting caller interrupted (KeyboardInterrupt) before its request was sent is
    dropped from the queue; one interrupted just after it was handed the lead passes the
    lead on. Either way the callers behind it still get their appends done."""
    gate = _Gate()
    monkeypatch.setattr(log_group.Combiner, "_run", lambda self, group: gate(self, group))

    class Interruptible(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            if threading.current_thread().name == "victim":
                if when == "promoted":
                    super().wait(timeout)  # handed the lead, then interrupted
                raise KeyboardInterrupt
            return super().wait(timeout)

    monkeypatch.setattr(log_group, "_Event", Interruptible)
    combiner = log_group.Combiner("t", None)  # type: ignore[arg-type]
    out: dict[str, Any] = {}

    def call(name: str) -> None:
        try:
            out[name] = combiner.submit(log_group.Request((name,), 1))
        except BaseException as exc:
            out[name] = exc

    def start(name: str, ready: Callable[[], bool]) -> threading.Thread:
        t = threading.Thread(target=call, args=(name,), name=name)
        t.start()
        deadline = time.monotonic() + 10
        while not ready():
            assert time.monotonic() < deadline, out
            time.sleep(0.002)
        return t

    def queued(n: int) -> Callable[[], bool]:
        return lambda: len(combiner._queue) == n

    leader = start("leader", lambda: bool(gate.groups))  # in flight, held by the gate
    if when == "queued":
        victim = start("victim", lambda: "victim" in out)  # interrupted at once
        follower = start("follower", queued(1))
    else:
        victim = start("victim", queued(1))
        follower = start("follower", queued(2))  # behind the victim, handed the lead next
    gate.open.set()
    for t in (leader, victim, follower):
        t.join(10)
        assert not t.is_alive()
    assert isinstance(out["victim"], KeyboardInterrupt)
    assert out["leader"] == ["leader"] and out["follower"] == ["follower"]
    assert gate.groups == [["leader"], ["follower"]]  # the victim's append was never sent
    assert combiner._in_flight == 0 and not combiner._queue

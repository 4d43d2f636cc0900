"""Subscriptions: catch up, then follow; NOTIFY is only a wake-up, polling the fallback."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from support import psycopg_url

import memory
from memory.log import sql as log_sql


class Follower:
    """Runs a subscription in a thread and collects what it delivers."""

    def __init__(self, sub: memory.Subscription) -> None:
        self.sub = sub
        self.events: list[memory.RecordedEvent] = []
        self.arrived: list[float] = []
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        for event in self.sub:
            self.events.append(event)
            self.arrived.append(time.monotonic())

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.events) >= n, f"got {len(self.events)} of {n} events"

    def stop(self) -> float:
        started = time.monotonic()
        self.sub.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()
        return time.monotonic() - started


def notes(prefix: str, n: int) -> list[memory.NewEvent]:
    return [memory.note(f"{prefix} {i}") for i in range(n)]


def test_catches_up_then_follows_on_notify(store: memory.Store) -> None:
    store.append("s", notes("old", 7), actor="alice")
    # A long poll interval: only the NOTIFY wake-up can deliver the new events quickly.
    follower = Follower(store.subscribe(0, poll_interval=30))
    try:
        follower.wait_for(7)
        time.sleep(0.3)  # now waiting for a notification
        sent = time.monotonic()
        store.append("s", notes("new", 3), actor="alice")
        follower.wait_for(10, timeout=5)
        assert follower.arrived[-1] - sent < 5  # not the 30 s poll
        store.append("t", notes("other session", 2), actor="bob")
        follower.wait_for(12, timeout=5)
    finally:
        stopped_in = follower.stop()
    assert stopped_in < 2  # stop() does not wait out the poll interval
    assert [e.position for e in follower.events] == [e.position for e in store.read(0)]
    assert follower.sub.position == store.head()


def test_pages_through_a_long_backlog(store: memory.Store) -> None:
    store.append("s", notes("x", 1200), actor="alice")
    sub = store.log.subscribe(0, tenant=store.tenant, poll_interval=0.1, batch_size=100)
    follower = Follower(sub)
    try:
        follower.wait_for(1200)
    finally:
        follower.stop()
    assert [e.version for e in follower.events] == list(range(1, 1201))


def test_only_its_tenant(store: memory.Store) -> None:
    other = store.for_tenant("other-tenant")
    follower = Follower(store.subscribe(0, poll_interval=0.1))
    try:
        other.append("s", notes("not mine", 3), actor="zed")
        store.append("s", notes("mine", 2), actor="alice")
        follower.wait_for(2)
        time.sleep(0.3)
    finally:
        follower.stop()
    assert [e.tenant for e in follower.events] == [store.tenant] * 2


def test_polls_when_notifications_are_lost(store: memory.Store,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The subscription listens on a channel nobody notifies: every wake-up is lost, and
    events still arrive within the poll interval."""
    monkeypatch.setattr(log_sql, "NOTIFY_CHANNEL", "memory_events_nobody_notifies")
    follower = Follower(store.subscribe(0, poll_interval=0.2))
    try:
        time.sleep(0.3)
        store.append("s", notes("polled", 3), actor="alice")
        follower.wait_for(3, timeout=5)
        store.append("s", notes("polled again", 2), actor="alice")
        follower.wait_for(5, timeout=5)
    finally:
        follower.stop()
    assert [e.version for e in follower.events] == [1, 2, 3, 4, 5]


def test_survives_losing_its_listening_connection(store: memory.Store,
                                                  database_url: str) -> None:
    follower = Follower(store.subscribe(0, poll_interval=0.2))
    try:
        store.append("s", notes("before", 2), actor="alice")
        follower.wait_for(2)
        with psycopg.connect(psycopg_url(database_url), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'").fetchall()
        assert killed == [(True,)]
        store.append("s", notes("after", 3), actor="alice")
        follower.wait_for(5, timeout=5)
        store.append("s", notes("later", 1), actor="alice")
        follower.wait_for(6, timeout=5)
    finally:
        follower.stop()
    assert [e.version for e in follower.events] == [1, 2, 3, 4, 5, 6]

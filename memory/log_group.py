"""Group commit for appends: concurrent appends of one process share one transaction.

Why
---
The no-gap guarantee (memory/log_sql.py) holds a database-wide advisory lock from the
moment an append draws its positions until its commit, WAL flush included. Appends
therefore commit one after another, one flush each, whatever the number of writers: four
threads appending single events got no more than one (benchmarks/RESULTS.md, "Append"),
where plain INSERTs from four connections share flushes (PostgreSQL's group commit).

What
----
:class:`Combiner` (one per log and tenant) lets one append run at a time and gathers the
appends that arrive meanwhile. When the one in flight returns, the first waiting caller
becomes the *leader*: it takes every waiting request (up to :data:`MAX_REQUESTS` and
:data:`MAX_EVENTS`) and sends them in one statement, ``memory_append_group``
(alembic/versions/0005), which takes the append lock once and runs each request in order
in its own subtransaction, exactly as a lone append would run: its own idempotency check,
expected version, session ownership and key check, seeing what the requests before it
wrote. A request that fails is rolled back alone and its error comes back in its rows;
the others commit together, with one flush. The leader hands each caller its outcome and
passes the lead to the next waiting caller, if any. A lone request takes the plain path
(log_sql.APPEND, one statement, no subtransaction), so one writer pays nothing for this.

The no-gap argument is unchanged: one transaction, one lock, positions drawn under it and
made visible by its commit. A group is also no less durable: nobody is told "appended"
before the commit of their request returned.

Connections
-----------
Appends run on connections of their own (:class:`AppendConnections`), kept open with
autocommit on and the tenant already set: at most one per combiner is busy at a time, so
a handful serves a process. Taking one costs no round trip and no pool bookkeeping (the
pool's checkout and pre-ping came to ~0.2 ms of a ~0.5 ms append). A connection that
broke (server restart, terminated backend) is noticed when the statement fails: it is
dropped and the group sent once more on a new connection. That retry is safe because
appends are idempotent by event id: if the first attempt committed before the connection
broke, the retry finds the same events with the same content and returns their original
positions (``duplicate`` set), writing nothing.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import psycopg
import sqlalchemy as sa

from . import log_sql
from .security import tenant_scope

MAX_REQUESTS = 32
"""Requests per group: each runs in a subtransaction, and PostgreSQL keeps at most 64
subtransaction ids per transaction in shared memory before other backends' snapshots
become slower (subxid overflow)."""
_Event = threading.Event  # (tests replace it to interrupt a waiting caller)
MAX_EVENTS = 10_000
"""Events per group (a request larger than this still goes, alone)."""
GATHER_FRACTION = 0.5
GATHER_MAX_S = 0.002
"""How long a leader may wait for its group to fill (see Combiner._lead): at most this
fraction of the previous group's statement time, and never more than this."""


class Request:
    """One caller's append: the parameters of log_sql.APPEND less the tenant, and, once
    done, its rows or its error."""

    __slots__ = ("done", "error", "events", "lead", "params", "rows")

    def __init__(self, params: tuple[Any, ...], events: int) -> None:
        self.params = params  # actor, session, expected, events json, key id, batch, secrets
        self.events = events
        self.rows: list[Any] | None = None
        self.error: BaseException | None = None
        self.done: threading.Event | None = None  # made only for a caller that waits
        self.lead = False


class AppendConnections:
    """Connections reserved for appends, made by the engine (same URL, timeouts and
    connect arguments) but kept out of its pool; see the module docstring."""

    def __init__(self, engine: sa.Engine, keep: int = 4) -> None:
        # Weak: the engine is the key of the registry (appender()) that holds this.
        self._engine = weakref.ref(engine)
        self.keep = keep
        self._idle: list[tuple[psycopg.Connection[Any], str]] = []
        self._lock = threading.Lock()
        self._closed = False

    def acquire(self, tenant: str) -> tuple[psycopg.Connection[Any], str]:
        """An idle connection (one already acting for ``tenant`` first), else a new one."""
        with self._lock:
            found = next((k for k, (_, t) in enumerate(self._idle) if t == tenant), None)
            other = self._idle.pop(found if found is not None else -1) if self._idle \
                else None
        if other is not None:
            conn, conn_tenant = other
            if conn_tenant == tenant:
                return conn, tenant
            try:
                conn.execute("SELECT set_config('memory.tenant', %s, false)", (tenant,))
                return conn, tenant
            except psycopg.OperationalError:
                conn.close()  # broken while idle: a new one below
        engine = self._engine()
        if engine is None:
            raise RuntimeError("the engine of these appends was garbage-collected")
        with tenant_scope(tenant):  # the engine's checkout sets memory.tenant
            fairy = engine.raw_connection()
        conn = fairy.driver_connection
        assert isinstance(conn, psycopg.Connection)
        fairy.detach()  # ours from now on; the pool makes a new one for its own use
        conn.autocommit = True
        return conn, tenant

    def release(self, conn: psycopg.Connection[Any], tenant: str) -> None:
        if conn.closed or conn.broken:
            return
        with self._lock:
            if not self._closed and len(self._idle) < self.keep:
                self._idle.append((conn, tenant))
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections; one in use is closed when it is released."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()


class Combiner:
    """Serialises one tenant's appends of this process and groups those that wait."""

    def __init__(self, tenant: str, connections: AppendConnections) -> None:
        self.tenant = tenant
        self.connections = connections
        self._mutex = threading.Lock()
        self._filled = threading.Condition(self._mutex)
        self._queue: list[Request] = []
        self._busy = False
        self._gathering = 0  # the group size a waiting leader wants (0: none waits)
        self._last_size = 1
        self._last_time = 0.0
        self.groups = 0  # statements sent (benchmarks report requests per group)
        self.requests = 0

    def submit(self, request: Request) -> list[Any]:
        """Append ``request`` (alone or with others); its rows, or raises its error."""
        with self._mutex:
            self._queue.append(request)
            lead = not self._busy
            self._busy = True
            if not lead:
                request.done = _Event()
                if self._gathering and len(self._queue) >= self._gathering:
                    self._filled.notify()
        if request.done is not None:
            try:
                request.done.wait()
            except BaseException:  # e.g. KeyboardInterrupt: leave without blocking others
                self._abandon(request)
                raise
            lead = request.lead
        if lead:
            self._lead(request)
        if request.error is not None:
            raise request.error
        assert request.rows is not None
        return request.rows

    def _abandon(self, request: Request) -> None:
        """A waiting caller leaves. Not sent yet: its request is dropped (nothing written).
        Handed the lead meanwhile: the lead goes to the next caller, else nobody would
        ever send the queue. Already in a group in flight: that group goes on."""
        with self._mutex:
            if request in self._queue:
                self._queue.remove(request)
                if request.lead:
                    self._pass_lead()

    def _pass_lead(self) -> None:
        """(Under the mutex.) The first waiting caller leads next; none: nobody leads."""
        if self._queue:
            following = self._queue[0]
            following.lead = True
            assert following.done is not None
            following.done.set()
        else:
            self._busy = False

    def _lead(self, me: Request) -> None:
        """Run the waiting requests (``me`` first) as one group, then pass on.

        When the previous group had several requests, their callers are likely to be
        back in a moment (each was told its outcome when that group ended, and is
        preparing its next append): a leader that would otherwise go alone waits for as
        many requests as the previous group had, for at most half that group's statement
        time (and never more than 2 ms). Without this wait, groups alternate between full
        and lone (a lone one right after every full one: measured, four writers), and
        half the flushes carry one append. One writer never waits (its groups are 1)."""
        group: list[Request] = []
        try:
            with self._mutex:
                want = min(self._last_size, MAX_REQUESTS)
                if want > 1 and len(self._queue) < want:
                    self._gathering = want
                    try:
                        self._filled.wait_for(lambda: len(self._queue) >= want, timeout=min(
                            GATHER_MAX_S, self._last_time * GATHER_FRACTION))
                    finally:
                        self._gathering = 0
                events = 0
                for r in self._queue:
                    if group and (len(group) >= MAX_REQUESTS
                                  or events + r.events > MAX_EVENTS):
                        break
                    group.append(r)
                    events += r.events
                del self._queue[:len(group)]
            started = time.perf_counter()
            self._run(group)
            self._last_size, self._last_time = len(group), time.perf_counter() - started
            self.groups += 1
            self.requests += len(group)
        except BaseException as exc:  # a bug or an interrupt: nobody is left waiting
            for r in group:
                if r.rows is None and r.error is None:
                    r.error = exc
            raise
        finally:
            with self._mutex:
                if not group and me in self._queue:  # interrupted before sending
                    self._queue.remove(me)
                self._pass_lead()
            for r in group:
                if r.done is not None and not r.lead:
                    r.done.set()

    def _run(self, group: Sequence[Request]) -> None:
        conn, tenant = self.connections.acquire(self.tenant)
        try:
            for attempt in (1, 2):
                try:
                    if len(group) == 1:
                        group[0].rows = conn.execute(
                            log_sql.APPEND, (self.tenant, *group[0].params)).fetchall()
                    else:
                        self._distribute(group, conn.execute(
                            log_sql.APPEND_GROUP,
                            (self.tenant, log_sql.group_json([r.params for r in group]))
                        ).fetchall())
                    return
                except psycopg.Error as exc:
                    if attempt == 1 and (conn.closed or conn.broken):
                        conn.close()  # see "Connections" above: the retry is idempotent
                        conn, tenant = self.connections.acquire(self.tenant)
                        continue
                    for r in group:
                        r.error = exc
                    return
        finally:
            self.connections.release(conn, tenant)

    @staticmethod
    def _distribute(group: Sequence[Request], rows: Sequence[Any]) -> None:
        out: list[list[Any]] = [[] for _ in group]
        for row in rows:
            out[row[0]].append(row)
        for r, mine in zip(group, out, strict=True):
            if mine and mine[0][6] is not None:
                r.error = GroupedError(*mine[0][6:10])
            else:
                r.rows = [row[1:6] for row in mine]


class GroupedError(Exception):
    """The error of one request of a group, as the server reported it (translated by
    the log into the library's typed errors, like a lone append's)."""

    def __init__(self, sqlstate: str, message: str, detail: str | None,
                 table: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail or ""
        self.table = table or ""


class Appender:
    """The appends over one engine: its connections and one combiner per tenant. Shared
    by every log over that engine (``Store.for_tenant`` makes a new log each time), so
    their appends group together and no face opens connections of its own."""

    def __init__(self, engine: sa.Engine) -> None:
        self.connections = AppendConnections(engine)
        self.combiners: dict[str, Combiner] = {}
        self._lock = threading.Lock()

    def combiner(self, tenant: str) -> Combiner:
        combiner = self.combiners.get(tenant)
        if combiner is None:
            with self._lock:
                combiner = self.combiners.setdefault(tenant,
                                                     Combiner(tenant, self.connections))
        return combiner

    def stats(self) -> tuple[int, int]:
        """(statements, appends) sent so far; see benchmarks/append.py."""
        combiners = list(self.combiners.values())
        return (sum(c.groups for c in combiners), sum(c.requests for c in combiners))

    def close(self) -> None:
        self.connections.close()


_APPENDERS: weakref.WeakKeyDictionary[sa.Engine, Appender] = weakref.WeakKeyDictionary()
_APPENDERS_LOCK = threading.Lock()


def appender(engine: sa.Engine) -> Appender:
    """The :class:`Appender` of ``engine`` (made on first use, gone with the engine)."""
    with _APPENDERS_LOCK:
        found = _APPENDERS.get(engine)
        if found is None:
            found = _APPENDERS[engine] = Appender(engine)
        return found

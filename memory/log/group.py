"""Group commit for appends: concurrent appends of one process share one transaction.

Why
---
The no-gap guarantee (memory/log/sql.py) holds a database-wide advisory lock from the
moment an append draws its positions until its commit, WAL flush included. Appends
therefore commit one after another, one flush each, whatever the number of writers: four
threads appending single events got no more than one (benchmarks/RESULTS.md, "Append"),
where plain INSERTs from four connections share flushes (PostgreSQL's group commit).

What
----
:class:`Combiner` (one per log and tenant) lets up to :data:`MAX_IN_FLIGHT` (two) groups
of appends be sent at once and queues the appends that arrive meanwhile. A caller that
finds a free slot *leads*: it sends its own append with every request waiting (up to
:data:`MAX_REQUESTS` and :data:`MAX_EVENTS`) as one statement. When a group returns, its
leader hands each caller its outcome and the lead to the first waiting caller, if any.
With two in flight, the second group waits in the server for the append lock while the
first commits, so the lock goes straight from one group to the next while the callers of
the first prepare their next appends (with one at a time, the lock sat idle meanwhile:
measured, benchmarks/RESULTS.md).

A group of several requests goes to ``memory_append_set`` (alembic/sql/05_append.sql): when
every request is the common case (its session's head and owner as it expects, one request
per session, its key alive, new event ids) it writes the whole group with one insert.
Otherwise nothing is written and the server hands the group to ``memory_append_group``
(the same file), which takes the requests in order, each in its own subtransaction, exactly as a
lone append would run: its own idempotency check, expected version, session ownership and
key check, seeing what the requests before it wrote; a request that fails is rolled back
alone and its error comes back in its rows. An event id seen before is only found by the
set insert itself: it raises MM020, rolling back, and the group is sent again to
``memory_append_group``. A lone request is one ``memory_append_request`` call
(log_sql.APPEND, no subtransaction), so one writer pays nothing for all this.

The no-gap argument is unchanged: one transaction, one lock, positions drawn under it and
made visible by its commit. A group is also no less durable: nobody is told "appended"
before the commit of their request returned.

Connections
-----------
Appends run on connections of their own (:class:`AppendConnections`), kept open with
autocommit on (a store's engine logs in as one tenant's role, memory/pg/tenancy.py): at
most MAX_IN_FLIGHT per combiner are busy at a time, so a handful serves a process.
Taking one costs no round trip and no pool bookkeeping (the pool's checkout and
pre-ping came to ~0.2 ms of a ~0.5 ms append). A connection that broke (server restart,
terminated backend) is noticed when the statement fails: it is dropped and the group
sent once more on a new connection. That retry is safe because appends are idempotent
by event id: if the first attempt committed before the connection broke, the retry
finds the same events with the same content and returns their original
positions (``duplicate`` set), writing nothing.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import psycopg
import sqlalchemy as sa

from . import sql as log_sql

MAX_REQUESTS = 32
"""Requests per group: when a group falls back to ``memory_append_group`` each runs in a
subtransaction, and PostgreSQL keeps at most 64 subtransaction ids per transaction in
shared memory before other backends' snapshots become slower (subxid overflow)."""
_Event = threading.Event  # (tests replace it to interrupt a waiting caller)
MAX_EVENTS = 10_000
"""Events per group (a request larger than this still goes, alone)."""
GATHER_MAX_S = 0.002
"""How long a leader waits to fill its group while another group is in flight."""
MAX_IN_FLIGHT = 2
"""Groups one combiner sends at once. The second waits in the server for the append lock
while the first commits, so the lock goes straight from one group to the next, and the
callers of the first prepare their next appends meanwhile (with one group at a time, the
lock sat idle while they did)."""


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


class AppendConnection:
    """One connection kept for appends, the tenant it acts for, and its one cursor (a
    cursor made per statement cost ~25 us of Python, measured with psycopg 3.3)."""

    __slots__ = ("conn", "cursor", "tenant")

    def __init__(self, conn: psycopg.Connection[Any], tenant: str) -> None:
        self.conn = conn
        self.cursor = conn.cursor()
        self.tenant = tenant


class AppendConnections:
    """Connections reserved for appends, made by the engine (same URL, timeouts and
    connect arguments) but kept out of its pool; see the module docstring."""

    def __init__(self, engine: sa.Engine, keep: int = 4) -> None:
        # Weak: the engine is the key of the registry (appender()) that holds this.
        self._engine = weakref.ref(engine)
        self.keep = keep
        self._idle: list[AppendConnection] = []  # the last released last
        self._lock = threading.Lock()
        self._closed = False

    def acquire(self, tenant: str) -> AppendConnection:
        """An idle connection (the last released first), else a new one. The tenant an
        append acts for is its connection's login role's (memory/pg/tenancy.py); ``tenant``
        only labels the connection."""
        with self._lock:
            held = self._idle.pop() if self._idle else None
        if held is not None:
            held.tenant = tenant
            return held
        engine = self._engine()
        if engine is None:
            raise RuntimeError("the engine of these appends was garbage-collected")
        fairy = engine.raw_connection()
        conn = fairy.driver_connection
        assert isinstance(conn, psycopg.Connection)
        fairy.detach()  # ours from now on; the pool makes a new one for its own use
        conn.autocommit = True
        return AppendConnection(conn, tenant)

    def release(self, held: AppendConnection) -> None:
        if held.conn.closed or held.conn.broken:
            return
        with self._lock:
            if not self._closed and len(self._idle) < self.keep:
                self._idle.append(held)
                return
        held.conn.close()

    def close(self) -> None:
        """Close the idle connections; one in use is closed when it is released."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for held in idle:
            held.conn.close()


class Combiner:
    """Groups one tenant's concurrent appends of this process (see the module docstring)."""

    def __init__(self, tenant: str, connections: AppendConnections) -> None:
        self.tenant = tenant
        self.connections = connections
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)  # queue grew, or a group ended
        self._queue: list[Request] = []  # waiting, not sent
        self._in_flight = 0  # leaders sending a group (at most MAX_IN_FLIGHT)
        self._sending: list[int] = []  # the size of each group sent and not returned
        self.groups = 0  # statements sent (benchmarks report requests per group)
        self.requests = 0

    def submit(self, request: Request) -> list[Any]:
        """Append ``request`` (alone or with others); its rows, or raises its error."""
        with self._mutex:
            lead = self._in_flight < MAX_IN_FLIGHT
            if lead:
                self._in_flight += 1
            else:
                request.done = _Event()
                self._queue.append(request)
                self._changed.notify()  # a leader may be gathering (see _lead)
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
            elif request.lead:
                self._in_flight -= 1
                self._pass_lead()

    def _pass_lead(self) -> None:
        """(Under the mutex.) While a group may go, the first waiting caller leads it."""
        while self._queue and self._in_flight < MAX_IN_FLIGHT:
            following = self._queue.pop(0)
            following.lead = True
            self._in_flight += 1
            assert following.done is not None
            following.done.set()

    def _lead(self, me: Request) -> None:
        """Send ``me`` with the requests waiting behind it as one group, then pass on.

        While another group is in flight, this one could only wait for the lock in the
        server: it waits here instead, gathering, until it is as large as the one ahead,
        or that one returns (the lock is then about to be free), or GATHER_MAX_S passed.
        Without this, four writers made groups of 1.6 on average (half of them alone,
        one flush each); the one ahead holds the lock meanwhile, so it never sits idle."""
        group = [me]
        counted = False  # whether len(group) is in self._sending
        try:
            with self._mutex:
                ahead = list(self._sending)
                if ahead:
                    want = min(max(ahead), MAX_REQUESTS)
                    self._changed.wait_for(
                        lambda: len(self._queue) + 1 >= want or self._sending != ahead,
                        timeout=GATHER_MAX_S)
                events = me.events
                while self._queue and len(group) < MAX_REQUESTS \
                        and events + self._queue[0].events <= MAX_EVENTS:
                    group.append(self._queue.pop(0))
                    events += group[-1].events
                self._sending.append(len(group))
                counted = True
            self._run(group)
        except BaseException as exc:  # a bug or an interrupt: nobody is left waiting
            for r in group:
                if r.rows is None and r.error is None:
                    r.error = exc
            raise
        finally:
            with self._mutex:
                if counted:
                    self._sending.remove(len(group))
                    self.groups += 1
                    self.requests += len(group)
                self._in_flight -= 1
                self._pass_lead()
                self._changed.notify_all()
            for r in group[1:]:
                assert r.done is not None
                r.done.set()

    def _run(self, group: Sequence[Request]) -> None:
        """Send ``group``. A lone request is one ``memory_append_request`` call, which
        raises its error. A group goes set-based (``memory_append_set``); when that meets
        an event id seen before (MM020: a retry, or an id re-used), nothing was written
        and the group goes again request by request (``memory_append_group``), which
        gives each request its own outcome. A group holding appends sealed under
        epochs goes by the ``*_EPOCHS`` statements, which check the epochs first (a lone
        request checks its own); one destroyed (MM004) fails the whole group, writing
        nothing, and each caller seals again (Log.append). A broken connection is replaced once."""
        if len(group) == 1:
            statement, params = log_sql.APPEND, (self.tenant, *group[0].params)
        else:
            epochs = log_sql.epochs_of([r.params for r in group])
            checked: tuple[Any, ...] = (self.tenant, epochs) if epochs else (self.tenant,)
            statement = log_sql.APPEND_SET_EPOCHS if epochs else log_sql.APPEND_SET
            params = (*checked, log_sql.group_json([r.params for r in group]))
        reconnected = False
        held = self.connections.acquire(self.tenant)
        try:
            while True:
                try:
                    rows = held.cursor.execute(statement, params).fetchall()
                except psycopg.Error as exc:
                    if exc.sqlstate == log_sql.SQLSTATE_RESEND and statement in _RESEND:
                        statement = _RESEND[statement]
                        continue
                    if not reconnected and (held.conn.closed or held.conn.broken):
                        held.conn.close()
                        held = self.connections.acquire(self.tenant)
                        reconnected = True
                        continue
                    for r in group:
                        r.error = exc
                    return
                if len(group) == 1:
                    group[0].rows = rows
                else:
                    self._distribute(group, rows)
                return
        finally:
            self.connections.release(held)

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


# Where a set-based group goes when it meets an event id seen before (MM020).
_RESEND = {log_sql.APPEND_SET: log_sql.APPEND_GROUP,
           log_sql.APPEND_SET_EPOCHS: log_sql.APPEND_GROUP_EPOCHS}


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

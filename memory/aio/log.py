"""The async face of the event log: the ``EventLog`` contract (memory/log/contract.py) with
coroutines, over the sync :class:`memory.log.Log` it is made from.

What runs where:

* reads (``read``, ``read_session``, ``read_ids``, ``head``, ``session_version``) and
  ``subscribe``'s LISTEN run on psycopg ``AsyncConnection``s (memory/aio/connections.py),
  the statements and the choice among them shared with the sync face (memory/log/sql.py,
  ``memory.log.eventlog.page_statement``, ``ids_param``);
* rows become events through the sync face's own ``Log.recorded_events``; when a page
  holds sealed rows, opening them (decryption, and a key lookup when a secret is not
  joined in) is CPU and blocking I/O, so it runs off the event loop (``asyncio.to_thread``);
* appends go through the sync face's ``Log.append`` off the event loop, so validation,
  sealing and the group commit (memory/log/group.py) are the same code: an async append
  joins the group of whatever else this process appends.

Typed errors are the sync face's, raised the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa

from ..log import ANY, Appended, Log, NewEvent, RecordedEvent, SchemaRegistry
from ..log import sql as log_sql
from ..log.eventlog import check_follow, ids_param, page_statement
from ..log.events import MAX_POSITION, MAX_VERSION, check_id, check_int
from .connections import AsyncPool, connect, discard


class _OnDemand:
    """A sync connection of ``engine`` opened only if a statement is run on it: what
    ``Log.recorded_events`` is given when the async face decodes rows (most pages need no
    lookup, so no sync connection is taken)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.conn: sa.Connection | None = None

    def exec_driver_sql(self, *args: Any) -> Any:
        if self.conn is None:
            self.conn = self.engine.connect()
        return self.conn.exec_driver_sql(*args)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class AsyncLog:
    """The event log's async face over ``log`` (its engine's role, registry, keys)."""

    def __init__(self, log: Log, *, pool_size: int = 4) -> None:
        self.sync = log
        self.registry: SchemaRegistry = log.registry
        self.pool = AsyncPool(log.engine, log.limits, size=pool_size)

    async def close(self) -> None:
        """Close this face's async connections (the sync log is its owner's)."""
        await self.pool.close()

    async def events(self, rows: Sequence[Any]) -> list[RecordedEvent]:
        """Rows as events, decoded by the sync face; sealed ones opened off the loop."""
        if not any(r[9] is not None for r in rows):
            return self.sync.recorded_events(None, rows)  # type: ignore[arg-type]

        def opened() -> list[RecordedEvent]:
            conn = _OnDemand(self.sync.engine)
            try:
                return self.sync.recorded_events(conn, rows)  # type: ignore[arg-type]
            finally:
                conn.close()
        return await asyncio.to_thread(opened)

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run one statement; a driver error is raised as the sync engine raises it
        (``sqlalchemy.exc.DBAPIError`` and its subclasses, e.g. OperationalError when the
        server is gone), so callers catch the same exceptions on both faces."""
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall()
        except psycopg.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, params, exc, psycopg.Error) from exc

    # -- the contract --------------------------------------------------------------

    async def append(self, tenant: str, actor_id: str, session_id: str,
                     events: NewEvent | Sequence[NewEvent], *,
                     expected_version: int | None = ANY) -> list[Appended]:
        """``Log.append`` off the event loop (validation, sealing, group commit shared)."""
        return await asyncio.to_thread(self.sync.append, tenant, actor_id, session_id,
                                       events, expected_version=expected_version)

    async def read_page(self, after: int, *, tenant: str | None = None,
                        actor_id: str | None = None, limit: int = 1000
                        ) -> list[RecordedEvent]:
        sql, _rows_sql, params = page_statement(after, tenant, actor_id, limit)
        return await self.events(await self.fetch(sql, params))

    def read(self, from_position: int = 0, *, tenant: str | None = None,
             actor_id: str | None = None, batch_size: int = 1000
             ) -> AsyncIterator[RecordedEvent]:
        """Events after ``from_position`` in log order, an async iterator over pages
        (arguments checked here, before the first ``await``)."""
        check_int(from_position, "from_position", 0, MAX_POSITION)
        check_int(batch_size, "batch_size", 1, MAX_VERSION)
        return self._pages(from_position, tenant, actor_id, batch_size)

    async def _pages(self, position: int, tenant: str | None, actor_id: str | None,
                     batch_size: int) -> AsyncIterator[RecordedEvent]:
        while True:
            page = await self.read_page(position, tenant=tenant, actor_id=actor_id,
                                        limit=batch_size)
            for event in page:
                yield event
            if len(page) < batch_size:
                return
            position = page[-1].position

    async def read_session(self, tenant: str, session_id: str, from_version: int = 1,
                           limit: int | None = None) -> list[RecordedEvent]:
        check_int(from_version, "from_version", 0, MAX_VERSION)
        check_int(limit, "limit", 0, MAX_POSITION, none=True)
        rows = await self.fetch(log_sql.READ_SESSION,
                                (tenant, session_id, from_version, limit))
        return await self.events(rows)

    async def read_ids(self, tenant: str, event_ids: Iterable[uuid.UUID | str]
                       ) -> list[RecordedEvent]:
        """``Log.read_ids``: the same checks and statement."""
        check_id(tenant, "tenant", self.sync.limits)
        ids = ids_param(event_ids, self.sync.limits)
        if not ids:
            return []
        return await self.events(await self.fetch(log_sql.READ_IDS, (tenant, ids)))

    async def head(self, tenant: str | None = None) -> int:
        if tenant is None:
            rows = await self.fetch(log_sql.HEAD, ())
        else:
            rows = await self.fetch(log_sql.HEAD_TENANT, (tenant,))
        return int(rows[0][0])

    async def session_version(self, tenant: str, session_id: str) -> int:
        rows = await self.fetch(log_sql.SESSION_VERSION, (tenant, session_id))
        return int(rows[0][0])

    def subscribe(self, from_position: int = 0, *, tenant: str | None = None,
                  poll_interval: float = 1.0, batch_size: int = 500) -> AsyncSubscription:
        check_follow(from_position, poll_interval, batch_size)
        return AsyncSubscription(self, from_position, tenant=tenant,
                                 poll_interval=poll_interval, batch_size=batch_size)


class AsyncSubscription:
    """Follows the log: ``async for event in sub``. Catch-up by pages, then waits for a
    NOTIFY on its own ``AsyncConnection`` (a wake-up only: every read goes by position,
    so a lost notification costs at most ``poll_interval``). ``position`` is the last
    position delivered. ``async with`` (or ``stop()``, from any thread) ends it; the
    listening connection is closed when the iteration ends or is cancelled."""

    def __init__(self, log: AsyncLog, from_position: int, *, tenant: str | None,
                 poll_interval: float, batch_size: int) -> None:
        self.log = log
        self.position = from_position
        self.tenant = tenant
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopped = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    async def _pump(self, listener: psycopg.AsyncConnection[Any]) -> None:
        assert self._wake is not None
        with contextlib.suppress(psycopg.Error):
            async for _ in listener.notifies():
                self._wake.set()

    async def _listen(self) -> tuple[psycopg.AsyncConnection[Any] | None,
                                     asyncio.Task[None] | None]:
        try:
            listener = await connect(self.log.sync.engine, self.log.sync.limits)
            await listener.execute(f"LISTEN {log_sql.NOTIFY_CHANNEL}")
        except psycopg.Error:
            return None, None  # polling still works without the wake-up
        return listener, asyncio.ensure_future(self._pump(listener))

    def __aiter__(self) -> AsyncIterator[RecordedEvent]:
        return self._follow()

    async def _follow(self) -> AsyncIterator[RecordedEvent]:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        listener, pump = await self._listen()  # before the first read: no wake-up missed
        try:
            while not self._stopped:
                self._wake.clear()
                page = await self.log.read_page(self.position, tenant=self.tenant,
                                                limit=self.batch_size)
                for event in page:
                    self.position = event.position
                    yield event
                    if self._stopped:
                        return
                if len(page) < self.batch_size and not self._stopped:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll_interval)
        finally:
            if pump is not None:
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump
            if listener is not None:
                await discard(listener)

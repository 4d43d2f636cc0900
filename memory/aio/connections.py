"""The async face's connections: psycopg ``AsyncConnection``s logged in exactly as the
sync engine they are made from (same URL, so the same tenant role and password that
memory/pg/tenancy.py's ``TenantEngines`` gave that engine; same session settings and
JSON decoding, memory/pg/engine.py ``connect_args`` and memory/pg/codec.py ``parse_json``).

A small pool per async log: at most ``size`` connections at once, kept idle between
calls. A connection whose call was cancelled or failed is closed, never reused (it may be
mid-statement), so cancelling a read leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.types.json import set_json_loads
from sqlalchemy.engine import Engine

from ..config import Limits
from ..pg import engine as db
from ..pg.codec import parse_json


def libpq_url(engine: Engine) -> str:
    """The engine's URL as libpq takes it (its role and password included)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


async def connect(engine: Engine, limits: Limits | None = None
                  ) -> psycopg.AsyncConnection[Any]:
    """One autocommit async connection logged in as ``engine`` logs in."""
    conn = await psycopg.AsyncConnection.connect(libpq_url(engine), autocommit=True,
                                                 **db.connect_args(limits))
    set_json_loads(parse_json, conn)
    return conn


async def discard(conn: psycopg.AsyncConnection[Any]) -> None:
    """Close ``conn`` whatever happens (a cancelled task may be closing it)."""
    with contextlib.suppress(BaseException):
        await asyncio.shield(conn.close())


class AsyncPool:
    """At most ``size`` async connections to ``engine``'s database as its role."""

    def __init__(self, engine: Engine, limits: Limits | None = None, *, size: int = 4
                 ) -> None:
        self.engine = engine
        self.limits = limits
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else await connect(self.engine, self.limits)
            try:
                yield conn
            except BaseException:
                await discard(conn)
                raise
            if (self._closed or conn.closed
                    or conn.info.transaction_status != TransactionStatus.IDLE):
                await discard(conn)
            else:
                self._idle.append(conn)

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await discard(conn)

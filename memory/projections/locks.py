"""The advisory locks of the projections: one writer per generation, and the name lock
under which generations are created and switched.

A runner holds a session-level advisory lock on (projection, generation) while it writes
(:func:`writer_lock`). A second runner for the same generation waits (``wait=True``) or
stops at once with :class:`ProjectionBusy`. The lock goes with the connection, so a
killed runner releases it. Creating and switching generations happen under a
transaction-level lock on the projection's name (:func:`name_lock`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .projection import ProjectionBusy

log = logging.getLogger(__name__)

LOCK_CLASS = 7_263_521  # first key of every projection advisory lock (int4)


def generation_key(name: str, generation: int) -> str:
    """The second key (hashed) of the writer lock of ``name``'s ``generation``."""
    return f"{name}/{generation}"


@contextlib.contextmanager
def writer_lock(engine: Engine, name: str, generation: int, *, wait: bool,
                wait_timeout: float | None, stop: threading.Event,
                announce: bool) -> Iterator[None]:
    """Hold the advisory lock of (projection, generation) on a dedicated connection.
    Another holder makes it wait (polling every half second, up to ``wait_timeout``
    seconds, forever for None) or, with ``wait=False`` or ``stop`` set, raise
    :class:`ProjectionBusy`. ``announce`` also tells the terminal that it waits."""
    key = generation_key(name, generation)
    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
        announced = False
        while True:
            got = conn.exec_driver_sql("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                                       (LOCK_CLASS, key)).scalar_one()
            if got:
                break
            holder = lock_holder(conn, key)
            message = (f"projection {name!r} generation {generation} is being "
                       f"written by another runner{holder}")
            if not wait or stop.is_set() or (
                    deadline is not None and time.monotonic() > deadline):
                raise ProjectionBusy(message + "; only one runner may write it at a time"
                                     " (stop the other one or retry later)")
            if not announced:
                log.warning("%s; waiting for it to finish", message)
                if announce:
                    print(f"{message}; waiting for it to finish...", file=sys.stderr)
                announced = True
            stop.wait(0.5)
        try:
            yield
        finally:
            try:
                conn.exec_driver_sql("SELECT pg_advisory_unlock(%s, hashtext(%s))",
                                     (LOCK_CLASS, key))
            except sa.exc.DBAPIError:
                conn.invalidate()  # the lock dies with the connection
    finally:
        conn.close()


def lock_holder(conn: sa.Connection, key: str) -> str:
    """Who holds the writer lock ``key`` (server pid, application), for the message."""
    try:
        row = conn.exec_driver_sql(
            "SELECT l.pid, a.application_name, a.client_addr FROM pg_locks l "
            "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid "
            "AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid AND l.objsubid = 2",
            (LOCK_CLASS, key)).first()
    except sa.exc.DBAPIError:
        return ""
    if row is None:
        return ""
    return f" (server backend pid {row[0]}, application {row[1] or '?'})"


def name_lock(conn: sa.Connection, name: str, *, timeout: str = "60s") -> None:
    """Take the transaction-level lock on projection ``name`` (creating and switching
    generations), waiting at most ``timeout``."""
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{timeout}'")
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                         (LOCK_CLASS, name))


def try_writer_xact_lock(conn: sa.Connection, name: str, generation: int) -> bool:
    """Take the writer lock of (``name``, ``generation``) until the transaction ends, if
    no runner holds it; False if one does."""
    return bool(conn.exec_driver_sql(
        "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
        (LOCK_CLASS, generation_key(name, generation))).scalar_one())

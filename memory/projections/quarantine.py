"""Poison events: which failures are an event's fault, and the dead-letter table.

A projection must not stop for everyone because one event cannot be projected: an event
whose ciphertext fails authentication, whose payload its schema or upcaster refuses, or
whose ``apply`` raises is written to ``memory_quarantine`` (migration 0011) and the
runner moves on (memory/projections/applying.py). Failures of what the projection depends
on are not the event's fault and must stop the run instead, or a database restart would
quarantine the whole log: :func:`is_poison` draws that line.

Rows are written only by the runner, on the maintenance connection, in the transaction
that moves the checkpoint past the event; forgetting an actor or events deletes theirs
(:func:`forget`). ``error_message`` is cut to :data:`MAX_MESSAGE` characters.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
import sqlalchemy as sa

from ..errors import ConfigurationError, DependencyError, Error

log = logging.getLogger(__name__)

MAX_MESSAGE = 1000

# Database errors that say something about the values of one event (a NUL byte in text,
# a number out of range, a derived row that collides): SQLSTATE classes 22 and 23.
_EVENT_DB_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


def is_poison(exc: BaseException) -> bool:
    """True when ``exc``, raised while decoding or applying a batch, can be the fault of
    an event in it; False for failures of the environment, which must propagate.

    Not the event's fault (raised, never quarantined):

    - anything that is not an ``Exception`` (KeyboardInterrupt, SystemExit);
    - ``MemoryError`` and ``OSError`` (files, sockets, a remote model's connection);
    - database errors other than data and integrity errors (SQLSTATE 22, 23): a lost
      connection, a lock or statement timeout, a serialization failure, a missing
      privilege, a bug in the projection's SQL;
    - :class:`memory.errors.DependencyError` (the embedder or summarizer failed),
      :class:`memory.errors.ConfigurationError`, and the runner's own signals.

    Everything else is the event's: :class:`memory.errors.DecryptionError`, the schema
    and upcasting errors (:class:`memory.errors.ValidationError`), JSON that does not
    decode, nesting too deep (``RecursionError``), and any other exception the
    projection's ``apply`` raises for the events it was given."""
    if not isinstance(exc, Exception):
        return False
    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        exc = exc.orig  # what the driver (or a parameter's processing) raised
    if isinstance(exc, MemoryError | OSError | DependencyError | ConfigurationError):
        return False
    if isinstance(exc, psycopg.Error | sa.exc.DBAPIError):
        return isinstance(exc, _EVENT_DB_ERRORS)
    return True


def describe(exc: BaseException) -> tuple[str, str]:
    """The (class, message) recorded for ``exc``: the driver's error for a wrapped one."""
    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        exc = exc.orig
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" \
        else f"{kind.__module__}.{kind.__qualname__}"
    message = str(exc).strip() or repr(exc)
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE - 1] + "…"
    return name, message


@dataclass(frozen=True)
class QuarantinedEvent:
    """One row of ``memory_quarantine``."""

    id: int
    projection: str
    generation: int
    position: int
    tenant: str
    actor_id: str
    event_id: UUID
    error_class: str
    error_message: str
    first_seen: datetime
    last_seen: datetime
    attempts: int
    resolved_at: datetime | None

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None

    def __str__(self) -> str:
        state = f"resolved {self.resolved_at:%Y-%m-%d %H:%M:%S}" if self.resolved_at \
            else f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        return (f"#{self.id} {self.projection} g{self.generation} position {self.position} "
                f"tenant {self.tenant!r} event {self.event_id} ({state}): "
                f"{self.error_class}: {self.error_message}")


EVENT_COLUMNS = ("id, projection, generation, position, tenant, actor_id, event_id, error_class, "
            "error_message, first_seen, last_seen, attempts, resolved_at")


def record(conn: sa.Connection, projection: str, generation: int, event: Sequence[Any],
           exc: BaseException) -> QuarantinedEvent:
    """Quarantine ``event`` (position, event_id, tenant, actor_id) in the caller's
    transaction; meeting it again (a retry) counts an attempt and keeps the newest error."""
    error_class, message = describe(exc)
    position, event_id, tenant, actor_id = event[:4]
    row = conn.exec_driver_sql(
        "INSERT INTO memory_quarantine (projection, generation, position, tenant, actor_id, "
        "event_id, error_class, error_message) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (projection, generation, position) DO UPDATE SET "
        "attempts = memory_quarantine.attempts + 1, last_seen = now(), "
        "error_class = excluded.error_class, error_message = excluded.error_message, "
        f"resolved_at = NULL RETURNING {EVENT_COLUMNS}",
        (projection, generation, position, tenant, actor_id, event_id, error_class,
         message)).one()
    entry = QuarantinedEvent(*row)
    log.warning("projection %s generation %s quarantined the event at position %s "
                "(tenant %r, event %s): %s: %s", projection, generation, position, tenant,
                event_id, error_class, message)
    return entry


def resolve(conn: sa.Connection, entry_id: int) -> QuarantinedEvent:
    """Mark an entry resolved (its event was applied), counting the attempt."""
    row = conn.exec_driver_sql(
        "UPDATE memory_quarantine SET resolved_at = now(), last_seen = now(), "
        f"attempts = attempts + 1 WHERE id = %s RETURNING {EVENT_COLUMNS}", (entry_id,)).one()
    return QuarantinedEvent(*row)


def entries(conn: sa.Connection, *, projection: str | None = None,
            ids: Sequence[int] | None = None, unresolved: bool = True
            ) -> list[QuarantinedEvent]:
    """Entries of generations that still exist (live or building), oldest first;
    ``unresolved`` (default) leaves out the resolved ones."""
    where = ["g.status <> 'retired'"]
    params: list[Any] = []
    if projection is not None:
        where.append("q.projection = %s")
        params.append(projection)
    if ids is not None:
        where.append("q.id = ANY(%s)")
        params.append(list(ids))
    if unresolved:
        where.append("q.resolved_at IS NULL")
    rows = conn.exec_driver_sql(
        f"SELECT {', '.join('q.' + c.strip() for c in EVENT_COLUMNS.split(','))} "
        "FROM memory_quarantine q JOIN memory_projections g "
        "ON g.name = q.projection AND g.generation = q.generation "
        f"WHERE {' AND '.join(where)} ORDER BY q.projection, q.generation, q.position",
        tuple(params)).fetchall()
    return [QuarantinedEvent(*r) for r in rows]


def by_id(conn: sa.Connection, entry_id: int) -> QuarantinedEvent:
    """One entry, whatever its state; :class:`memory.Error` if there is none."""
    row = conn.exec_driver_sql(f"SELECT {EVENT_COLUMNS} FROM memory_quarantine WHERE id = %s",
                               (entry_id,)).first()
    if row is None:
        raise Error(f"no quarantined event #{entry_id} (see `memory quarantine list`)")
    return QuarantinedEvent(*row)


def drop_generation(conn: sa.Connection, projection: str, generation: int) -> None:
    """Forget the entries of a generation whose rows are being dropped."""
    conn.exec_driver_sql("DELETE FROM memory_quarantine WHERE projection = %s AND "
                         "generation = %s", (projection, generation))


def forget(conn: sa.Connection, tenant: str, *, actor_id: str | None = None,
           event_ids: Sequence[Any] | None = None) -> int:
    """Delete the entries of a forgotten actor and/or events (an error message may quote
    what the event held), in the caller's forget transaction. Returns rows deleted."""
    deleted = 0
    if actor_id is not None:
        deleted += conn.exec_driver_sql(
            "DELETE FROM memory_quarantine WHERE tenant = %s AND actor_id = %s",
            (tenant, actor_id)).rowcount
    if event_ids:
        deleted += conn.exec_driver_sql(
            "DELETE FROM memory_quarantine WHERE tenant = %s AND event_id = ANY(%s::uuid[])",
            (tenant, [str(e) for e in event_ids])).rowcount
    return deleted

"""What every face of the event log promises: the ``EventLog`` protocol.

The synchronous :class:`memory.log.Log` is one implementation; any other face (an async
one, a wrapper) satisfies the same protocol and proves it by running the conformance suite
in tests/log/test_conformance.py, which is parametrised over implementations by one fixture.

The guarantees, each named again where it applies:

* **Global order.** Every event gets a position, unique and increasing across all
  sessions and tenants; ``read`` and ``subscribe`` deliver events in position order, and a
  session's events carry versions 1, 2, 3, ... in the order they were appended.
* **No gaps for readers.** An event never commits at a position below one a reader has
  already seen, so a reader that keeps "the highest position I saw" as its checkpoint
  never skips an event that commits late (appends are serialised per database by a
  transaction-scoped lock: memory/log/sql.py).
* **Optimistic concurrency per session.** ``expected_version`` (``ANY``, ``NO_STREAM`` or
  a version) is checked against the session inside the append's transaction; a stale one
  raises :class:`memory.errors.ConcurrencyError` and writes nothing.
* **Idempotent appends.** Re-sending an event id with the same content returns its first
  position with ``duplicate=True`` and writes nothing; the same id with other content
  raises :class:`memory.errors.IdempotencyConflict` and writes nothing.
* **Immutability.** The log is append-only, enforced by the database: UPDATE, DELETE and
  TRUNCATE of ``memory_events`` are refused by a trigger, even for the table's owner.
* **Bad input refused whole.** A batch is validated before anything is written; one bad
  event (or id, or argument) raises a typed error from :mod:`memory.errors` naming the
  event's index and field, and none of the batch is written.

Projections read pages on their own transaction (``Log.read_page(conn=...)``) and
forgetting reaches the keys (``Log.crypto``); those belong to the synchronous face, not
to this contract.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from .events import Appended, NewEvent, RecordedEvent
from .schemas import SchemaRegistry


@runtime_checkable
class EventSubscription(Protocol):
    """A reader following the log: catch-up, then new events as they commit, in position
    order, each once (no gaps). ``position`` is the last position delivered, the
    checkpoint to resume from; ``stop()`` may be called from any thread."""

    position: int

    def __iter__(self) -> Iterator[RecordedEvent]: ...

    def stop(self) -> None: ...

    def __enter__(self) -> EventSubscription: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class EventLog(Protocol):
    """The event log: the one source of truth. Tenant, actor and session are explicit."""

    registry: SchemaRegistry
    """The event types and their JSON Schemas that appends are validated against."""

    def append(self, tenant: str, actor_id: str, session_id: str,
               events: NewEvent | Sequence[NewEvent], *,
               expected_version: int | None = None) -> list[Appended]:
        """Append a batch to one session, atomically; returns where each event landed.

        Global order: positions increase across sessions; versions follow the batch.
        Optimistic concurrency: a stale ``expected_version`` raises ConcurrencyError.
        Idempotency: a re-sent event id returns its first position (``duplicate=True``);
        the same id with other content raises IdempotencyConflict.
        Bad input refused whole: any bad event raises before a row is written.
        """
        ...

    def read(self, from_position: int = 0, *, tenant: str | None = None,
             actor_id: str | None = None, batch_size: int = 1000
             ) -> Iterator[RecordedEvent]:
        """Events after ``from_position`` (exclusive) in global order, streamed in pages.
        No gaps: a later read from the last position seen returns every event committed
        since, none skipped."""
        ...

    def read_session(self, tenant: str, session_id: str, from_version: int = 1,
                     limit: int | None = None) -> list[RecordedEvent]:
        """A session's events in version order (1, 2, 3, ... without holes)."""
        ...

    def read_ids(self, tenant: str, event_ids: Iterable[uuid.UUID | str]
                 ) -> list[RecordedEvent]:
        """The tenant's events with these ids, whatever their session, in global order;
        ids not in the log are left out (a forgotten event is there, ``forgotten``)."""
        ...

    def subscribe(self, from_position: int = 0, *, tenant: str | None = None,
                  poll_interval: float = 1.0, batch_size: int = 500
                  ) -> EventSubscription:
        """Catch up from ``from_position``, then follow new events as they commit, in
        global order and without gaps."""
        ...

    def head(self, tenant: str | None = None) -> int:
        """The highest position written (0 for an empty log); unchanged by any refused
        append."""
        ...

    def session_version(self, tenant: str, session_id: str) -> int:
        """The session's current version (0 when it has no events): the value to pass as
        ``expected_version`` for the next append."""
        ...

    def close(self) -> None:
        """Release what the log keeps open (not the database's data)."""
        ...

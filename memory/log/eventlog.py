"""The event log: append, read, subscribe. The only source of truth.

This is the synchronous face of the ``EventLog`` contract (memory/log/contract.py); the
statements and row handling it runs live in ``memory.log.sql`` (read its docstring for why
appends are serialised). Guarantees, each proven against a real server by the conformance
suite (tests/log/test_conformance.py):

* append-only: UPDATE, DELETE and TRUNCATE of ``memory_events`` are refused by a trigger;
* no gaps: a reader following positions never skips an event that commits late;
* optimistic concurrency: a stale ``expected_version`` raises ConcurrencyError, writes nothing;
* idempotency: re-sending an event id with the same content returns its first position;
* atomic batches: every event of a batch is validated first; a failure writes none of it.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..config import Limits
from ..errors import InvalidArgument, ValidationError
from ..pg import tenant_scope
from . import group as log_group
from . import sealing as _crypto
from . import sql as log_sql
from .events import (
    MAX_POSITION,
    MAX_VERSION,
    Appended,
    NewEvent,
    PreparedEvent,
    RecordedEvent,
    canonical_json,
    check_id,
    check_int,
    check_size,
    check_time,
    hash_parts,
    parse_event_id,
)
from .schemas import SchemaRegistry

ANY: int | None = None
"""``expected_version`` that accepts the session at any version."""
NO_STREAM = 0
"""``expected_version`` that requires the session not to exist yet."""

_CRYPTO_LOCK = threading.Lock()


class Log:
    """The event log over one engine. Tenant, actor and session are explicit arguments;
    :class:`memory.Store` binds a tenant and is the face most callers use."""

    def __init__(self, engine: Engine, registry: SchemaRegistry | None = None,
                 limits: Limits | None = None, *, encrypt: bool = True,
                 crypto: _crypto.Crypto | None = None) -> None:
        self.engine = engine
        self.registry = registry or SchemaRegistry.default()
        self.limits = limits or Limits()
        self.encrypt = encrypt  # seal payloads and metadata (memory/log/sealing.py)
        self._crypto = crypto
        # Appends: grouped per tenant, on connections of their own, shared by every log
        # over this engine (memory/log/group.py).
        self._appender = log_group.appender(self.engine)

    def close(self) -> None:
        """Close the connections kept for appends over this engine (its pool is the
        caller's). Appends after this still work, on connections not kept."""
        self._appender.close()

    def group_stats(self) -> tuple[int, int]:
        """(statements, appends) sent so far by appends over this engine: appends per
        statement says how much concurrent appends were grouped (memory/log/group.py)."""
        return self._appender.stats()

    # -- writing -------------------------------------------------------------------

    def prepare(self, actor_id: str, events: Sequence[NewEvent]) -> list[PreparedEvent]:
        """Validate and serialize a batch; raises on the first bad event, writes nothing."""
        if isinstance(events, NewEvent):
            events = [events]
        if not events:
            raise ValidationError("a batch needs at least one event", field="events")
        if len(events) > self.limits.max_batch:
            raise ValidationError(
                f"a batch holds at most {self.limits.max_batch} events, got {len(events)}",
                field="events")
        prepared: list[PreparedEvent] = []
        seen: set[Any] = set()
        for i, ev in enumerate(events):
            prepared.append(self._prepare_one(actor_id, ev, i))
            if prepared[-1].event_id in seen:
                raise ValidationError("the same event_id appears twice in the batch",
                                      index=i, field="event_id")
            seen.add(prepared[-1].event_id)
        return prepared

    def _prepare_one(self, actor_id: str, ev: NewEvent, i: int) -> PreparedEvent:
        if not isinstance(ev, NewEvent):
            raise ValidationError(f"expected a NewEvent, got {type(ev).__name__}", index=i)
        if ev.schema_version is not None and (
                type(ev.schema_version) is not int or ev.schema_version < 1):
            raise ValidationError("schema_version must be a positive integer (or None for "
                                  "the current one)", index=i, field="schema_version")
        version = ev.schema_version or self.registry.current_version(ev.type, i)
        payload_json = canonical_json(ev.payload, "payload", i, self.limits.max_depth)
        check_size(payload_json, self.limits, i)
        self.registry.validate(ev.type, version, ev.payload, i)
        metadata = ev.metadata if ev.metadata is not None else {}
        if not isinstance(metadata, dict):
            raise ValidationError("metadata must be a JSON object", index=i, field="metadata")
        metadata_json = (canonical_json(metadata, "metadata", i, self.limits.max_depth)
                         if metadata else "{}")
        check_size(metadata_json, self.limits, i, "metadata")
        occurred_at = check_time(ev.occurred_at, i)
        return PreparedEvent(
            event_id=parse_event_id(ev.event_id, i), type=ev.type, schema_version=version,
            payload_json=payload_json, metadata_json=metadata_json, occurred_at=occurred_at,
            content_hash=hash_parts(actor_id, ev.type, version, payload_json, metadata_json,
                                    ev.occurred_at))

    def append(self, tenant: str, actor_id: str, session_id: str,
               events: NewEvent | Sequence[NewEvent], *,
               expected_version: int | None = ANY) -> list[Appended]:
        """Append a batch to one session, atomically. Returns where each event landed."""
        for value, what in ((tenant, "tenant"), (actor_id, "actor_id"),
                            (session_id, "session_id")):
            check_id(value, what, self.limits)
        # None (ANY), 0 (NO_STREAM) or a version
        check_int(expected_version, "expected_version", 0, MAX_VERSION, none=True)
        prepared = self.prepare(actor_id, events if isinstance(events, Sequence) else [events])
        combiner = self._appender.combiner(tenant)
        for attempt in range(2):
            if self.encrypt:
                # Sealed under the actor's current epoch, which the append checks and
                # holds until commit (memory/log/sealing.py, alembic/sql/05_append.sql).
                epoch = self.crypto.epoch(self.engine, tenant, actor_id, len(prepared))
                batch = self.crypto.seal(tenant, epoch, prepared)
                params: tuple[Any, ...] = (
                    actor_id, session_id, expected_version,
                    log_sql.events_json(prepared, batch.blobs, batch.hashes), batch.key_id,
                    batch.batch, batch.secrets)
            else:
                params = (actor_id, session_id, expected_version,
                          log_sql.events_json(prepared), None, None, None)
            try:
                rows = combiner.submit(log_group.Request(params, len(prepared)))
            except (psycopg.Error, log_group.GroupedError) as exc:
                if isinstance(exc, log_group.GroupedError):
                    state, primary, detail = exc.sqlstate, exc.message, exc.detail
                else:
                    state = exc.sqlstate
                    primary = exc.diag.message_primary or str(exc)
                    detail = exc.diag.message_detail or ""
                if state == log_sql.SQLSTATE_STALE_KEY and attempt == 0:
                    # The actor, or an event of its epoch, was forgotten since its key
                    # and epoch were cached: new ones.
                    self.crypto.forget_cached(tenant, actor_id)
                    continue
                typed = log_sql.typed_error(state, primary, detail, session_id=session_id,
                                            expected=expected_version)
                if typed is not None:
                    raise typed from None
                if isinstance(exc, log_group.GroupedError):
                    raise log_sql.AppendFailed(state, primary) from None
                # As the engine would have raised it (e.g. sqlalchemy.exc.OperationalError
                # when the server is gone: the reconnect was tried once already).
                raise sa.exc.DBAPIError.instance(log_sql.APPEND, None, exc,
                                                 psycopg.Error) from exc
            return log_sql.appended(rows)
        raise AssertionError("unreachable")

    @property
    def crypto(self) -> _crypto.Crypto:
        """The keys: given, else the master key of the environment (loaded on first use)."""
        if self._crypto is None:
            with _CRYPTO_LOCK:  # one Crypto (one key cache) however many threads ask
                if self._crypto is None:
                    self._crypto = _crypto.Crypto.from_environment()
        return self._crypto

    def recorded_events(self, conn: sa.Connection, rows: Sequence[Any], *, lock: bool = False
                  ) -> list[RecordedEvent]:
        """Rows as events; sealed ones opened (or marked forgotten when their key is gone).
        ``lock``: hold their keys until the transaction ends (see Crypto.open_rows)."""
        if not any(r[9] is not None for r in rows):
            return [log_sql.to_recorded(r, self.registry) for r in rows]
        # Rows of the log's own reads carry their secrets (log_sql._WITH_SECRETS); rows
        # of other statements (projections, retrieval) have 14 columns and are looked up.
        out = []
        for r, o in zip(rows, self.crypto.open_rows(conn, rows, lock=lock), strict=True):
            if o is None:
                out.append(log_sql.to_recorded(r, self.registry))
                continue
            schema_version, payload = (r[7], {}) if o.forgotten else \
                self.registry.upcast(r[6], r[7], o.payload)
            out.append(RecordedEvent(
                position=r[0], event_id=r[1], tenant=r[2], actor_id=r[3], session_id=r[4],
                version=r[5], type=r[6], schema_version=schema_version, payload=payload,
                metadata=o.metadata, occurred_at=r[12], recorded_at=r[13],
                forgotten=o.forgotten))
        return out

    # -- reading -------------------------------------------------------------------

    def read_session(self, tenant: str, session_id: str, from_version: int = 1,
                     limit: int | None = None) -> list[RecordedEvent]:
        """A session's events in order, from ``from_version`` on."""
        check_int(from_version, "from_version", 0, MAX_VERSION)
        check_int(limit, "limit", 0, MAX_POSITION, none=True)
        with tenant_scope(tenant), self.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                log_sql.READ_SESSION, (tenant, session_id, from_version, limit)).fetchall()
            return self.recorded_events(conn, rows)

    def read_ids(self, tenant: str, event_ids: Iterable[uuid.UUID | str]
                 ) -> list[RecordedEvent]:
        """The tenant's events with these ids, whatever their session, in log order; ids
        not in the log are left out. One index probe per id, so a reader that knows the
        ids of what it needs (derived from its own keys) does not read whole sessions."""
        check_id(tenant, "tenant", self.limits)
        ids = ids_param(event_ids, self.limits)
        if not ids:
            return []
        with tenant_scope(tenant), self.engine.connect() as conn:
            rows = conn.exec_driver_sql(log_sql.READ_IDS, (tenant, ids)).fetchall()
            return self.recorded_events(conn, rows)

    def read(self, from_position: int = 0, *, tenant: str | None = None,
             actor_id: str | None = None, batch_size: int = 1000) -> Iterator[RecordedEvent]:
        """Events after ``from_position`` (exclusive) in log order, streamed in pages so
        memory stays flat however long the log is."""
        check_int(from_position, "from_position", 0, MAX_POSITION)
        check_int(batch_size, "batch_size", 1, MAX_VERSION)
        return self._pages(from_position, tenant, actor_id, batch_size)

    def _pages(self, position: int, tenant: str | None, actor_id: str | None,
               batch_size: int) -> Iterator[RecordedEvent]:
        while True:
            page = self.read_page(position, tenant=tenant, actor_id=actor_id, limit=batch_size)
            yield from page
            if len(page) < batch_size:
                return
            position = page[-1].position

    def read_page(self, after: int, *, tenant: str | None = None, actor_id: str | None = None,
                  limit: int = 1000, conn: sa.Connection | None = None) -> list[RecordedEvent]:
        """One page of the log after position ``after``; optionally on the caller's
        connection (a projection reads and writes in one transaction)."""
        sql, rows_sql, params = page_statement(after, tenant, actor_id, limit)
        if conn is not None:
            # A projection's transaction: its secrets are looked up and locked.
            rows = conn.exec_driver_sql(rows_sql, params).fetchall()
            return self.recorded_events(conn, rows, lock=True)
        with tenant_scope(tenant), self.engine.connect() as own:
            rows = own.exec_driver_sql(sql, params).fetchall()
            return self.recorded_events(own, rows)

    def head(self, tenant: str | None = None) -> int:
        """The highest position written (0 for an empty log)."""
        with tenant_scope(tenant), self.engine.connect() as conn:
            if tenant is None:
                return int(conn.exec_driver_sql(log_sql.HEAD).scalar_one())
            return int(conn.exec_driver_sql(log_sql.HEAD_TENANT, (tenant,)).scalar_one())

    def session_version(self, tenant: str, session_id: str) -> int:
        with tenant_scope(tenant), self.engine.connect() as conn:
            return int(conn.exec_driver_sql(log_sql.SESSION_VERSION,
                                            (tenant, session_id)).scalar_one())

    def subscribe(self, from_position: int = 0, *, tenant: str | None = None,
                  poll_interval: float = 1.0, batch_size: int = 500) -> Subscription:
        """Catch up from ``from_position``, then follow new events as they commit."""
        check_follow(from_position, poll_interval, batch_size)
        return Subscription(self, from_position, tenant=tenant, poll_interval=poll_interval,
                            batch_size=batch_size)


def ids_param(event_ids: Iterable[uuid.UUID | str], limits: Limits) -> list[uuid.UUID]:
    """Checked, distinct ids for :data:`memory.log.sql.READ_IDS` (both faces): at most
    ``limits.max_batch`` of them; a value that is no UUID raises InvalidArgument."""
    if isinstance(event_ids, str | uuid.UUID):
        event_ids = [event_ids]
    ids: dict[uuid.UUID, None] = {}
    for i, value in enumerate(event_ids):
        try:
            if value is None:
                raise ValidationError("no id")
            ids[parse_event_id(value, i)] = None
        except ValidationError:
            raise InvalidArgument("event_ids", f"item {i} is not a UUID: {value!r:.80}"
                                  ) from None
        if len(ids) > limits.max_batch:
            raise InvalidArgument("event_ids", f"at most {limits.max_batch} ids at once")
    return list(ids)


def page_statement(after: int, tenant: str | None, actor_id: str | None, limit: int
                   ) -> tuple[str, str, tuple[Any, ...]]:
    """Which read a page of the log after ``after`` runs (checked arguments): the
    statement with the secrets joined, its 14-column form (memory/log/sql.py) and the
    parameters. Both faces of the log read pages through this."""
    check_int(after, "after", 0, MAX_POSITION)
    check_int(limit, "limit", 1, MAX_VERSION)
    if actor_id is not None and tenant is None:
        raise ValueError("reading by actor needs the tenant")
    if actor_id is not None:
        return (log_sql.READ_ACTOR, log_sql.READ_ACTOR_ROWS,
                (tenant, actor_id, after, limit))
    if tenant is not None:
        return log_sql.READ_TENANT, log_sql.READ_TENANT_ROWS, (tenant, after, limit)
    return log_sql.READ_ALL, log_sql.READ_ALL_ROWS, (after, limit)


def check_follow(from_position: int, poll_interval: float, batch_size: int) -> None:
    """The arguments of a subscription (either face), checked before anything runs."""
    check_int(from_position, "from_position", 0, MAX_POSITION)
    check_int(batch_size, "batch_size", 1, MAX_VERSION)
    if type(poll_interval) not in (int, float) or not 0 < poll_interval < math.inf:
        raise InvalidArgument("poll_interval", "must be a positive number of seconds, "
                              f"got {poll_interval!r:.40}")


class Subscription:
    """Iterates the log forever: catch-up by pages, then wait for NOTIFY (a wake-up only;
    every read goes by position, so a lost notification costs at most ``poll_interval``).

    Use as a context manager; ``stop()`` (from any thread) ends the iteration.
    """

    def __init__(self, log: Log, from_position: int, *, tenant: str | None,
                 poll_interval: float, batch_size: int) -> None:
        self.log = log
        self.position = from_position
        self.tenant = tenant
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self._stopped = threading.Event()
        self._listener: psycopg.Connection[Any] | None = None

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopped.set()

    def _listen(self) -> psycopg.Connection[Any] | None:
        if self._listener is None:
            url = self.log.engine.url.set(drivername="postgresql")
            try:
                self._listener = psycopg.connect(url.render_as_string(hide_password=False),
                                                 autocommit=True)
                self._listener.execute(f"LISTEN {log_sql.NOTIFY_CHANNEL}")
            except psycopg.Error:
                self._listener = None  # polling still works without the wake-up
        return self._listener

    # How long one wait for a notification lasts before ``stop()`` is looked at again.
    STOP_CHECK_INTERVAL = 0.25

    def _wait(self) -> None:
        """Until a notification, ``poll_interval`` or ``stop()``, whichever comes first."""
        listener = self._listen()
        if listener is None:
            self._stopped.wait(self.poll_interval)
            return
        deadline = time.monotonic() + self.poll_interval
        try:
            while not self._stopped.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                for _ in listener.notifies(timeout=min(left, self.STOP_CHECK_INTERVAL),
                                           stop_after=1):
                    return
        except psycopg.Error:
            self._close_listener()
            self._stopped.wait(self.poll_interval)

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __iter__(self) -> Iterator[RecordedEvent]:
        try:
            self._listen()  # listen before the first read, so no wake-up is missed
            while not self._stopped.is_set():
                page = self.log.read_page(self.position, tenant=self.tenant,
                                          limit=self.batch_size)
                for event in page:
                    self.position = event.position
                    yield event
                    if self._stopped.is_set():
                        return
                if len(page) < self.batch_size:
                    self._wait()
        finally:
            self._close_listener()

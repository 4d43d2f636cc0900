"""The event log's SQL and the logic around it that does not touch a connection.

This is the one place the log's statements live. The sync face (``memory.log``) and any
async face run these same statements and call these same functions, so neither copies the
other: a face only executes.

Why appends are serialised (the no-gap guarantee)
--------------------------------------------------
Readers follow the log by position: "give me everything after N". With a plain sequence,
two concurrent appends can take positions 10 and 11 and commit in the order 11, 10; a
reader that saw 11 and moved its checkpoint past it would never see 10. ``memory_append``
(alembic/versions/0001) therefore takes a transaction-level advisory lock before it draws
positions and holds it until commit, so positions become visible in increasing order and a
reader's checkpoint "everything up to the highest position I have seen" is always safe.
The price is that appends (not reads) are serialised across the database. One append is one
statement run in autocommit, so one round trip (the function does lock, idempotency check,
version check, insert and wake-up) and the lock is held for that statement and its commit.
The commit includes the WAL flush, so concurrent appends cannot share a flush (no group
commit): single-event appends top out near one per fsync whatever the number of writers,
while batches amortise it (benchmarks/RESULTS.md). We chose this over the transaction-id
horizon (``pg_snapshot_xmin``) because that scheme orders readers by (xid, position),
which makes "position" no longer the order readers see, and needs the xid assigned before
the position to be safe; the lock keeps the contract one number.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson

from .errors import (
    AppendOnlyViolation,
    ConcurrencyError,
    Error,
    IdempotencyConflict,
    SessionOwnershipError,
)
from .events import Appended, PreparedEvent, RecordedEvent
from .schemas import SchemaRegistry

NOTIFY_CHANNEL = "memory_events"

# SQLSTATEs raised by the functions and triggers of the migrations.
SQLSTATE_CONCURRENCY = "MM001"
SQLSTATE_IDEMPOTENCY = "MM002"
SQLSTATE_OWNERSHIP = "MM003"
SQLSTATE_APPEND_ONLY = "MM010"

# The batch travels as one JSON document (one row per event: id, type, schema version,
# payload, metadata, content hash in hex, occurred_at, sealed payload in base64, key id)
# and is unpacked into the function's arrays on the server. Building Postgres array
# literals of 1,000 escaped JSON payloads in Python cost several times more than the insert
# itself; one orjson document costs ~1 ms.
APPEND = """
WITH batch AS (
    SELECT b.e, b.n FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS b(e, n)
)
SELECT event_id, position, version, recorded_at, duplicate
  FROM memory_append(
       %s, %s, %s, %s,
       ARRAY(SELECT (e->>0)::uuid FROM batch ORDER BY n),
       ARRAY(SELECT e->>1 FROM batch ORDER BY n),
       ARRAY(SELECT (e->>2)::int FROM batch ORDER BY n),
       ARRAY(SELECT nullif(e->3, 'null') FROM batch ORDER BY n),
       ARRAY(SELECT decode(e->>7, 'base64') FROM batch ORDER BY n),
       ARRAY(SELECT e->>8 FROM batch ORDER BY n),
       ARRAY(SELECT e->4 FROM batch ORDER BY n),
       ARRAY(SELECT decode(e->>5, 'hex') FROM batch ORDER BY n),
       ARRAY(SELECT (e->>6)::timestamptz FROM batch ORDER BY n))
"""

_COLUMNS = """position, event_id, tenant, actor_id, session_id, version, type, schema_version,
       payload, payload_enc, key_id, metadata, occurred_at, recorded_at"""

READ_SESSION = f"""
SELECT {_COLUMNS} FROM memory_events
 WHERE tenant = %s AND session_id = %s AND version >= %s
 ORDER BY version LIMIT %s
"""

READ_ALL = f"""
SELECT {_COLUMNS} FROM memory_events
 WHERE position > %s
 ORDER BY position LIMIT %s
"""

READ_TENANT = f"""
SELECT {_COLUMNS} FROM memory_events
 WHERE tenant = %s AND position > %s
 ORDER BY position LIMIT %s
"""

READ_ACTOR = f"""
SELECT {_COLUMNS} FROM memory_events
 WHERE tenant = %s AND actor_id = %s AND position > %s
 ORDER BY position LIMIT %s
"""

HEAD = "SELECT coalesce(max(position), 0) FROM memory_events"
HEAD_TENANT = "SELECT coalesce(max(position), 0) FROM memory_events WHERE tenant = %s"
SESSION_VERSION = """
SELECT coalesce(max(version), 0) FROM memory_events WHERE tenant = %s AND session_id = %s
"""


def append_params(tenant: str, actor_id: str, session_id: str, expected: int | None,
                  events: Sequence[PreparedEvent],
                  sealed: Sequence[tuple[bytes, str] | None] | None = None) -> tuple[Any, ...]:
    """Parameters of :data:`APPEND`: the batch as one JSON document, then the stream.
    ``sealed`` holds (ciphertext, key id) per event when payloads are encrypted; the clear
    payload is then not sent at all (JSON null in its place)."""
    sealed = sealed or [None] * len(events)
    batch = orjson.dumps([
        (e.event_id, e.type, e.schema_version,
         _NULL if s else orjson.Fragment(e.payload_json), orjson.Fragment(e.metadata_json),
         e.content_hash.hex(), e.occurred_at,
         base64.b64encode(s[0]).decode("ascii") if s else None, s[1] if s else None)
        for e, s in zip(events, sealed, strict=True)])
    return (batch.decode("utf-8"), tenant, actor_id, session_id, expected)


_NULL = orjson.Fragment(b"null")


def appended(rows: Sequence[Sequence[Any]]) -> list[Appended]:
    return [Appended(event_id=r[0], position=r[1], version=r[2], recorded_at=r[3],
                     duplicate=r[4]) for r in rows]


def to_recorded(row: Sequence[Any], registry: SchemaRegistry,
                payload: dict[str, Any] | None = None) -> RecordedEvent:
    """A stored row as the caller sees it, upcast. ``payload`` overrides the stored one
    (the decrypted payload of a sealed event)."""
    (position, event_id, tenant, actor_id, session_id, version, type_, schema_version,
     stored, _enc, _key, metadata, occurred_at, recorded_at) = row
    body = payload if payload is not None else (stored or {})
    schema_version, body = registry.upcast(type_, schema_version, body)
    return RecordedEvent(position=position, event_id=event_id, tenant=tenant,
                         actor_id=actor_id, session_id=session_id, version=version, type=type_,
                         schema_version=schema_version, payload=body, metadata=metadata or {},
                         occurred_at=occurred_at, recorded_at=recorded_at)


def translate(exc: BaseException, *, session_id: str = "", expected: int | None = None
              ) -> Error | None:
    """Turn a database error raised by our SQL into the library's typed error."""
    orig = getattr(exc, "orig", exc)
    state = getattr(orig, "sqlstate", None)
    diag = getattr(orig, "diag", None)
    detail = getattr(diag, "message_detail", None) or ""
    primary = getattr(diag, "message_primary", None) or str(orig)
    if state == SQLSTATE_CONCURRENCY:
        return ConcurrencyError(session_id, expected if expected is not None else -1,
                                int(detail or -1))
    if state == SQLSTATE_IDEMPOTENCY:
        return IdempotencyConflict(detail)
    if state == SQLSTATE_OWNERSHIP:
        return SessionOwnershipError(primary)
    if state == SQLSTATE_APPEND_ONLY:
        return AppendOnlyViolation(primary)
    return None

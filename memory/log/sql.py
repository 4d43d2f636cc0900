"""The event log's SQL and the logic around it that does not touch a connection.

This is the one place the log's statements live. The sync face (``memory.log``) and any
async face run these same statements and call these same functions, so neither copies the
other: a face only executes.

Why appends are serialised (the no-gap guarantee)
--------------------------------------------------
Readers follow the log by position: "give me everything after N". With a plain sequence,
two concurrent appends can take positions 10 and 11 and commit in the order 11, 10; a
reader that saw 11 and moved its checkpoint past it would never see 10. An append
(``memory_append_request``, ``memory_append_set`` and ``memory_append_group``,
alembic/sql/05_append.sql) therefore takes a transaction-level advisory lock before it draws
positions and holds it until commit, so positions become visible in increasing order and a
reader's checkpoint "everything up to the highest position I have seen" is always safe.
The price is that appends (not reads) are serialised across the database, and the lock
is held through the commit's WAL flush, so two appends cannot share a flush. The library
therefore gathers the appends of one process that arrive while another is in flight and
sends them as one statement in one transaction (``memory.log.group``; the server side is
``memory_append_set`` and ``memory_append_group``, alembic/sql/05_append.sql): they
share the lock, the commit and the flush, and each keeps its own outcome. A lone append
is one statement (:data:`APPEND`) in autocommit: one round trip.
We chose this over the transaction-id
horizon (``pg_snapshot_xmin``) because that scheme orders readers by (xid, position),
which makes "position" no longer the order readers see, and needs the xid assigned before
the position to be safe; the lock keeps the contract one number.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import (
    AppendOnlyViolation,
    ConcurrencyError,
    Error,
    IdempotencyConflict,
    SessionOwnershipError,
    TenantAccessError,
    ValidationError,
)
from ..pg import constants
from ..pg.constants import (
    SQLSTATE_APPEND_ONLY,
    SQLSTATE_CONCURRENCY,
    SQLSTATE_IDEMPOTENCY,
    SQLSTATE_MALFORMED,
    SQLSTATE_OWNERSHIP,
    SQLSTATE_TENANT,
)
from .events import Appended, PreparedEvent, RecordedEvent
from .schemas import SchemaRegistry

# The append lock, the wake-up channel and the SQLSTATEs the server functions raise are
# defined once, in memory/pg/constants.py, which the baseline migration writes into the
# SQL; they are named here too because every face of the log reads them from this module.
# SQLSTATE_RESEND: a set-based append met an event id seen before (see APPEND_SET);
# SQLSTATE_STALE_KEY: a request's actor key or epoch was destroyed meanwhile (a forget
# elsewhere), so the caller drops its cached key and seals again (memory/log/eventlog.py).
APPEND_LOCK_KEY = constants.APPEND_LOCK_KEY
NOTIFY_CHANNEL = constants.NOTIFY_CHANNEL
SQLSTATE_RESEND = constants.SQLSTATE_RESEND
SQLSTATE_STALE_KEY = constants.SQLSTATE_STALE_KEY

# The events of an append travel as one JSON array (one row per event: id, type, schema
# version, payload, metadata, content hash in hex, occurred_at, sealed payload in base64)
# unpacked on the server. Building Postgres array literals of 1,000 escaped JSON payloads in
# Python cost several times more than the insert itself; one orjson document costs ~1 ms.
# Parameters: tenant, actor, session, expected version, events, then for sealed events
# the actor key id to check, the batch (the events' key id) and its packed secrets; for
# events sealed under an epoch (memory/log/sealing.py): no key id, the epoch, no secrets.
APPEND = """
SELECT event_id, position, version, recorded_at, duplicate
  FROM memory_append_request(%s, %s, %s, %s, %s::jsonb, %s, %s, %s)
"""

# One or several appends of one tenant (see memory/log/group.py): one row per appended
# event, or one row with the error of a request that failed. APPEND_SET writes the group
# with one insert when every request is the common case, else hands it to APPEND_GROUP's
# function; it raises SQLSTATE_RESEND (nothing written) when an event id was seen before,
# and the group is then sent to APPEND_GROUP, which runs each request in a subtransaction.
APPEND_SET = """
SELECT req, event_id, position, version, recorded_at, duplicate,
       err_state, err_message, err_detail, err_table
  FROM memory_append_set(%s, %s::jsonb)
"""
APPEND_GROUP = """
SELECT req, event_id, position, version, recorded_at, duplicate,
       err_state, err_message, err_detail, err_table
  FROM memory_append_group(%s, %s::jsonb)
"""

# The two group statements for appends sealed under epochs: ``memory_check_epochs``
# (alembic 0007) first holds the epochs (their names: one more parameter after the
# tenant) until commit, or raises SQLSTATE_STALE_KEY; the append takes the tenant from its
# result, so it runs after the check. A lone append under an epoch is plain APPEND:
# memory_append_request checks its epoch itself (alembic 0008).
_CHECKED = "memory_check_epochs(%s, %s) AS c(tenant)\n CROSS JOIN LATERAL "
APPEND_SET_EPOCHS = APPEND_SET.replace("memory_append_set(%s,", _CHECKED
                                       + "memory_append_set(c.tenant,")
APPEND_GROUP_EPOCHS = APPEND_GROUP.replace("memory_append_group(%s,", _CHECKED
                                           + "memory_append_group(c.tenant,")


def epochs_of(requests: Sequence[Sequence[Any]]) -> list[str]:
    """The distinct epochs of appends given as :data:`APPEND`'s parameters less the tenant
    (the batch of a request with no actor key id), in name order: the order a forget
    locks them in too (memory/forget.py), so the two cannot deadlock."""
    return sorted({p[5] for p in requests if p[4] is None and p[5] is not None})


EVENT_COLUMNS = """position, event_id, tenant, actor_id, session_id, version, type, schema_version,
       payload, payload_enc, key_id, metadata, occurred_at, recorded_at"""

# The reads, each in two forms: ``*_ROWS`` gives the 14 columns above (a projection's
# transaction reads that and then locks the secrets it opens, memory/log/sealing.py); the plain
# name also joins each sealed event's secret (its batch row's actor key id and the event's
# 32 bytes, NULL for clear events and for events sealed before 0005), so opening a page
# needs no second look-up. The join is a LATERAL look-up by the secrets' primary key, one
# probe per event (LIMIT 1 keeps the planner from flattening it back into a join): as a
# plain join, a generic plan made while the table's statistics were
# stale scanned every secrets row of the tenant for each event (measured: 18 ms for a
# page of 5 events with 15k secrets rows, follower lag p95 3 s in benchmarks/append.py).
_E_COLUMNS = ", ".join("e." + c.strip() for c in EVENT_COLUMNS.split(","))
_WITH_SECRETS = f"""{_E_COLUMNS},
       s.key_id, CASE WHEN e.key_id LIKE 'e:%%' THEN s.secrets
                      ELSE substring(s.secrets FROM (e.version - s.first_version) * 32 + 1
                                     FOR 32) END
  FROM memory_events e
  LEFT JOIN LATERAL (SELECT s.key_id, s.secrets, s.first_version
                       FROM memory_event_secrets s
                      WHERE s.tenant = e.tenant AND s.batch = e.key_id
                      LIMIT 1) s ON true"""

_WHERE_SESSION = """ WHERE e.tenant = %s AND e.session_id = %s AND e.version >= %s
 ORDER BY e.version LIMIT %s"""
_WHERE_ALL = """ WHERE e.position > %s
 ORDER BY e.position LIMIT %s"""
_WHERE_TENANT = """ WHERE e.tenant = %s AND e.position > %s
 ORDER BY e.position LIMIT %s"""
_WHERE_ACTOR = """ WHERE e.tenant = %s AND e.actor_id = %s AND e.position > %s
 ORDER BY e.position LIMIT %s"""

READ_SESSION = f"SELECT {_WITH_SECRETS}\n{_WHERE_SESSION}"
READ_ALL = f"SELECT {_WITH_SECRETS}\n{_WHERE_ALL}"
READ_TENANT = f"SELECT {_WITH_SECRETS}\n{_WHERE_TENANT}"
READ_ACTOR = f"SELECT {_WITH_SECRETS}\n{_WHERE_ACTOR}"
READ_ALL_ROWS = f"SELECT {_E_COLUMNS} FROM memory_events e\n{_WHERE_ALL}"
READ_TENANT_ROWS = f"SELECT {_E_COLUMNS} FROM memory_events e\n{_WHERE_TENANT}"
READ_ACTOR_ROWS = f"SELECT {_E_COLUMNS} FROM memory_events e\n{_WHERE_ACTOR}"
# The select list of the reads above with the secrets' join, for statements that read
# events in other shapes (the session views below).
SELECT_EVENTS = f"SELECT {_WITH_SECRETS}"

# Events by id, whatever their session: one probe each of the unique (tenant, event_id)
# index. A caller that derives event ids from what it stores (an integration's own keys)
# finds an event without reading its session.
READ_IDS = f"""SELECT {_WITH_SECRETS}
 WHERE e.tenant = %s AND e.event_id = ANY(%s::uuid[])
 ORDER BY e.position"""

HEAD = "SELECT coalesce(max(position), 0) FROM memory_events"
HEAD_TENANT = "SELECT coalesce(max(position), 0) FROM memory_events WHERE tenant = %s"
SESSION_VERSION = """
SELECT coalesce(max(version), 0) FROM memory_events WHERE tenant = %s AND session_id = %s
"""


# -- session views (memory/log/views.py) ---------------------------------------------------
# The statements that compute a session's view from its control events; any face of the
# log runs them and hands their rows to the functions of memory/log/views.py. A view is
# one statement: a recursive CTE walks the chain of fork events (one index probe per
# ancestor, on the unique (tenant, session_id, version) index), the events of each
# (session, version range) segment are read by that index, and the hidden ids come from
# the retractions of the same segments (a partial index, alembic/sql/0002_views.sql).

FORK_TYPE = "session_forked"
RETRACT_TYPE = "events_retracted"
MAX_DEPTH = 64
"""Forks of forks: at most this many ancestors (a fork deeper than that is refused)."""

# The chain of a session: itself (depth 0, no upper version), then each ancestor with the
# version and position its child's view stops at. A fork event counts only when it is
# version 1 of its session, clear (a sealed one has a NULL payload), at or below the
# bound, and names an event of the same actor written before it: whatever was appended
# below the library, a view never reaches another actor or the parent's later events.
# Casts that cannot fail, whatever a payload below the library holds (a fork's version
# that is no integer, ids that are no array of uuids): such an event shapes nothing.
_VERSION = """CASE WHEN pg_input_is_valid(f.payload->>'parent_version', 'integer')
                     THEN (f.payload->>'parent_version')::integer END"""
_IDS = """CASE WHEN jsonb_typeof(r.payload->'event_ids') = 'array'
                                            THEN r.payload->'event_ids' END"""
_ID = "CASE WHEN pg_input_is_valid(x.id, 'uuid') THEN x.id::uuid END"

# Each step is two probes of the unique (tenant, session_id, version) index, written as
# LATERAL ... LIMIT 1 so the planner cannot turn them into scans (as plain joins the plan
# scans the actor's events by position for each ancestor: 2 ms a step at 10k events).
_CHAIN = f"""
WITH RECURSIVE chain(depth, session_id, upto, upto_pos) AS (
  SELECT 0, %(session)s::text, NULL::bigint, NULL::bigint
  UNION ALL
  SELECT c.depth + 1, p.session_id, p.version::bigint, p.position
    FROM chain c
    CROSS JOIN LATERAL (SELECT f.type, f.payload, f.position, f.actor_id
                          FROM memory_events f
                         WHERE f.tenant = %(tenant)s AND f.session_id = c.session_id
                           AND f.version = 1 LIMIT 1) f
    CROSS JOIN LATERAL (SELECT p.session_id, p.version, p.position, p.actor_id
                          FROM memory_events p
                         WHERE p.tenant = %(tenant)s
                           AND p.session_id = f.payload->>'parent_session_id'
                           AND p.version = {_VERSION}
                         LIMIT 1) p
   WHERE c.depth < {MAX_DEPTH} AND f.type = '{FORK_TYPE}' AND f.position <= %(bound)s
     AND p.position < f.position AND p.actor_id = f.actor_id
)"""

# The whole view, each event with its secret. No ORDER BY: a sort of a long view spills to
# disk at the default work_mem (7 % of the read); the rows come segment by segment in
# version order and views.view_of sorts them, which is linear on input already in order.
READ_VIEW = f"""{_CHAIN}
{SELECT_EVENTS}
  JOIN chain c ON c.session_id = e.session_id
 WHERE e.tenant = %(tenant)s AND e.position <= %(bound)s
   AND (c.upto IS NULL OR e.version <= c.upto)
"""

# What a context call (or a summary refresh) needs of a view, in one round trip: the
# chain ('c'), the ids hidden by the view's retractions ('h'), and the events retracted
# in their own session among the searched actors' sessions ('w'). Both retraction reads
# go by the partial indexes of alembic/sql/0002_views.sql, the named events by
# (tenant, event_id).
VIEW_FILTER = f"""{_CHAIN}
SELECT 'c', c.session_id, c.upto, c.upto_pos, NULL::text FROM chain c
UNION ALL
SELECT 'h', NULL, NULL, NULL, x.id
  FROM chain c
 CROSS JOIN LATERAL (SELECT r.payload FROM memory_events r
                      WHERE r.tenant = %(tenant)s AND r.session_id = c.session_id
                        AND r.type = '{RETRACT_TYPE}' AND r.position <= %(bound)s
                        AND (c.upto IS NULL OR r.version <= c.upto)) r
 CROSS JOIN LATERAL jsonb_array_elements_text({_IDS}) x(id)
UNION ALL
SELECT 'w', NULL, NULL, NULL, t.event_id::text
  FROM memory_events r
 CROSS JOIN LATERAL jsonb_array_elements_text({_IDS}) x(id)
 CROSS JOIN LATERAL (SELECT t.event_id FROM memory_events t
                      WHERE t.tenant = r.tenant AND t.event_id = {_ID}
                        AND t.session_id = r.session_id LIMIT 1) t
 WHERE r.tenant = %(tenant)s AND r.actor_id = ANY(%(actors)s)
   AND r.type = '{RETRACT_TYPE}' AND r.position <= %(bound)s
"""


def view_may_filter(bound: str) -> str:
    """A boolean SQL expression, true whenever :data:`VIEW_FILTER` (same ``%(tenant)s``,
    ``%(session)s``, ``%(actors)s``) at the log position ``bound`` (an SQL expression)
    could return more than the session alone: the session's version 1 is a fork, or a
    retraction at or below the bound sits in the session or in a searched actor's
    sessions. False means the view is the session's own events and hides nothing, so a
    statement a caller already runs can carry this test and spare the view's own round
    trip. Three index probes: the unique (tenant, session_id, version) index and the two
    partial retraction indexes of alembic/sql/0002_views.sql (which hold retractions
    only, so a tenant without any answers from an empty index range)."""
    return f"""(EXISTS (SELECT 1 FROM memory_events f
                 WHERE f.tenant = %(tenant)s AND f.session_id = %(session)s
                   AND f.version = 1 AND f.type = '{FORK_TYPE}' AND f.position <= {bound})
     OR EXISTS (SELECT 1 FROM memory_events r
                 WHERE r.tenant = %(tenant)s AND r.session_id = %(session)s
                   AND r.type = '{RETRACT_TYPE}' AND r.position <= {bound})
     OR EXISTS (SELECT 1 FROM memory_events r
                 WHERE r.tenant = %(tenant)s AND r.actor_id = ANY(%(actors)s)
                   AND r.type = '{RETRACT_TYPE}' AND r.position <= {bound}))"""


# The test alone, at the bound ``%(bound)s``: ViewFilter.read runs VIEW_FILTER only when true.
VIEW_MAY_FILTER = f"SELECT {view_may_filter('%(bound)s')}"


# What a fork checks, in one statement: the parent's actor and head version, the new
# session's head version (NULL: it has no events), how many sessions the parent's chain
# holds (itself included).
FORK_STATE = f"""{_CHAIN}
SELECT (SELECT actor_id FROM memory_events WHERE tenant = %(tenant)s
           AND session_id = %(session)s ORDER BY version DESC LIMIT 1),
       (SELECT max(version) FROM memory_events WHERE tenant = %(tenant)s
           AND session_id = %(session)s),
       (SELECT max(version) FROM memory_events WHERE tenant = %(tenant)s
           AND session_id = %(new)s),
       (SELECT count(*) FROM chain)
"""

# A segment's events newer than a position, newest first (the summary of a view).
SEGMENT_AFTER = f"""
SELECT {EVENT_COLUMNS} FROM memory_events
 WHERE tenant = %s AND session_id = %s AND version <= %s AND position > %s
   AND position <= %s
 ORDER BY version DESC LIMIT %s
"""


def events_json(events: Sequence[PreparedEvent], sealed: Sequence[bytes] | None = None,
                hashes: Sequence[bytes] | None = None) -> str:
    """The events of one append as :data:`APPEND` takes them. ``sealed`` holds the
    ciphertext of each event when payloads are encrypted (and ``hashes`` their keyed
    content hashes, memory/log/sealing.py); the clear payload is then not sent at all (JSON
    null in its place), nor the metadata (sealed with the payload)."""
    if sealed is None or hashes is None:
        return orjson.dumps([
            (e.event_id, e.type, e.schema_version, orjson.Fragment(e.payload_json),
             orjson.Fragment(e.metadata_json), e.content_hash.hex(), e.occurred_at, None)
            for e in events]).decode("utf-8")
    b64 = base64.b64encode
    return orjson.dumps([
        (e.event_id, e.type, e.schema_version, None, _EMPTY, h.hex(), e.occurred_at,
         b64(s).decode("ascii"))
        for e, s, h in zip(events, sealed, hashes, strict=True)]).decode("utf-8")


_EMPTY = orjson.Fragment(b"{}")


def append_params(tenant: str, actor_id: str, session_id: str, expected: int | None,
                  events: Sequence[PreparedEvent]) -> tuple[Any, ...]:
    """Parameters of :data:`APPEND` for clear events (forget's tombstones, tests)."""
    return (tenant, actor_id, session_id, expected, events_json(events), None, None, None)


def group_json(requests: Sequence[Sequence[Any]]) -> str:
    """The ``p_requests`` of :data:`APPEND_GROUP` from :data:`APPEND`'s parameters (less
    the tenant) of each request."""
    return orjson.dumps([
        {"a": actor, "s": session, "x": expected, "e": orjson.Fragment(events),
         "k": key_id, "b": batch,
         "z": base64.b64encode(secrets).decode("ascii") if secrets is not None else None}
        for actor, session, expected, events, key_id, batch, secrets in requests
    ]).decode("utf-8")


def appended(rows: Sequence[Sequence[Any]]) -> list[Appended]:
    return [Appended(event_id=r[0], position=r[1], version=r[2], recorded_at=r[3],
                     duplicate=r[4]) for r in rows]


def to_recorded(row: Sequence[Any], registry: SchemaRegistry,
                payload: dict[str, Any] | None = None) -> RecordedEvent:
    """A stored row as the caller sees it, upcast. ``payload`` overrides the stored one
    (the decrypted payload of a sealed event)."""
    (position, event_id, tenant, actor_id, session_id, version, type_, schema_version,
     stored, _enc, _key, metadata, occurred_at, recorded_at) = row[:14]
    body = payload if payload is not None else (stored or {})
    schema_version, body = registry.upcast(type_, schema_version, body)
    return RecordedEvent(position=position, event_id=event_id, tenant=tenant,
                         actor_id=actor_id, session_id=session_id, version=version, type=type_,
                         schema_version=schema_version, payload=body, metadata=metadata or {},
                         occurred_at=occurred_at, recorded_at=recorded_at)


class AppendFailed(Error):
    """One append of a group failed with an error that is not one of the log's own (see
    :func:`typed_error`); ``sqlstate`` says which. Nothing of that append was written."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(f"the append failed ({sqlstate}): {message}")
        self.sqlstate = sqlstate


def typed_error(state: str | None, primary: str, detail: str, *, session_id: str = "",
                expected: int | None = None) -> Error | None:
    """The library's typed error for a SQLSTATE raised by the migrations' functions."""
    if state == SQLSTATE_CONCURRENCY:
        return ConcurrencyError(session_id, expected if expected is not None else -1,
                                int(detail or -1))
    if state == SQLSTATE_IDEMPOTENCY:
        return IdempotencyConflict(detail)
    if state == SQLSTATE_OWNERSHIP:
        return SessionOwnershipError(primary)
    if state == SQLSTATE_APPEND_ONLY:
        return AppendOnlyViolation(primary)
    if state == SQLSTATE_TENANT:
        return TenantAccessError(primary)
    if state == SQLSTATE_MALFORMED:
        return ValidationError(primary)
    return None


def translate(exc: BaseException, *, session_id: str = "", expected: int | None = None
              ) -> Error | None:
    """Turn a database error raised by our SQL into the library's typed error."""
    orig = getattr(exc, "orig", exc)
    diag = getattr(orig, "diag", None)
    return typed_error(getattr(orig, "sqlstate", None),
                       getattr(diag, "message_primary", None) or str(orig),
                       getattr(diag, "message_detail", None) or "",
                       session_id=session_id, expected=expected)

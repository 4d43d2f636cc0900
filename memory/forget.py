"""Forgetting: erase an actor, or single events, from an append-only log and from
everything derived from it.

``memory_events`` is never updated (a trigger refuses it). Forgetting destroys keys
instead (crypto-shredding, see memory/log/sealing.py), then follows the lineage:

1. **One transaction** records the request (``memory_forget_requests``, pending),
   destroys the keys (an actor: its key row and every epoch and secrets row under it;
   events: their epochs, whose other events' keys are kept one row each, or for older
   formats their own secrets; memory/log/sealing.py), and deletes what every projection
   derived (``memory.projections.forget``: chunks with their vectors and full text,
   summaries).
   Recorded contexts (``context_assembled`` events) are sealed like any event: an actor's
   own go with its key, and a context of *another* actor that cited a forgotten event is
   forgotten with it (its query and the hash of its messages would otherwise remain).
2. **A second transaction** appends the ``forgotten`` tombstones (schemas/forgotten.v1.json:
   ids only, in clear; their event ids derive from the request id, so appending again is
   an idempotent no-op), deletes derived rows once more and marks the request completed.

A crash between the two leaves a pending request: the next ``Store.open`` or
``Store.forget`` of the tenant completes it. A crash inside the first rolls it back
whole (nothing was forgotten; call again). Calling forget again for the same actor or
events is a no-op that reports ``already_forgotten``.

Why projections cannot resurrect: a projection runner opens event payloads inside its
write transaction and locks their event secrets (``FOR SHARE``, memory/log/sealing.py), so
step 1 waits for a runner that already decrypted an event to commit, then deletes what it
wrote. Replays and rebuilds read forgotten events as ``forgotten=True`` with an empty
payload, and derive nothing from them.

Rows deleted by PostgreSQL keep their bytes in the data files: ``Store.forget`` then
rewrites the key tables and vacuums the derived ones (memory/erasure.py), or records that
this is pending when its connection may not. Copies made before the forget (backups, WAL
archives, replicas' lag) keep the key for as long as they are kept (docs/threat-model.md,
"What forget leaves behind"). Events stored while encryption was off cannot be erased
from the log; a forget that would leave such payloads refuses with :class:`ForgetError`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .errors import Error, ValidationError
from .log import (
    CONTROL_TYPES,  # forks and retractions: ids only, in clear
    NewEvent,
    check_id,
    parse_event_id,
)
from .log import sql as log_sql
from .pg import tenant_scope
from .retrieval import CONTEXT_EVENT

if TYPE_CHECKING:
    from .erasure import Erasure
    from .log import Log

TOMBSTONE = "forgotten"
TOMBSTONE_SESSION = "memory.forget:"


class ForgetError(Error):
    """A forget cannot be done as asked; nothing was forgotten."""


@dataclass(frozen=True)
class ForgetResult:
    """What one forget did. ``event_ids``: the events whose payloads were destroyed one by
    one (the ones asked for, plus contexts that cited them); an actor's events go with its
    key and are counted in ``actor_events``."""

    request_id: uuid.UUID | None
    actor_id: str | None
    actor_events: int
    event_ids: tuple[uuid.UUID, ...]
    derived_rows: int
    already_forgotten: bool
    # The physical erasure that followed (memory/erasure.py): done, or pending and why.
    erasure: Erasure | None = None


def _projections_forget(conn: sa.Connection, tenant: str, *, actor_id: str | None,
                        event_ids: Sequence[uuid.UUID]) -> int:
    from .projections import forget as forget_projections

    deleted = 0
    if actor_id is not None:
        deleted += forget_projections(conn, tenant, actor_id=actor_id)
    if event_ids:
        deleted += forget_projections(conn, tenant, event_ids=list(event_ids))
    return deleted


def _citing_contexts(log: Log, conn: sa.Connection, tenant: str, forgotten: set[uuid.UUID],
                     skip_actor: str | None) -> list[uuid.UUID]:
    """Recorded contexts (of actors other than ``skip_actor``) that cited a forgotten
    event. Their payloads are sealed, so they are opened to read their sources."""
    if not forgotten:
        return []
    rows = conn.exec_driver_sql(
        f"SELECT {log_sql.EVENT_COLUMNS} FROM memory_events WHERE tenant = %s AND type = %s "
        "AND actor_id IS DISTINCT FROM %s ORDER BY position",
        (tenant, CONTEXT_EVENT, skip_actor)).fetchall()
    out = []
    for event in log.recorded_events(conn, rows):
        if event.forgotten:
            continue
        cited = {str(e) for e in event.payload.get("source_event_ids") or []}
        cited |= {str(s.get("event_id")) for s in event.payload.get("sources") or []
                  if isinstance(s, dict) and s.get("event_id")}
        if cited & {str(f) for f in forgotten}:
            out.append(event.event_id)
    return out


def _refuse_clear(conn: sa.Connection, tenant: str, *, actor_id: str | None,
                  event_ids: Sequence[uuid.UUID]) -> None:
    clause, params = ("actor_id = %s", (actor_id,)) if actor_id is not None else \
        ("event_id = ANY(%s::uuid[])", (list(event_ids),))
    n = conn.exec_driver_sql(
        f"SELECT count(*) FROM memory_events WHERE tenant = %s AND {clause} "
        "AND payload_enc IS NULL AND type <> ALL(%s)",
        (tenant, *params, [TOMBSTONE, *CONTROL_TYPES])).scalar_one()
    if n:
        raise ForgetError(
            f"{n} event(s) were stored without encryption (the store was opened with "
            "encryption off), and the append-only log cannot erase a clear payload; "
            "nothing was forgotten")


def forget(log: Log, tenant: str, *, actor_id: str | None = None,
           event_ids: Iterable[uuid.UUID | str] | None = None) -> ForgetResult:
    """Forget every event of ``actor_id``, or the events ``event_ids``, in ``tenant``."""
    if (actor_id is None) == (event_ids is None):
        raise ValidationError("forget takes an actor or event ids (one of the two)",
                              field="actor_id")
    ids: list[uuid.UUID] = []
    if actor_id is not None:
        check_id(actor_id, "actor_id", log.limits)
    else:
        if isinstance(event_ids, str | uuid.UUID):
            event_ids = [event_ids]
        ids = list(dict.fromkeys(parse_event_id(e, i) for i, e in enumerate(event_ids or [])))
        if not ids:
            raise ValidationError("forget needs at least one event id", field="event_ids")
    complete_pending(log, tenant)
    with tenant_scope(tenant), log.engine.begin() as conn:
        found = conn.exec_driver_sql(
            "SELECT event_id, actor_id FROM memory_events WHERE tenant = %s AND "
            + ("actor_id = %s" if actor_id is not None else "event_id = ANY(%s::uuid[])"),
            (tenant, actor_id if actor_id is not None else ids)).fetchall()
        if actor_id is None:
            missing = set(ids) - {r[0] for r in found}
            if missing:
                raise ValidationError(
                    f"no event {', '.join(sorted(map(str, missing))[:5])} in tenant "
                    f"{tenant!r}; nothing was forgotten", field="event_ids")
        _refuse_clear(conn, tenant, actor_id=actor_id, event_ids=ids)
        forgotten = {r[0] for r in found}
        targets = ids + [c for c in _citing_contexts(log, conn, tenant, forgotten, actor_id)
                         if c not in forgotten]
        destroyed = 0
        if actor_id is not None:
            # The key first: an append holding it (FOR KEY SHARE) is waited for, one
            # starting now finds it gone; then every secret under it, that append's too,
            # the epochs once the appends holding them are done (their advisory locks).
            keys = [r[0] for r in conn.exec_driver_sql(
                "DELETE FROM memory_keys WHERE tenant = %s AND actor_id = %s "
                "RETURNING key_id", (tenant, actor_id))]
            destroyed += len(keys)
            if keys:
                conn.exec_driver_sql(  # in name order (alembic/versions/0010)
                    "SELECT memory_lock_epochs(%s, %s)", (tenant, keys)).scalar_one()
                conn.exec_driver_sql(
                    "DELETE FROM memory_event_secrets WHERE tenant = %s AND key_id = ANY(%s)",
                    (tenant, keys))
                conn.exec_driver_sql(  # events sealed before migration 0005
                    "DELETE FROM memory_event_keys WHERE tenant = %s AND key_id = ANY(%s)",
                    (tenant, keys))
        if targets:
            destroyed += _destroy_epochs(log, conn, tenant, targets)
            # Each event's 32 bytes in its batch's secrets row are zeroed (the other
            # events of the batch stay readable; alembic/versions/0005), and a key kept
            # for an event of an epoch destroyed before is nulled.
            destroyed += conn.exec_driver_sql(
                "SELECT memory_forget_secrets(%s, %s::uuid[])",
                (tenant, targets)).scalar_one()
        derived = _projections_forget(conn, tenant, actor_id=actor_id, event_ids=targets)
        request_id = None
        if destroyed:
            request_id = uuid.uuid4()
            conn.exec_driver_sql(
                "INSERT INTO memory_forget_requests (tenant, request_id, actor_id, event_ids) "
                "VALUES (%s, %s, %s, %s::uuid[])", (tenant, request_id, actor_id, targets))
    if actor_id is not None:
        log.crypto.forget_cached(tenant, actor_id)
    if request_id is not None:
        derived += complete_pending(log, tenant, only=request_id)
    return ForgetResult(request_id=request_id, actor_id=actor_id,
                        actor_events=len(found) if actor_id is not None else 0,
                        event_ids=tuple(targets), derived_rows=derived,
                        already_forgotten=not destroyed)


def _destroy_epochs(log: Log, conn: sa.Connection, tenant: str,
                    targets: Sequence[uuid.UUID]) -> int:
    """Destroy the epochs that sealed any of ``targets``, keeping the keys of their
    other events (one ``memory_event_keys`` row each, masked under the actor key:
    memory/log/sealing.py). Returns how many targets lost their key here.

    Each epoch is locked first, both ways its users hold it: exclusively its advisory
    lock, which appends under it hold (shared) until they commit (alembic/versions/0007),
    and its row ``FOR UPDATE``, which projection runners hold (``FOR SHARE``) while they
    derive from its events. So this waits for them, and then sees every event the epoch
    sealed; an append that comes later finds the epoch gone and seals again under a new
    one. Epochs are locked in name order (bytewise), as appends lock them
    (log_sql.epochs_of), so no two of these deadlock."""
    destroyed = 0
    forgotten = set(targets)
    for name, actor_id in conn.exec_driver_sql(
            "SELECT DISTINCT key_id COLLATE \"C\", actor_id FROM memory_events "
            "WHERE tenant = %s AND event_id = ANY(%s::uuid[]) AND key_id LIKE 'e:%%' "
            "ORDER BY 1",
            (tenant, list(targets))).fetchall():
        # both locks, in a function (alembic/versions/0010): the advisory-lock functions
        # are the owner's alone
        row = conn.exec_driver_sql("SELECT key_id, secrets FROM memory_lock_epoch(%s, %s)",
                                   (tenant, name)).first()
        if row is None:
            continue  # destroyed by an earlier forget: its kept keys are nulled below
        sealed = [r[0] for r in conn.exec_driver_sql(
            "SELECT event_id FROM memory_events WHERE tenant = %s AND actor_id = %s "
            "AND key_id = %s", (tenant, actor_id, name))]
        kept = log.crypto.epoch_keys(conn, tenant, row[0], bytes(row[1]),
                                     [e for e in sealed if e not in forgotten])
        if kept:
            ids, keys = zip(*kept, strict=True)
            conn.exec_driver_sql(
                "INSERT INTO memory_event_keys (tenant, event_id, key_id, secret) "
                "SELECT %s, e, %s, k FROM unnest(%s::uuid[], %s::bytea[]) AS x(e, k)",
                (tenant, row[0], list(ids), list(keys)))
        conn.exec_driver_sql("DELETE FROM memory_event_secrets WHERE tenant = %s "
                             "AND batch = %s", (tenant, name))
        destroyed += len(set(sealed) & forgotten)
    return destroyed


def complete_pending(log: Log, tenant: str, *, only: uuid.UUID | None = None) -> int:
    """Finish the forget requests of ``tenant`` that a crash left pending (or just
    ``only``): tombstones appended (idempotently), derived rows swept again, request
    marked completed. Returns the derived rows deleted."""
    deleted = 0
    with tenant_scope(tenant), log.engine.begin() as conn:
        sql = ("SELECT request_id, actor_id, event_ids, requested_at "
               "FROM memory_forget_requests WHERE tenant = %s AND completed_at IS NULL")
        params: tuple[Any, ...] = (tenant,)
        if only is not None:
            sql += " AND request_id = %s"
            params += (only,)
        pending = conn.exec_driver_sql(sql + " ORDER BY requested_at FOR UPDATE SKIP LOCKED",
                                       params).fetchall()
        for request_id, actor_id, event_ids, requested_at in pending:
            deleted += _projections_forget(conn, tenant, actor_id=actor_id,
                                           event_ids=event_ids)
            _append_tombstones(log, conn, tenant, request_id, actor_id, event_ids,
                               requested_at)
            conn.exec_driver_sql(
                "UPDATE memory_forget_requests SET completed_at = now() "
                "WHERE tenant = %s AND request_id = %s", (tenant, request_id))
    return deleted


def _append_tombstones(log: Log, conn: sa.Connection, tenant: str, request_id: uuid.UUID,
                       actor_id: str | None, event_ids: Sequence[uuid.UUID],
                       requested_at: Any) -> None:
    per_actor: dict[str, list[str]] = {}
    if actor_id is not None:
        per_actor[actor_id] = []
    if event_ids:
        for eid, owner in conn.exec_driver_sql(
                "SELECT event_id, actor_id FROM memory_events WHERE tenant = %s AND "
                "event_id = ANY(%s::uuid[]) ORDER BY position",
                (tenant, list(event_ids))).fetchall():
            per_actor.setdefault(owner, []).append(str(eid))
    for owner, ids in per_actor.items():
        scope = "actor" if owner == actor_id else "events"
        event = NewEvent(TOMBSTONE, {"request_id": str(request_id), "scope": scope,
                                     "actor_id": owner, "event_ids": ids},
                         event_id=uuid.uuid5(request_id, owner), occurred_at=requested_at)
        prepared = log.prepare(owner, [event])
        params = log_sql.append_params(tenant, owner, TOMBSTONE_SESSION + owner, None,
                                       prepared)
        try:
            conn.exec_driver_sql(log_sql.APPEND, params).fetchall()
        except sa.exc.DBAPIError as exc:
            typed = log_sql.translate(exc)
            raise (typed or exc) from None

"""Physical erasure after a forget: the bytes PostgreSQL keeps after a DELETE.

A forget (memory/forget.py) deletes key rows and derived rows in a transaction. PostgreSQL
leaves a deleted row's bytes in its page, and VACUUM marks the space free without zeroing
it, so a wrapped data key or an epoch secret could still be read from the table's files.
This module finishes the job on the owner's connection (``Store.maintenance_engine``):

- the key tables (``KEY_TABLES``: wrapped data keys, epoch secrets, per-event secrets)
  are rewritten with ``VACUUM FULL``: the new files hold only live rows, the old files are
  unlinked. They are small (a row per actor and per epoch of ~1,000 of its events), so the
  rewrite takes milliseconds (92 ms for 1,000 actors, benchmarks/RESULTS.md, "Erasure"),
  but it holds an ACCESS EXCLUSIVE lock on each table meanwhile, which appends (they read
  these tables) wait for.
- the derived tables (``DERIVED_TABLES``) get a plain ``VACUUM`` with index cleanup forced
  on, which removes the deleted rows' index entries and lets their space be reused
  without blocking readers or writers. Their bytes stay in the freed space of the pages
  until a later write reuses it (docs/threat-model.md, "What forget leaves behind").

VACUUM FULL copies a deleted row along if a snapshot older than the delete may still see
it, so the rewrite first waits (``wait_seconds``) for older transactions on this database
(and replication slots or prepared transactions holding the horizon back) to end. If they
do not, or the connection may not vacuum the tables (the app role owns nothing), nothing is
rewritten: the forget requests stay pending (``memory_forget_requests.erased_at`` is
NULL) and ``memory forget --erase-pending``, run with the owner's URL, completes them.

WAL keeps the deleted bytes (and the full-page image a DELETE writes after a checkpoint)
until its segment is removed, or recycled and overwritten; ``flush_wal`` hastens that
with checkpoints and WAL switches (docs/threat-model.md, "What forget leaves behind",
says how long).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

# Columns whose planner statistics are kept (identifiers, no content); every other
# text/bytea/jsonb/tsvector/vector column of a memory_* relation has statistics target 0.
# Defined once with the SQL that shares it (alembic/sql/08_statistics.sql).
from .pg.constants import STATISTICS_ALLOWED as STATISTICS_ALLOWED

KEY_TABLES = ("memory_keys", "memory_event_secrets", "memory_event_keys")
DERIVED_TABLES = ("memory_chunks", "memory_words", "memory_summaries",
                  "memory_summary_state", "memory_quarantine")


@dataclass(frozen=True)
class Erasure:
    """What the physical erasure step did.

    ``done``: the key tables were rewritten and the derived tables vacuumed after every
    completed forget request; ``pending``: requests still waiting for that (their key
    bytes may remain in freed space of the key tables' files until then; None when this
    connection may not read them); ``reason``: why it did not run, when it did not;
    ``seconds``: time spent (waiting included); ``wal_flushed``: checkpoints and WAL
    switches ran after the rewrite (:func:`flush_wal`)."""

    done: bool
    pending: int | None
    reason: str | None = None
    seconds: float = 0.0
    wal_flushed: bool = False


def erase(engine: Engine, *, wait_seconds: float = 10.0, flush_wal: bool = False,
          rewrite_derived: bool = False) -> Erasure:
    """Rewrite the key tables and vacuum the derived tables on ``engine`` (the owner's
    connection), then mark every forget request completed before the start as erased.
    ``rewrite_derived`` rewrites the derived tables too (``VACUUM FULL``: their freed
    space and the full-text index's stale words go, but readers and the projection runner
    wait for the rewrite, HNSW index rebuilds included).
    Never raises for a refusal it can name: the result says what is pending and why.
    The engine's ``lock_timeout`` bounds the wait for the key tables' lock."""
    start = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        missing = _not_vacuumable(conn)
        pending = _pending(conn)
        if missing:
            return Erasure(False, pending, f"{conn.engine.url.username or 'this role'} may "
                           f"not vacuum {', '.join(missing)}; run `memory forget "
                           "--erase-pending` with the owner's URL", time.monotonic() - start)
        mark = conn.exec_driver_sql("SELECT now()").scalar_one()
        blocker = _wait_for_horizon(conn, wait_seconds)
        if blocker is not None:
            return Erasure(False, pending, blocker, time.monotonic() - start)
        conn.exec_driver_sql("SET statement_timeout = 0")
        try:
            conn.exec_driver_sql("VACUUM (FULL) " + ", ".join(KEY_TABLES))
            derived = _existing(conn, DERIVED_TABLES)
            if derived:
                conn.exec_driver_sql(("VACUUM (FULL) " if rewrite_derived else
                                      "VACUUM (INDEX_CLEANUP ON) ") + ", ".join(derived))
        except sa.exc.OperationalError as exc:  # lock_timeout: an append held a key table
            return Erasure(False, pending, f"could not lock the key tables: "
                           f"{str(exc.orig).strip()}", time.monotonic() - start)
        finally:
            conn.exec_driver_sql("RESET statement_timeout")
        conn.exec_driver_sql(
            "UPDATE memory_forget_requests SET erased_at = now() WHERE erased_at IS NULL "
            "AND completed_at IS NOT NULL AND completed_at <= %s", (mark,))
        flushed = flush_wal and _flush_wal(conn)
        return Erasure(True, _pending(conn), None, time.monotonic() - start, flushed)


def pending_requests(engine: Engine) -> int | None:
    """Completed forget requests whose physical erasure has not run (what this
    connection's row-level security lets it see)."""
    with engine.connect() as conn:
        return _pending(conn)


def flush_wal(engine: Engine) -> bool:
    """CHECKPOINT, then twice a switch to a new WAL segment and a CHECKPOINT: the segments
    holding the forgotten bytes are no longer needed for recovery and get removed, or
    recycled (renamed for reuse, their old bytes kept until overwritten). Needs the
    pg_checkpoint role and EXECUTE on pg_switch_wal (a superuser has both); returns False
    when refused. Archived segments, ``wal_keep_size`` and replication slots keep what
    they keep."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return _flush_wal(conn)


def _pending(conn: sa.Connection) -> int | None:
    """None when this role may not read the requests (AUTOCOMMIT: nothing to roll back)."""
    try:
        return int(conn.exec_driver_sql(
            "SELECT count(*) FROM memory_forget_requests WHERE erased_at IS NULL "
            "AND completed_at IS NOT NULL").scalar_one())
    except sa.exc.ProgrammingError:
        return None


def _existing(conn: sa.Connection, tables: tuple[str, ...]) -> list[str]:
    return [t for t in tables if conn.exec_driver_sql(
        "SELECT to_regclass(%s) IS NOT NULL", (t,)).scalar_one()]


def _not_vacuumable(conn: sa.Connection) -> list[str]:
    """The tables this role may not vacuum (VACUUM only warns and skips them)."""
    maintain = conn.exec_driver_sql(
        "SELECT current_setting('server_version_num')::int >= 170000").scalar_one()
    check = ("pg_has_role(current_user, c.relowner, 'USAGE')"
             + (" OR has_table_privilege(c.oid, 'MAINTAIN')" if maintain else ""))
    tables = _existing(conn, KEY_TABLES + DERIVED_TABLES)
    return [r[0] for r in conn.exec_driver_sql(
        f"SELECT c.relname FROM pg_class c WHERE c.oid = ANY(%s::regclass[]) "
        f"AND NOT ({check}) ORDER BY c.relname", (tables,))]


# Backends (of this database, or of none: WAL senders with hot_standby_feedback),
# replication slots and prepared transactions whose snapshot may still see a row deleted
# before the mark (the next transaction id when the wait began): VACUUM FULL would
# copy such a row into the new file.
_HORIZON = """
WITH m AS (SELECT age((%s::numeric %% 4294967296)::text::xid) AS mark_age)
SELECT 'backend ' || pid || coalesce(' (' || nullif(application_name, '') || ')', '')
FROM pg_stat_activity, m
WHERE pid <> pg_backend_pid() AND (datname = current_database() OR datname IS NULL)
  AND greatest(age(backend_xmin), age(backend_xid)) > m.mark_age
UNION ALL
SELECT 'replication slot ' || slot_name FROM pg_replication_slots, m
WHERE (database = current_database() OR database IS NULL)
  AND greatest(age(xmin), age(catalog_xmin)) > m.mark_age
UNION ALL
SELECT 'prepared transaction ' || gid FROM pg_prepared_xacts, m
WHERE database = current_database() AND age(transaction) > m.mark_age
LIMIT 1
"""


def _wait_for_horizon(conn: sa.Connection, wait_seconds: float) -> str | None:
    """Wait until nothing may still see the rows deleted before now; the blocker's
    description if something still may after ``wait_seconds``."""
    mark = conn.exec_driver_sql(
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text").scalar_one()
    deadline = time.monotonic() + wait_seconds
    while True:
        # age() of the mark grows as transaction ids are spent: recomputed each round.
        blocker = conn.exec_driver_sql(_HORIZON, (mark,)).scalar()
        if blocker is None:
            return None
        if time.monotonic() >= deadline:
            return (f"{blocker} has a snapshot older than the forget; the key tables "
                    "were not rewritten (a rewrite would copy the deleted rows); run "
                    "`memory forget --erase-pending` once it ends")
        time.sleep(0.05)


def _flush_wal(conn: sa.Connection) -> bool:
    """Twice: a switch ends the segment holding the bytes, the checkpoint after it lets
    the server remove or recycle every segment before it; the second round moves past the
    segment the first one started (benchmarks/erasure.py measures what stays)."""
    try:
        conn.exec_driver_sql("CHECKPOINT")
        for _ in range(2):
            conn.exec_driver_sql("SELECT pg_switch_wal()")
            conn.exec_driver_sql("CHECKPOINT")
    except sa.exc.DBAPIError:  # no pg_checkpoint role / EXECUTE on pg_switch_wal
        return False
    return True

"""How the sync log reports the append-only guard, and the guard's shape. That UPDATE,
DELETE and TRUNCATE of memory_events are refused even as the owner is part of the log's
contract: tests/log/test_conformance.py."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

import memory
from memory.log import sql as log_sql


def raw_url(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
        hide_password=False)


def snapshot(database_url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(raw_url(database_url)) as conn:
        return conn.execute("SELECT position, event_id, type, payload, payload_enc, metadata "
                            "FROM memory_events ORDER BY position").fetchall()


@pytest.fixture
def written(store: memory.Store, database_url: str) -> list[tuple[object, ...]]:
    store.append("s", [memory.message("user", "hello"), memory.note("likes tea")],
                 actor="alice")
    rows = snapshot(database_url)
    assert len(rows) == 2
    return rows


def test_refusal_is_a_typed_error(store: memory.Store, written: list[tuple[object, ...]],
                                  database_url: str) -> None:
    """As the owner (a tenant's role may not even try: tests/pg/test_least_privilege.py)."""
    with pytest.raises(sa.exc.DBAPIError) as info, store.maintenance_engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM memory_events WHERE false")
    typed = log_sql.translate(info.value)
    assert isinstance(typed, memory.AppendOnlyViolation)
    assert "DELETE is refused" in str(typed)
    assert snapshot(database_url) == written


def test_the_guard_is_a_statement_trigger_that_fires_always(database_url: str) -> None:
    with psycopg.connect(raw_url(database_url)) as conn:
        rows = conn.execute("""
            SELECT t.tgenabled, t.tgtype & 1 AS per_row
              FROM pg_trigger t WHERE t.tgrelid = 'memory_events'::regclass
               AND t.tgname = 'memory_events_append_only'""").fetchall()
    assert rows == [("A", 0)]

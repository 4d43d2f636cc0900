"""The schema exists only through Alembic migrations, and they round-trip: upgrade head,
downgrade base, upgrade again gives the same schema, on an empty database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from support import new_database

from memory.pg import engine as db

REPO = Path(__file__).resolve().parents[2]

# Everything the migrations own in the schema (extension members excluded: an extension
# such as pgvector is created once and may outlive the downgrade).
SCHEMA = """
SELECT 'relation', c.relkind::text, c.relname FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = current_schema() AND c.relname NOT LIKE 'alembic_version%%'
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
UNION ALL
SELECT 'function', p.prokind::text, p.oid::regprocedure::text FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = current_schema()
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'trigger', t.tgenabled::text, t.tgrelid::regclass::text || '.' || t.tgname
  FROM pg_trigger t WHERE NOT t.tgisinternal
UNION ALL
SELECT 'policy', p.cmd, p.tablename || '.' || p.policyname FROM pg_policies p
 WHERE p.schemaname = current_schema()
UNION ALL
SELECT 'column', a.attnum::text, c.relname || '.' || a.attname || ' '
       || format_type(a.atttypid, a.atttypmod)
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = current_schema() AND a.attnum > 0 AND NOT a.attisdropped
   AND c.relkind IN ('r', 'p') AND c.relname NOT LIKE 'alembic_version%%'
ORDER BY 1, 3, 2
"""


@pytest.fixture
def empty_url(server_url: str) -> Iterator[str]:
    """A database with no schema at all (not cloned from the migrated template)."""
    with new_database(server_url, "test_migrations", template=None) as url:
        yield url


def schema(engine: sa.Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(SCHEMA).fetchall()]


def revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def test_upgrade_downgrade_upgrade_round_trips(empty_url: str) -> None:
    engine = db.make_engine(empty_url)
    try:
        assert schema(engine) == []
        db.migrate(engine)
        head = schema(engine)
        names = {name for _, _, name in head}
        assert {"memory_events", "memory_events_position_seq",
                "memory_events.memory_events_append_only"} <= names
        assert any(n.startswith("memory_append(") for n in names)
        assert revision(engine) is not None

        db.migrate(engine)  # already at head: a no-op
        assert schema(engine) == head

        db.downgrade(engine)
        assert schema(engine) == []
        assert revision(engine) is None

        db.migrate(engine)
        assert schema(engine) == head
    finally:
        engine.dispose()


def test_alembic_command_uses_memory_database_url(empty_url: str) -> None:
    env = {**os.environ, "MEMORY_DATABASE_URL": empty_url}
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini")]
    engine = db.make_engine(empty_url)
    try:
        subprocess.run([*alembic, "upgrade", "head"], cwd=REPO, env=env, check=True,
                       capture_output=True, timeout=120)
        head = schema(engine)
        assert any(name == "memory_events" for _, _, name in head)
        subprocess.run([*alembic, "downgrade", "base"], cwd=REPO, env=env, check=True,
                       capture_output=True, timeout=120)
        assert schema(engine) == []
    finally:
        engine.dispose()

"""The schema exists only through Alembic migrations, and they round-trip: upgrade head,
downgrade base, upgrade again gives the same schema, on an empty database. The constants
the server functions share with the library (memory/pg/constants.py) are the ones the
functions in the database carry, and the migrations follow their rules (alembic/README.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from support import new_database

from memory.pg import constants
from memory.pg import engine as db

REPO = Path(__file__).resolve().parents[2]
ALEMBIC = REPO / "alembic"

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

        with engine.begin() as conn:
            tenant_role = conn.exec_driver_sql(
                "SELECT memory_ensure_tenant_role('acme', NULL)").scalar()
        assert isinstance(tenant_role, str) and tenant_role.startswith(constants.ROLE_PREFIX)

        db.downgrade(engine)
        assert schema(engine) == []
        assert revision(engine) is None
        with engine.connect() as conn:
            # Roles are cluster-wide: the tenant roles this database mapped go with it; the
            # group role stays for other databases, with no privilege left in this one.
            roles = {r for (r,) in conn.exec_driver_sql(
                "SELECT rolname FROM pg_roles WHERE rolname IN (%s, %s)",
                (tenant_role, constants.APP_ROLE))}
            assert roles == {constants.APP_ROLE}
            acls = conn.exec_driver_sql(
                "SELECT coalesce(d.datacl::text, '') || coalesce(n.nspacl::text, '') "
                "FROM pg_database d, pg_namespace n "
                "WHERE d.datname = current_database() AND n.nspname = current_schema()"
            ).scalar()
            assert constants.APP_ROLE not in acls
            assert conn.exec_driver_sql(
                "SELECT has_function_privilege('public', 'pg_advisory_xact_lock(bigint)', "
                "'EXECUTE')").scalar()

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


# The bodies of the library's functions (and the append-only trigger's), as the database
# holds them.
BODIES = """
SELECT p.proname, p.prosrc FROM pg_proc p
 WHERE p.pronamespace = current_schema()::regnamespace AND p.proname LIKE 'memory%%'
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
"""

SQLSTATES = {value for name, value in vars(constants).items() if name.startswith("SQLSTATE_")}


@pytest.fixture
def bodies(database_url: str) -> dict[str, str]:
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as conn:
            return dict(conn.exec_driver_sql(BODIES).fetchall())
    finally:
        engine.dispose()


def test_every_append_takes_the_append_lock_of_the_library(bodies: dict[str, str]) -> None:
    lock = f"pg_advisory_xact_lock({constants.APPEND_LOCK_KEY})"
    appends = ["memory_append", "memory_append_request", "memory_append_group",
               "memory_append_set"]
    assert all(lock in bodies[name] for name in appends)
    keys = {int(k) for body in bodies.values()
            for k in re.findall(r"pg_advisory_xact_lock\((\d+)\)", body)}
    assert keys == {constants.APPEND_LOCK_KEY}
    assert constants.MIGRATE_LOCK_KEY != constants.APPEND_LOCK_KEY


def test_the_functions_raise_only_the_sqlstates_the_library_knows(
        bodies: dict[str, str]) -> None:
    raised = {code for body in bodies.values()
              for code in re.findall(r"ERRCODE = '(\w+)'", body)}
    assert raised == SQLSTATES
    assert "'MM" not in re.sub(r"ERRCODE = 'MM\d+'", "", "".join(bodies.values()))
    assert f"ERRCODE = '{constants.SQLSTATE_APPEND_ONLY}'" in \
        bodies["memory_events_refuse_change"]
    assert f"ERRCODE = '{constants.SQLSTATE_RESEND}'" in bodies["memory_append_set"]


def test_the_wake_up_goes_to_the_channel_the_library_listens_on(
        bodies: dict[str, str]) -> None:
    channels = [c for body in bodies.values() for c in re.findall(r"pg_notify\('(\w*)'", body)]
    assert channels and set(channels) == {constants.NOTIFY_CHANNEL}


def test_tenant_roles_are_named_and_grouped_as_the_library_expects(
        bodies: dict[str, str]) -> None:
    ensure = bodies["memory_ensure_tenant_role"]
    assert f"'{constants.ROLE_PREFIX}' ||" in ensure
    assert f"GRANT {constants.APP_ROLE} TO %I" in ensure
    assert f"rolname = '{constants.APP_ROLE}'" in bodies["memory_secure_table"]


def test_the_sql_files_name_the_shared_constants_instead_of_repeating_them() -> None:
    for path in sorted((ALEMBIC / "sql").glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        assert str(constants.APPEND_LOCK_KEY) not in text, path.name
        assert not re.search(r"'MM\d{3}'", text), path.name
        assert f"'{constants.NOTIFY_CHANNEL}'" not in text, path.name
        assert not re.search(rf"\b{constants.APP_ROLE}\b", text), path.name
        assert set(re.findall(r"\{\{(\w+)\}\}", text)) <= set(constants.SQL_CONSTANTS)


def test_no_migration_imports_another() -> None:
    """A migration that changes a function carries its whole new text: none loads,
    imports or splices another migration's SQL."""
    versions = sorted((ALEMBIC / "versions").glob("*.py"))
    assert versions
    names = {path.stem for path in versions}
    for path in versions:
        text = path.read_text(encoding="utf-8")
        assert "importlib" not in text and "with_name(" not in text, path.name
        imports = [line for line in text.splitlines() if line.startswith(("import", "from"))]
        assert not any(name in line for line in imports for name in names), path.name


def test_schema_head_is_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(db.alembic_config()).get_heads() == [db.SCHEMA_HEAD]


def test_opening_a_database_at_head_never_loads_alembic(database_url: str) -> None:
    """A store opened on a migrated database reads the version row and goes on: Alembic's
    modules are not imported (they stay out of every process that only uses a store)."""
    script = ("import sys, memory\n"
              "with memory.Store.open(sys.argv[1]) as store:\n"
              "    store.append('s', memory.message('user', 'hi'), actor='a')\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "('alembic', 'mako')))\n")
    run = subprocess.run([sys.executable, "-c", script, database_url], capture_output=True,
                         text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"


def test_a_database_behind_head_is_upgraded(empty_url: str) -> None:
    engine = db.make_engine(empty_url)
    try:
        db.migrate(engine, "0002")
        with engine.connect() as conn:
            assert db.current_revision(conn) == "0002"
        db.migrate(engine)
        with engine.connect() as conn:
            assert db.current_revision(conn) == db.SCHEMA_HEAD
    finally:
        engine.dispose()

"""Least privilege (alembic/sql/07_privileges.sql, memory/pg/tenancy.py): SQL run on a tenant's own
connection, as an injection would run it, is refused or confined to that tenant, and the
other tenants' appends, reads and projections go on. A test enumerates every privilege of
``memory_app`` and of a tenant role against an explicit allow-list."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

import memory
from memory import message, note
from memory.log import sql as log_sql
from memory.pg import tenancy as security
from memory.pg.constants import APPEND_LOCK_KEY


def raw(engine: sa.Engine) -> psycopg.Connection:
    """A connection of its own logged in as ``engine``'s role (a tenant's, with the
    password the library derived), outside the library."""
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(url, autocommit=True)


@pytest.fixture
def stores(database_url: str) -> Iterator[tuple[memory.Store, memory.Store, memory.Store]]:
    """(the store, acme's face, globex's face), with an event of each tenant."""
    with memory.Store.open(database_url, migrate=False) as store:
        acme, globex = store.for_tenant("acme"), store.for_tenant("globex")
        acme.append("s", [message("user", "acme secret plans"), note("acme note")],
                    actor="u1")
        globex.append("s", message("user", "globex secret plans"), actor="u1")
        yield store, acme, globex


def owner_count(store: memory.Store, table: str, tenant: str) -> int:
    with store.maintenance_engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table} WHERE tenant = %s",
                                        (tenant,)).scalar_one())


def still_works(store: memory.Store, tenant: memory.Store, embedder=None) -> None:  # type: ignore[no-untyped-def]
    """``tenant`` appends and reads back, and the projections follow."""
    before = len(list(tenant.read()))
    out = tenant.append("s", note(f"after the attack {uuid.uuid4()}"), actor="u1")
    assert [e.event_id for e in tenant.read()][-1] == out[0].event_id
    assert len(list(tenant.read())) == before + 1
    if embedder is not None:
        store.project(embedder=embedder)
        assert owner_count(store, "memory_chunks", tenant.tenant) > 0


def test_the_library_logs_in_as_each_tenants_own_role(
        stores: tuple[memory.Store, memory.Store, memory.Store], database_url: str) -> None:
    store, acme, globex = stores
    with raw(acme.engine) as conn:
        database = conn.execute("SELECT current_database()").fetchone()[0]
        assert conn.execute("SELECT session_user, memory_tenant()").fetchone() == (
            security.role_name(database, "acme"), "acme")
    assert acme.engine is not globex.engine
    assert acme.engine is store.for_tenant("acme").engine  # one engine per tenant
    assert store.engine.url.username == security.role_name(database, "default")
    assert store.maintenance_engine.url.username == "postgres"
    # memory_app is a group: nobody logs in as it
    url = sa.engine.make_url(database_url).set(drivername="postgresql",
                                               username=security.APP_ROLE)
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        psycopg.connect(url.render_as_string(hide_password=False))


def test_setting_memory_tenant_or_the_role_reads_nothing_of_another_tenant(
        stores: tuple[memory.Store, memory.Store, memory.Store], embedder) -> None:  # type: ignore[no-untyped-def]
    store, acme, globex = stores
    store.project(embedder=embedder)
    assert owner_count(store, "memory_chunks", "globex") > 0
    assert owner_count(store, "memory_words", "globex") > 0
    tables = ["memory_events", "memory_chunks", "memory_words", "memory_keys",
              "memory_event_secrets", "memory_summaries", "memory_summary_state"]
    with store.maintenance_engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        assert conn.exec_driver_sql(  # the tenant names are in the statistics
            "SELECT count(*) FROM pg_stats WHERE tablename = 'memory_events'").scalar()
    with raw(acme.engine) as conn:
        # ... which row-level security hides from a tenant (and pg_statistic is the owner's)
        assert conn.execute("SELECT count(*) FROM pg_stats WHERE tablename LIKE 'memory%'"
                            ).fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM pg_statistic")
        conn.execute("SET memory.tenant = 'globex'")
        conn.execute("SELECT set_config('memory.tenant', 'globex', false)")
        for table in tables:
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE tenant <> 'acme'"
                                ).fetchone() == (0,), table
        assert conn.execute("SELECT count(*) FROM memory_events").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM memory_chunks").fetchone()[0] > 0
        with raw(globex.engine) as other:
            globex_role = other.execute("SELECT session_user").fetchone()[0]
        for statement in (f"SET ROLE {globex_role}", "SET ROLE memory_app",
                          "SET ROLE postgres", "SET SESSION AUTHORIZATION postgres",
                          f"SET SESSION AUTHORIZATION {globex_role}"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        # the mapping itself is the owner's
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM memory_tenant_roles")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO memory_tenant_roles VALUES (session_user, 'globex')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT memory_ensure_tenant_role('globex', NULL)")
        assert conn.execute("SELECT memory_tenant()").fetchone() == ("acme",)
    assert [e.payload["content"] for e in globex.read()] == ["globex secret plans"]
    still_works(store, globex, embedder)


def test_shared_state_the_sequence_and_the_log_are_out_of_reach(
        stores: tuple[memory.Store, memory.Store, memory.Store], embedder) -> None:  # type: ignore[no-untyped-def]
    store, acme, globex = stores
    store.project(embedder=embedder)
    with store.maintenance_engine.connect() as conn:
        checkpoints = conn.exec_driver_sql(
            "SELECT name, generation, position FROM memory_projections ORDER BY 1, 2"
        ).fetchall()
    attacks = [
        "UPDATE memory_projections SET position = position + 1000000",
        "DELETE FROM memory_projections",
        "INSERT INTO memory_projections (name, generation, status) VALUES ('x', 9, 'live')",
        "INSERT INTO memory_events (position, event_id, tenant, actor_id, session_id, "
        "version, type, schema_version, payload, content_hash, occurred_at) VALUES "
        "(9000000000000000, gen_random_uuid(), 'acme', 'u1', 'x', 1, 'note', 1, "
        "'{\"text\": \"x\"}', '\\x00', now())",
        "SELECT setval('memory_events_position_seq', 1)",
        "SELECT nextval('memory_events_position_seq')",
        "SELECT currval('memory_events_position_seq')",
        "UPDATE memory_events SET payload = '{}'",
        "TRUNCATE memory_events",
        "INSERT INTO memory_event_secrets (tenant, batch, key_id, first_version, secrets) "
        "VALUES ('acme', 'e:00', 'k', 0, '\\x00')",
        "UPDATE memory_event_secrets SET secrets = '\\x00'",
        "INSERT INTO memory_keys (tenant, key_id, actor_id, wrapped, master_id) "
        "VALUES ('acme', 'k', 'u9', '\\x00', 'm')",
        "UPDATE memory_keys SET wrapped = '\\x00'",
        "INSERT INTO memory_chunks (generation, tenant, actor_id, session_id, "
        "event_position, event_id, chunk_index, occurred_at, text, embedding) VALUES "
        "(1, 'acme', 'u1', 's', 1, gen_random_uuid(), 9, now(), 'x', '[1]')",
        "CREATE TABLE memory_mine (x int)",
        "CREATE FUNCTION memory_tenant() RETURNS text LANGUAGE sql AS $$ SELECT 'globex' $$",
        "ALTER TABLE memory_events DISABLE ROW LEVEL SECURITY",
        "DROP POLICY memory_tenant ON memory_chunks",
        "ALTER FUNCTION memory_tenant() OWNER TO CURRENT_USER",
        "SELECT memory_secure_table('memory_chunks', true)",
        "SELECT memory_epoch_lock('x')",
    ]
    with raw(acme.engine) as conn:
        for statement in attacks:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with store.maintenance_engine.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT name, generation, position FROM memory_projections ORDER BY 1, 2"
        ).fetchall() == checkpoints
    still_works(store, globex, embedder)
    still_works(store, acme, embedder)


@pytest.mark.parametrize("function", [
    "pg_advisory_lock({k})", "pg_advisory_lock_shared({k})", "pg_advisory_xact_lock({k})",
    "pg_advisory_xact_lock_shared({k})", "pg_try_advisory_lock({k})",
    "pg_try_advisory_xact_lock({k})", "pg_try_advisory_lock_shared({k})",
    "pg_advisory_lock(7263521, 1)", "pg_advisory_unlock_all()"])
def test_a_tenant_cannot_take_the_append_lock(
        stores: tuple[memory.Store, memory.Store, memory.Store], function: str) -> None:
    store, acme, globex = stores
    with raw(acme.engine) as conn:
        conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT " + function.format(k=APPEND_LOCK_KEY))
        conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        # the same lock through anything the role may call: none takes it for good
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (APPEND_LOCK_KEY,))
        conn.execute("ROLLBACK")
    still_works(store, globex)


def _append_request(store: memory.Store, tenant: str | None,
                    session: str = "s-attack") -> tuple[str, tuple[object, ...]]:
    """log_sql.APPEND and its parameters for one clear note naming ``tenant``."""
    events = log_sql.events_json(store.log.prepare("u1", [note(f"x {uuid.uuid4()}")]))
    return log_sql.APPEND, (tenant, "u1", session, None, events, None, None, None)


def test_the_write_functions_refuse_another_tenants_name(
        stores: tuple[memory.Store, memory.Store, memory.Store]) -> None:
    store, acme, globex = stores
    statement, params = _append_request(acme, "globex")
    group = log_sql.group_json([params[1:]])
    calls = [
        (statement, params),
        (log_sql.APPEND_SET, ("globex", group)),
        (log_sql.APPEND_GROUP, ("globex", group)),
        ("SELECT memory_check_epochs('globex', ARRAY['e:00'])", ()),
        ("SELECT memory_forget_secrets('globex', ARRAY[gen_random_uuid()])", ()),
        ("SELECT memory_create_key('globex', %s, 'u1', '\\x01', 'm')", (uuid.uuid4().hex,)),
        ("SELECT memory_create_epoch('globex', %s, %s, 'k')",
         ("e:" + uuid.uuid4().hex, bytes(32))),
        ("SELECT memory_lock_epochs('globex', ARRAY['k'])", ()),
        ("SELECT * FROM memory_lock_epoch('globex', 'e:00')", ()),
    ]
    before = owner_count(store, "memory_events", "globex")
    with raw(acme.engine) as conn:
        for sql, args in calls:
            with pytest.raises(psycopg.Error) as info:
                conn.execute(sql, args)
            assert info.value.sqlstate == log_sql.SQLSTATE_TENANT, sql
    assert owner_count(store, "memory_events", "globex") == before
    assert owner_count(store, "memory_keys", "globex") == 1
    # through the library: a typed error, nothing written
    with pytest.raises(memory.TenantAccessError):
        acme.log.append("globex", "u1", "s", note("x"))
    with pytest.raises(memory.TenantAccessError):
        memory.Store(acme.engine, tenant="globex", encrypt=False).append(
            "s", note("x"), actor="u1")
    assert owner_count(store, "memory_events", "globex") == before
    # its own tenant, named or not (NULL): appended
    with raw(acme.engine) as conn:
        for tenant in ("acme", None):
            statement, params = _append_request(acme, tenant, f"s-{tenant}")
            assert len(conn.execute(statement, params).fetchall()) == 1
    still_works(store, globex)


def test_malformed_input_to_the_functions_is_refused_typed(
        stores: tuple[memory.Store, memory.Store, memory.Store]) -> None:
    store, acme, _globex = stores
    with raw(acme.engine) as conn:
        for sql, args in [
            (log_sql.APPEND_SET, ("acme", "{}")),
            (log_sql.APPEND_SET, ("acme", "[]")),
            (log_sql.APPEND_GROUP, ("acme", '"x"')),
            ("SELECT memory_create_key('acme', 'not hex', 'u1', '\\x01', 'm')", ()),
            ("SELECT memory_create_epoch('acme', 'e:zz', '\\x01', 'k')", ()),
        ]:
            with pytest.raises(psycopg.Error) as info:
                conn.execute(sql, args)
            assert info.value.sqlstate == log_sql.SQLSTATE_MALFORMED, sql
    still_works(store, acme)


def test_a_grouped_call_takes_the_append_lock_itself(
        stores: tuple[memory.Store, memory.Store, memory.Store]) -> None:
    """``p_grouped`` (a group's requests run under the group's lock) cannot be used to
    append without the lock: the call takes it, so positions stay in commit order. The
    residue docs/threat-model.md states: a tenant holding a transaction open after an append holds
    the lock, and the other tenants' appends wait (up to their lock_timeout)."""
    _store, acme, globex = stores
    statement, params = _append_request(acme, "acme")
    grouped = statement.replace("%s::jsonb, %s, %s, %s)", "%s::jsonb, %s, %s, %s, true)")
    done: list[object] = []
    with raw(acme.engine) as conn:
        conn.execute("BEGIN")
        conn.execute(grouped, params)
        thread = threading.Thread(
            target=lambda: done.append(globex.append("s", note("waits"), actor="u1")))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and not done  # waiting for the append lock
        conn.execute("COMMIT")
    thread.join(10)
    assert done
    positions = [e.position for e in globex.read()]
    assert positions == sorted(positions)


def test_injected_writes_stay_in_the_attackers_tenant(
        stores: tuple[memory.Store, memory.Store, memory.Store], embedder) -> None:  # type: ignore[no-untyped-def]
    """What the role may still write directly (forgetting's deletions) reaches its own
    tenant's rows only."""
    store, acme, globex = stores
    store.project(embedder=embedder)
    before = {t: owner_count(store, t, "globex") for t in (
        "memory_keys", "memory_event_secrets", "memory_chunks", "memory_words",
        "memory_summaries", "memory_forget_requests")}
    with raw(acme.engine) as conn:
        for table in ("memory_chunks", "memory_words", "memory_summaries",
                      "memory_summary_state", "memory_event_keys", "memory_event_secrets",
                      "memory_keys"):
            conn.execute(f"DELETE FROM {table}")
        conn.execute("UPDATE memory_forget_requests SET completed_at = NULL")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # WITH CHECK
            conn.execute("INSERT INTO memory_forget_requests (tenant, request_id, actor_id) "
                         "VALUES ('globex', gen_random_uuid(), 'u1')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO memory_event_keys (tenant, event_id, key_id, secret) "
                         "VALUES ('globex', gen_random_uuid(), 'k', '\\x00')")
    assert {t: owner_count(store, t, "globex") for t in before} == before
    assert owner_count(store, "memory_keys", "acme") == 0
    assert [e.payload["content"] for e in globex.read()] == ["globex secret plans"]
    still_works(store, globex, embedder)


# -- the allow-list -------------------------------------------------------------------

SELECT = {"SELECT"}
TABLES = {
    "memory_events": SELECT,
    "memory_projections": SELECT,
    "memory_quarantine": SELECT | {"DELETE"},
    "memory_keys": SELECT | {"DELETE"},
    "memory_event_secrets": SELECT | {"DELETE"},
    "memory_event_keys": SELECT | {"INSERT", "DELETE"},
    "memory_forget_requests": SELECT | {"INSERT", "UPDATE"},
    "memory_chunks": SELECT | {"DELETE"},
    "memory_summaries": SELECT | {"DELETE"},
    "memory_summary_state": SELECT | {"DELETE"},
    "memory_words": SELECT | {"UPDATE", "DELETE"},
}
"""Every table privilege memory_app (and so each tenant role) holds: SELECT under the
policies, and the direct writes of forgetting (memory/forget.py), which the policies
confine to the caller's own tenant. Everything else is written by functions."""
FUNCTIONS = {
    "memory_tenant()",
    "memory_append_request(text,text,text,bigint,jsonb,text,text,bytea,boolean)",
    "memory_append_group(text,jsonb)",
    "memory_append_set(text,jsonb)",
    "memory_check_epochs(text,text[])",
    "memory_forget_secrets(text,uuid[])",
    "memory_create_key(text,text,text,bytea,text)",
    "memory_create_epoch(text,text,bytea,text)",
    "memory_lock_epochs(text,text[])",
    "memory_lock_epoch(text,text)",
}
DATABASE = {"CONNECT", "TEMPORARY"}
"""CONNECT (granted to memory_app) and TEMPORARY (PUBLIC's by default: a temporary table
cannot stand in for the library's, whose SECURITY DEFINER functions put pg_temp last)."""
TABLE_PRIVILEGES = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES",
                    "TRIGGER"]  # and MAINTAIN from PostgreSQL 17 on


def privileges(conn: psycopg.Connection, role: str) -> dict[str, set[str]]:
    """Every privilege ``role`` has (directly, through PUBLIC or memberships) in this
    database, by object."""
    out: dict[str, set[str]] = {}
    kinds = TABLE_PRIVILEGES + (["MAINTAIN"] if conn.execute(
        "SELECT current_setting('server_version_num')::int >= 170000").fetchone()[0] else [])
    for name, _kind, priv in conn.execute(
            "SELECT c.relname, c.relkind, p FROM pg_class c, unnest(%s::text[]) AS p "
            "WHERE c.relnamespace = current_schema()::regnamespace "
            "AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
            "AND has_table_privilege(%s, c.oid, p)", (kinds, role)):
        out.setdefault(f"table {name}", set()).add(priv)
    for name, priv in conn.execute(
            "SELECT c.relname, p FROM pg_class c, unnest(ARRAY['USAGE', 'SELECT', "
            "'UPDATE']) AS p WHERE c.relnamespace = current_schema()::regnamespace "
            "AND c.relkind = 'S' AND has_sequence_privilege(%s, c.oid, p)", (role,)):
        out.setdefault(f"sequence {name}", set()).add(priv)
    for table, column, priv in conn.execute(
            "SELECT c.relname, a.attname, p FROM pg_attribute a JOIN pg_class c "
            "ON c.oid = a.attrelid, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', "
            "'REFERENCES']) AS p WHERE c.relnamespace = current_schema()::regnamespace "
            "AND a.attnum > 0 AND NOT a.attisdropped "
            "AND has_column_privilege(%s, c.oid, a.attnum, p) "
            "AND NOT has_table_privilege(%s, c.oid, p)", (role, role)):
        out.setdefault(f"column {table}.{column}", set()).add(priv)
    # Functions of the schema that no extension installed, and every advisory-lock one.
    for (signature,) in conn.execute(
            "SELECT p.oid::regprocedure::text "
            "FROM pg_proc p WHERE ((p.pronamespace = current_schema()::regnamespace "
            "AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass "
            "AND d.objid = p.oid AND d.deptype = 'e')) OR p.proname LIKE 'pg\\_advisory%%' "
            "OR p.proname LIKE 'pg\\_try\\_advisory%%') "
            "AND has_function_privilege(%s, p.oid, 'EXECUTE')", (role,)):
        out.setdefault("functions", set()).add(signature)
    for schema, priv in conn.execute(
            "SELECT n.nspname, p FROM pg_namespace n, unnest(ARRAY['USAGE', 'CREATE']) AS p "
            "WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema' "
            "AND has_schema_privilege(%s, n.oid, p)", (role,)):
        out.setdefault(f"schema {schema}", set()).add(priv)
    for (priv,) in conn.execute(
            "SELECT p FROM unnest(ARRAY['CONNECT', 'CREATE', 'TEMPORARY']) AS p "
            "WHERE has_database_privilege(%s, current_database(), p)", (role,)):
        out.setdefault("database", set()).add(priv)
    attributes = conn.execute(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, "
        "rolbypassrls, rolinherit FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    out["attributes"] = {name for name, on in zip(
        ("SUPERUSER", "CREATEROLE", "CREATEDB", "LOGIN", "REPLICATION", "BYPASSRLS",
         "INHERIT"), attributes, strict=True) if on}
    out["member of"] = {f"{r[0]} inherit={r[1]} set={r[2]} admin={r[3]}" for r in conn.execute(
        "SELECT g.rolname, m.inherit_option, m.set_option, m.admin_option "
        "FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s", (role,))}
    out["settable parameters"] = {r[0] for r in conn.execute(
        "SELECT parname FROM pg_parameter_acl, aclexplode(paracl) AS a "
        "WHERE a.grantee IN (0, %s::regrole)", (role,))}
    out["default privileges"] = {str(r[0]) for r in conn.execute(
        "SELECT defaclacl FROM pg_default_acl, aclexplode(defaclacl) AS a "
        "WHERE a.grantee = %s::regrole", (role,))}
    return {k: v for k, v in out.items() if v}


def expected(schema: str, *, login: bool) -> dict[str, set[str]]:
    allowed: dict[str, set[str]] = {f"table {t}": set(p) for t, p in TABLES.items()}
    allowed["functions"] = set(FUNCTIONS)
    allowed[f"schema {schema}"] = {"USAGE"}
    allowed["database"] = set(DATABASE)
    allowed["attributes"] = {"INHERIT", "LOGIN"} if login else {"INHERIT"}
    if login:
        allowed["member of"] = {"memory_app inherit=True set=False admin=False"}
    return allowed


def test_every_privilege_of_the_app_and_tenant_roles_is_on_the_allow_list(
        stores: tuple[memory.Store, memory.Store, memory.Store]) -> None:
    store, acme, _ = stores
    with raw(store.maintenance_engine) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        tenant_role = security.role_name(conn.execute("SELECT current_database()"
                                                      ).fetchone()[0], "acme")
        assert privileges(conn, security.APP_ROLE) == expected(schema, login=False)
        assert privileges(conn, tenant_role) == expected(schema, login=True)
        # nobody but tenant roles is a member of memory_app, and memory_app of nothing
        members = {r[0] for r in conn.execute(
            "SELECT u.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = 'memory_app'")}
        assert members and all(m.startswith(security.ROLE_PREFIX) for m in members)
    with raw(acme.engine) as conn:  # the role's own view agrees
        assert privileges(conn, tenant_role) == expected(schema, login=True)


def test_a_role_of_another_database_sees_nothing_here(
        stores: tuple[memory.Store, memory.Store, memory.Store], server_url: str,
        template_url: str) -> None:
    """Roles are the cluster's; the mapping is the database's. A tenant role of one
    database that connects to another (PUBLIC may connect) maps to no tenant there."""
    from support import new_database

    _store, acme, _ = stores
    with new_database(server_url, "other") as other_url:
        url = sa.engine.make_url(other_url).set(
            drivername="postgresql", username=acme.engine.url.username,
            password=acme.engine.url.password)
        with memory.Store.open(other_url, migrate=False, tenant="acme") as other:
            other.append("s", note("the other database's acme"), actor="u1")
        with psycopg.connect(url.render_as_string(hide_password=False),
                             autocommit=True) as conn:
            assert conn.execute("SELECT memory_tenant()").fetchone() == (None,)
            assert conn.execute("SELECT count(*) FROM memory_events").fetchone() == (0,)
            statement, params = _append_request(acme, "acme")
            with pytest.raises(psycopg.Error) as info:
                conn.execute(statement, params)
            assert info.value.sqlstate == log_sql.SQLSTATE_TENANT


def test_what_a_role_may_change_of_itself_is_reset_when_the_library_ensures_it(
        stores: tuple[memory.Store, memory.Store, memory.Store], database_url: str) -> None:
    """PostgreSQL lets a role change its own password and session defaults; that reaches
    its own tenant only, and the next store that serves the tenant undoes it."""
    store, acme, globex = stores
    with raw(acme.engine) as conn:
        conn.execute("ALTER ROLE CURRENT_USER SET default_transaction_read_only = on")
        conn.execute("ALTER ROLE CURRENT_USER PASSWORD 'mine now'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER ROLE CURRENT_USER BYPASSRLS")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"ALTER ROLE {globex.engine.url.username} SET search_path = x")
    with memory.Store.open(database_url, migrate=False, tenant="acme") as again:
        again.append("s", note("written after the reset"), actor="u1")
        with raw(again.engine) as conn:
            assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("off",)
    still_works(store, globex)

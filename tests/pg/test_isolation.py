"""Tenant isolation enforced by the database (row-level security bound to each tenant's own
login role, memory/pg/tenancy.py), and hostile input that never reaches SQL as text (issue
6). The attacks of SQL run on a tenant's connection: tests/pg/test_least_privilege.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

import memory
from memory import message, note
from memory.pg import engine as db
from memory.pg import tenancy as security

HOSTILE = [
    "x'; DROP TABLE memory_events; --",
    'a" OR "1"="1',
    "/* comment */ ; SELECT 1;",
    "100% %s %(name)s %%",
    "back\\slash\\'; \\x00 \\\\",
    "robert'); DELETE FROM memory_keys WHERE ('1'='1",
    "-- ; ' \" ` $$ $tag$",
]


@pytest.fixture
def app_store(database_url: str) -> Iterator[memory.Store]:
    """A store that logs in as its tenant's role (Store.open's default for an owner's
    URL), with the superuser URL kept for maintenance (the projection runner)."""
    with memory.Store.open(database_url, migrate=False) as s:
        assert s.engine.url.username.startswith(security.ROLE_PREFIX)
        yield s


def raw(url: str | sa.URL) -> psycopg.Connection:
    return psycopg.connect(sa.engine.make_url(url).set(drivername="postgresql")
                           .render_as_string(hide_password=False), autocommit=True)


def tenant_tables(url: str) -> list[str]:
    with raw(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'tenant' "
            "AND table_schema = current_schema()").fetchall()]


def test_every_tenant_table_is_forced_under_rls_and_the_role_cannot_bypass(
        database_url: str) -> None:
    tables = tenant_tables(database_url)
    assert {"memory_events", "memory_chunks", "memory_summaries", "memory_keys",
            "memory_event_keys", "memory_forget_requests"} <= set(tables)
    with raw(database_url) as conn:
        for table in tables:
            enabled, forced = conn.execute(
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
                "WHERE oid = %s::regclass", (table,)).fetchone()
            assert enabled and forced, table
        for table in tables:  # bound to the login role's tenant, not to a setting
            [(qual, check)] = conn.execute(
                "SELECT qual, with_check FROM pg_policies WHERE tablename = %s",
                (table,)).fetchall()
            assert qual == check == "(tenant = ( SELECT memory_tenant() AS memory_tenant))"
        role = conn.execute("SELECT rolsuper, rolbypassrls, rolcreaterole, rolcanlogin "
                            "FROM pg_roles WHERE rolname = %s", (security.APP_ROLE,)).fetchone()
        assert role == (False, False, False, False)
        owned = conn.execute("SELECT count(*) FROM pg_tables WHERE tableowner = %s",
                             (security.APP_ROLE,)).fetchone()
        assert owned == (0,)


def test_raw_sql_as_a_tenant_role_cannot_cross_tenants(app_store: memory.Store,
                                                       database_url: str, embedder) -> None:  # type: ignore[no-untyped-def]
    a, b = app_store.for_tenant("acme"), app_store.for_tenant("globex")
    a.append("s", [message("user", "acme secret plans"), note("acme note")], actor="u1")
    b.append("s", [message("user", "globex secret plans")], actor="u1")
    app_store.project(embedder=embedder)  # the runner reads every tenant (maintenance)
    tables = tenant_tables(database_url)
    with raw(app_store.engine.url) as conn:  # the default tenant's role: nothing of theirs
        for table in tables:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    with raw(a.engine.url) as conn:
        conn.execute("SELECT set_config('memory.tenant', 'globex', false)")  # grants nothing
        tenants = {r[0] for r in conn.execute("SELECT tenant FROM memory_events")}
        assert tenants == {"acme"}
        assert conn.execute("SELECT count(*) FROM memory_events WHERE tenant = 'globex'"
                            ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM memory_chunks WHERE tenant <> 'acme'"
                            ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM memory_chunks").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM memory_keys WHERE tenant = 'globex'"
                            ).fetchone() == (0,)
        # Writing into another tenant, or around the policy, is refused.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO memory_keys (tenant, key_id, actor_id, wrapped, "
                         "master_id) VALUES ('globex', 'k', 'u1', '\\x00', 'm')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE memory_events DISABLE ROW LEVEL SECURITY")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET ROLE postgres")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM memory_events")
        assert conn.execute("SELECT count(*) FROM memory_chunks WHERE tenant = 'globex'"
                            ).fetchone() == (0,)
    # The library's own paths through the same role.
    assert [e.payload["content"] for e in b.read()] == ["globex secret plans"]
    assert all(e.tenant == "acme" for e in a.read())
    assert list(app_store.log.read(0)) == []  # a cross-tenant read: the default's only
    ctx = b.context("secret plans", actor="u1", session="s", budget=300, embedder=embedder)
    assert "acme" not in ctx.text() and "globex secret plans" in ctx.text()


def test_hostile_ids_queries_and_metadata_are_data(app_store: memory.Store,
                                                   database_url: str, embedder) -> None:  # type: ignore[no-untyped-def]
    other = app_store.for_tenant("bystander")
    other.append("s", note("bystander data"), actor="b")
    written = []
    for i, text in enumerate(HOSTILE):
        s = app_store.for_tenant(text)
        out = s.append(text, message("user", f"payload {text}",
                                     metadata={text: text, "n": i}), actor=text)
        written.append((s, text, out[0].event_id))
    app_store.project(embedder=embedder)
    for s, text, _ in written:
        [event] = s.read_session(text)
        assert (event.tenant, event.actor_id, event.session_id) == (text, text, text)
        assert event.payload["content"] == f"payload {text}"
        assert event.metadata[text] == text
        ctx = s.context(text, actor=text, session=text, budget=200, embedder=embedder)
        assert "bystander" not in ctx.text()
    # Forget through hostile ids too; the others are untouched.
    s, text, event_id = written[0]
    assert not s.forget(event_ids=[event_id]).already_forgotten
    assert s.forget(actor=text).actor_events >= 1
    assert [e.payload for e in other.read()] == [{"text": "bystander data"}]
    for s2, text2, _ in written[1:]:
        assert not s2.read_session(text2)[0].forgotten
    with raw(database_url) as conn:  # the tables are all still there
        assert conn.execute("SELECT count(*) FROM memory_events").fetchone()[0] >= 8
        assert conn.execute("SELECT count(*) FROM memory_keys").fetchone()[0] >= 7


@pytest.mark.parametrize("where", ["tenant", "actor", "session", "payload", "metadata",
                                   "metadata_key", "forget_actor"])
def test_nul_bytes_are_refused_with_a_clear_error(app_store: memory.Store,
                                                  where: str) -> None:
    nul = "a\x00b"
    with pytest.raises(memory.ValidationError, match="NUL"):
        if where == "tenant":
            app_store.for_tenant(nul)
        elif where == "actor":
            app_store.append("s", note("x"), actor=nul)
        elif where == "session":
            app_store.append(nul, note("x"), actor="a")
        elif where == "payload":
            app_store.append("s", note(nul), actor="a")
        elif where == "metadata":
            app_store.append("s", note("x", metadata={"k": nul}), actor="a")
        elif where == "metadata_key":
            app_store.append("s", note("x", metadata={nul: 1}), actor="a")
        else:
            app_store.forget(actor=nul)
    assert list(app_store.read()) == []


def test_the_embedded_default_connects_as_the_tenants_role(
        server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMORY_DATABASE_URL", raising=False)
    with memory.Store.open(tenant=f"t{uuid.uuid4().hex[:8]}") as store:
        assert store.engine.url.username.startswith(security.ROLE_PREFIX)
        assert store.maintenance_engine.url.username == sa.engine.make_url(
            server_url).username
        store.append("s", note("hello"), actor="a")
        assert [e.payload for e in store.read()] == [{"text": "hello"}]
        with store.engine.connect() as conn:  # raw SQL outside the library: its tenant's
            conn.exec_driver_sql("SET memory.tenant = 'another'")
            assert conn.exec_driver_sql("SELECT count(*), count(*) FILTER (WHERE tenant = "
                                        "%s) FROM memory_events", (store.tenant,)
                                        ).fetchone() == (1, 1)
    assert db.resolve_url(None) == server_url

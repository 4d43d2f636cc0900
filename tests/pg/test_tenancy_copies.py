"""A memory database copied as a whole (``CREATE DATABASE b TEMPLATE a``) carries the
tenant-role mapping of ``a``, whose roles are ``a``'s (a role is per database and tenant,
memory/pg/tenancy.py). The copy opens with roles of its own, and the copied rows grant
``a``'s roles nothing in it: ``memory_tenant()`` maps a login only to a tenant whose role
in *this* database it is (alembic/sql/0003_tenant_roles.sql)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from support import new_database

import memory
from memory import message
from memory.log import sql as log_sql
from memory.pg import constants, tenancy
from memory.pg import engine as db

MAPPING = "SELECT tenant_name, role_name FROM memory_tenant_roles ORDER BY tenant_name"


def database(url: str) -> str:
    return str(sa.engine.make_url(url).database)


def as_role(url: str, role: str) -> psycopg.Connection:
    """A connection to ``url``'s database logged in as ``role`` (the embedded server
    admits any role over its Unix socket without a password)."""
    return psycopg.connect(sa.engine.make_url(url).set(drivername="postgresql",
                                                       username=role, password=None)
                           .render_as_string(hide_password=False), autocommit=True)


def owner_rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(sa.engine.make_url(url).set(drivername="postgresql")
                         .render_as_string(hide_password=False)) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def clear_append(url: str, tenant: str) -> tuple[object, ...]:
    """The parameters of the library's append statement for one clear event of
    ``tenant`` (prepared by a store on ``url`` that writes nothing)."""
    with memory.Store.open(url, migrate=False, tenant_roles=False, encrypt=False) as store:
        prepared = store.log.prepare("intruder", [message("user", "written by another")])
    return log_sql.append_params(tenant, "intruder", "s", None, prepared)


@pytest.fixture
def source(database_url: str) -> str:
    """A memory database with two tenants served through their roles, each with an
    event, every connection closed (a template must have none)."""
    with memory.Store.open(database_url, migrate=False) as store:
        assert store.engine.url.username == tenancy.role_name(database(database_url),
                                                              "default")
        store.append("s", message("user", "default's note"), actor="alice")
        store.for_tenant("acme").append("s", message("user", "acme's note"), actor="bob")
    return database_url


@pytest.fixture
def copy_url(server_url: str, source: str) -> Iterator[str]:
    with new_database(server_url, "test_copy", template=database(source)) as url:
        yield url


def test_a_copy_opens_with_its_own_tenant_roles(source: str, copy_url: str) -> None:
    a, b = database(source), database(copy_url)
    with memory.Store.open(copy_url) as store:
        assert store.engine.url.username == tenancy.role_name(b, "default")
        assert [e.payload["content"] for e in store.read()] == ["default's note"]
        store.append("s", message("user", "written in the copy"), actor="alice")
        assert len(list(store.read())) == 2
    # the copy maps its own role for the tenant it served; the source is untouched
    assert ("default", tenancy.role_name(b, "default")) in owner_rows(copy_url, MAPPING)
    assert owner_rows(source, MAPPING) == [("acme", tenancy.role_name(a, "acme")),
                                           ("default", tenancy.role_name(a, "default"))]
    with memory.Store.open(source) as store:
        assert [e.payload["content"] for e in store.read()] == ["default's note"]
        assert store.engine.url.username == tenancy.role_name(a, "default")


@pytest.mark.parametrize("opened", [False, True])
def test_the_source_roles_get_nothing_in_the_copy(source: str, copy_url: str,
                                                  opened: bool) -> None:
    a = database(source)
    if opened:  # the copy served "default" (its own role now), "acme" not yet
        with memory.Store.open(copy_url):
            pass
    for tenant in ("default", "acme"):
        role = tenancy.role_name(a, tenant)
        with as_role(copy_url, role) as conn:
            assert conn.execute("SELECT memory_tenant()").fetchone() == (None,)
            assert conn.execute("SELECT count(*) FROM memory_events").fetchone() == (0,)
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(log_sql.APPEND, clear_append(source, tenant))
            assert refused.value.sqlstate == constants.SQLSTATE_TENANT
        # in its own database the role still reads its tenant
        with as_role(source, role) as conn:
            assert conn.execute("SELECT memory_tenant()").fetchone() == (tenant,)
            assert conn.execute("SELECT count(*) FROM memory_events").fetchone() == (1,)
    assert len(owner_rows(copy_url, "SELECT 1 FROM memory_events")) == 2  # nothing written


def test_each_tenant_of_the_copy_gets_its_role_on_first_use(source: str,
                                                            copy_url: str) -> None:
    b = database(copy_url)
    with memory.Store.open(copy_url) as store:
        acme = store.for_tenant("acme")
        assert acme.engine.url.username == tenancy.role_name(b, "acme")
        assert [e.payload["content"] for e in acme.read()] == ["acme's note"]
        assert [e.payload["content"] for e in store.read()] == ["default's note"]
    assert owner_rows(copy_url, MAPPING) == [("acme", tenancy.role_name(b, "acme")),
                                             ("default", tenancy.role_name(b, "default"))]


def test_downgrading_the_copy_leaves_the_source_roles(source: str, copy_url: str) -> None:
    """The baseline's downgrade drops the roles its mapping names: the copied rows name
    the source's roles, which must survive the copy's downgrade."""
    a = database(source)
    roles = [tenancy.role_name(a, t) for t in ("acme", "default")]
    engine = db.make_engine(copy_url)
    try:
        db.downgrade(engine)
    finally:
        engine.dispose()
    assert owner_rows(source, f"SELECT rolname FROM pg_roles WHERE rolname = ANY(ARRAY"
                      f"{roles!r}) ORDER BY 1") == [(r,) for r in sorted(roles)]
    with memory.Store.open(source, migrate=False) as store:
        assert [e.payload["content"] for e in store.read()] == ["default's note"]


def test_a_copy_made_before_the_fix_is_repaired_by_its_upgrade(server_url: str,
                                                               source: str) -> None:
    """A copy of a database still at revision 0002 (the mapping honoured as copied):
    upgrading it deletes the source's rows, and it opens with its own roles."""
    a = database(source)
    engine = db.make_engine(source)
    try:
        db.downgrade(engine, "0002")
    finally:
        engine.dispose()
    with new_database(server_url, "test_copy", template=a) as copy_url:
        b = database(copy_url)
        with as_role(copy_url, tenancy.role_name(a, "acme")) as conn:  # the old leak
            assert conn.execute("SELECT memory_tenant()").fetchone() == ("acme",)
        with memory.Store.open(copy_url) as store:  # migrates to head, then serves
            assert store.engine.url.username == tenancy.role_name(b, "default")
            assert [e.payload["content"] for e in store.read()] == ["default's note"]
        assert owner_rows(copy_url, MAPPING) == [("default",
                                                  tenancy.role_name(b, "default"))]
        with as_role(copy_url, tenancy.role_name(a, "acme")) as conn:
            assert conn.execute("SELECT memory_tenant()").fetchone() == (None,)


def test_a_renamed_database_makes_new_roles_and_the_old_ones_lose_their_tenant(
        server_url: str, source: str) -> None:
    a = database(source)
    renamed = f"{a}_renamed"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE {a} RENAME TO {renamed}")
        url = sa.engine.make_url(source).set(database=renamed).render_as_string(
            hide_password=False)
        with as_role(url, tenancy.role_name(a, "default")) as conn:
            assert conn.execute("SELECT memory_tenant()").fetchone() == (None,)
        with memory.Store.open(url, migrate=False) as store:
            assert store.engine.url.username == tenancy.role_name(renamed, "default")
            assert [e.payload["content"] for e in store.read()] == ["default's note"]
    finally:
        with admin.connect() as conn:  # the fixture drops the database by its first name
            conn.exec_driver_sql(f"ALTER DATABASE {renamed} RENAME TO {a}")
        admin.dispose()

"""Tenant isolation in the database: which tenant a connection acts for, and which role
the library connects as (the policies themselves are in alembic/versions/0004).

Row-level security on every tenant table admits a row only when
``tenant = current_setting('memory.tenant')``. The library sets that setting from
:func:`tenant_scope`: every connection checked out of a store's pool while a scope is
active carries the scope's tenant (session-level ``set_config``, sent only when it differs
from what the pooled connection already has, so a store that serves one tenant pays no
extra round trip); a checkout outside any scope carries no tenant and, as ``memory_app``,
sees nothing. The log (``memory.log``) opens a scope around every statement it runs, with
the tenant of the call.

Roles: ``memory_app`` (NOBYPASSRLS, owns nothing) is the library's connection
(``Store.engine``). Cross-tenant work, the projection runner following the whole log and
master-key rotation, runs on ``Store.maintenance_engine``: the URL's own role, the tables'
owner, which must be a superuser (the embedded server's ``postgres``) or have BYPASSRLS
since FORCE applies the policies to the owner too. On the embedded server (trust
authentication over its Unix socket) ``Store.open()`` logs in as ``memory_app`` by itself
(:func:`role_url`). Against another server, either give ``Store.open(url, role=...)`` an
owner URL whose authentication also admits ``memory_app`` (e.g. a .pgpass entry), or give
the library a ``memory_app`` URL and run migrations and projections with the owner's.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

APP_ROLE = "memory_app"
SETTING = "memory.tenant"

_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("memory_tenant",
                                                                      default=None)
_INFO_KEY = "memory.tenant"


@contextlib.contextmanager
def tenant_scope(tenant: str | None) -> Iterator[None]:
    """Connections checked out inside the block act for ``tenant``."""
    token = _tenant.set(tenant)
    try:
        yield
    finally:
        _tenant.reset(token)


def current_tenant() -> str | None:
    return _tenant.get()


def _on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
    want = _tenant.get() or ""
    if record.info.get(_INFO_KEY) == want:
        return
    autocommit = dbapi_conn.autocommit
    dbapi_conn.autocommit = True  # a session setting, outside any transaction
    try:
        dbapi_conn.execute("SELECT set_config(%s, %s, false)", (SETTING, want))
    finally:
        dbapi_conn.autocommit = autocommit
    record.info[_INFO_KEY] = want


def install(engine: sa.Engine) -> sa.Engine:
    """Make ``engine``'s connections follow :func:`tenant_scope`. Idempotent."""
    if not event.contains(engine, "checkout", _on_checkout):
        event.listen(engine, "checkout", _on_checkout)
    return engine


def role_exists(engine: sa.Engine, role: str) -> bool:
    """Whether ``role`` exists on the server (the migration creates ``memory_app``)."""
    with engine.connect() as conn:
        return bool(conn.exec_driver_sql("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                         (role,)).first())


def role_url(url: str, role: str) -> str:
    """The same server and database, logged in as ``role`` (no password: for the
    embedded server's trust authentication, or a URL whose password you add)."""
    return sa.engine.make_url(url).set(username=role, password=None).render_as_string(
        hide_password=False)

"""Tenant isolation in the database: one login role per tenant, made and used by the library
(the SQL side is alembic/sql/04_tenancy.sql and 07_privileges.sql).

The binding
-----------
Row-level security on every tenant table admits a row only when
``tenant = memory_tenant()``, and ``memory_tenant()`` is the tenant of the role the
connection *logged in as* (``session_user``, mapped in the owner-only table
``memory_tenant_roles``). No statement of a session changes its login role: SET ROLE
changes ``current_user`` only, a tenant role may SET ROLE to nothing, and SET SESSION
AUTHORIZATION needs a superuser. So SQL injected into a tenant's connection reads and
changes that tenant's rows at most; the old session setting ``memory.tenant`` grants
nothing any more.

Each tenant of a database has its role, ``memory_t_`` + 24 hex digits of
``sha256(database || 0x1f || tenant)``, created on first use by the owner-only function
``memory_ensure_tenant_role`` on the store's maintenance connection (:class:`TenantEngines`).
It is a LOGIN member of the NOLOGIN group ``memory_app``, which holds the privileges:
SELECT on the tenant tables and the projections' state, EXECUTE on the library's
SECURITY DEFINER functions (every append, key and epoch creation, epoch locks), and the
direct deletions of forgetting, confined to the caller's tenant by the policies. Nothing
on the position sequence, no write to the log or to ``memory_projections``, and no
advisory-lock function (revoked from PUBLIC).

Copies of a database
--------------------
``CREATE DATABASE b TEMPLATE a`` copies ``memory_tenant_roles`` with ``a``'s role names.
``memory_tenant()`` (and the writing functions' ``memory_caller_tenant``) map a login to a
tenant only when it is the role this database derives for that tenant, so in ``b`` the
roles of ``a`` act for no tenant: row-level security shows them no row and every writing
function refuses them (MM030), whatever the copied rows say. The first time ``b`` serves a
tenant, ``memory_ensure_tenant_role`` replaces the copied row with ``b``'s own role; rows
of tenants ``b`` never serves stay inert, and are deleted before the schema is downgraded
(the baseline's downgrade drops the roles its mapping names). The same holds for a
database renamed after its roles were made: its old roles lose their tenants, new ones are
made on next use (alembic/versions/0003_tenant_roles.py).

How the library logs in as a tenant role: with a password derived from the master key
(:func:`tenant_password`, an HMAC) that it sets, as a SCRAM verifier, each time it
ensures the role; on the embedded server, trust authentication over its Unix socket
admits the role without it. So nothing new is configured. Each tenant gets an engine of
its own (a small pool), made when :class:`memory.Store` first serves the tenant and
disposed with the store.

Cross-tenant work, the projection runner following the whole log, master-key rotation,
forget's physical erasure, runs on ``Store.maintenance_engine``: the URL's own role, the
tables' owner, a superuser (the embedded server's ``postgres``) or a role with BYPASSRLS.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Iterator

import sqlalchemy as sa

from ..config import Limits
from .constants import APP_ROLE as APP_ROLE
from .constants import ROLE_PREFIX as ROLE_PREFIX

_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("memory_tenant",
                                                                      default=None)


@contextlib.contextmanager
def tenant_scope(tenant: str | None) -> Iterator[None]:
    """Mark the block as acting for ``tenant`` (:func:`current_tenant`). It grants
    nothing in the database: a connection's tenant is the role it logged in as."""
    token = _tenant.set(tenant)
    try:
        yield
    finally:
        _tenant.reset(token)


def current_tenant() -> str | None:
    return _tenant.get()


def role_name(database: str, tenant: str) -> str:
    """The role of ``tenant`` in ``database`` (as memory_ensure_tenant_role names it)."""
    digest = hashlib.sha256(database.encode() + b"\x1f" + tenant.encode()).hexdigest()
    return ROLE_PREFIX + digest[:24]


def tenant_password(secret: bytes, role: str) -> str:
    """The password of a tenant role: HMAC-SHA256 of its name under ``secret`` (a key
    derived from the master key), url-safe base64."""
    mac = hmac.digest(secret, b"memory tenant role password\x1f" + role.encode(), "sha256")
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802/7677): the password
    itself never travels in a statement or lands in the server's log."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client = hmac.digest(salted, b"Client Key", "sha256")
    stored = hashlib.sha256(client).digest()
    server = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
            f"{b64(stored).decode()}:{b64(server).decode()}")


def can_manage_roles(owner: sa.Engine) -> bool:
    """Whether ``owner``'s role may make tenant roles (it runs the migrations)."""
    with owner.connect() as conn:
        return bool(conn.exec_driver_sql(
            "SELECT p IS NOT NULL AND has_function_privilege(p, 'EXECUTE') FROM "
            "to_regprocedure('memory_ensure_tenant_role(text, text)') AS p").scalar())


def ensure_role(owner: sa.Engine, tenant: str, secret: bytes | None) -> tuple[str, str | None]:
    """Create (or adopt) ``tenant``'s role and, given ``secret``, set its password
    (:func:`tenant_password`); returns the role and the password."""
    with owner.begin() as conn:
        role = role_name(str(conn.exec_driver_sql("SELECT current_database()").scalar_one()),
                         tenant)
        password = tenant_password(secret, role) if secret is not None else None
        made = conn.exec_driver_sql(
            "SELECT memory_ensure_tenant_role(%s, %s)",
            (tenant, scram_verifier(password) if password is not None else None)).scalar_one()
    assert made == role, (made, role)
    return role, password


class TenantEngines:
    """The engines of a store's tenants, one per tenant, each logged in as the tenant's
    role; made on first use (the role ensured on ``owner``), disposed by :meth:`close`."""

    def __init__(self, owner: sa.Engine, url: str, limits: Limits,
                 secret: Callable[[], bytes], *, pool_size: int = 2) -> None:
        self.owner = owner
        self.url = url
        self.limits = limits
        self._secret = secret
        self.pool_size = pool_size
        self._engines: dict[str, sa.Engine] = {}
        self._lock = threading.Lock()

    def engine(self, tenant: str) -> sa.Engine:
        found = self._engines.get(tenant)
        if found is not None:
            return found
        with self._lock:
            found = self._engines.get(tenant)
            if found is None:
                from . import engine as db

                role, password = ensure_role(self.owner, tenant, self._secret())
                url = sa.engine.make_url(self.url).set(username=role, password=password)
                found = self._engines[tenant] = db.make_engine(
                    url.render_as_string(hide_password=False), self.limits,
                    pool_size=self.pool_size)
        return found

    def close(self, before_dispose: Callable[[sa.Engine], object] | None = None) -> None:
        """Dispose of every tenant's engine; ``before_dispose`` runs for each first (the
        store closes the append connections the log keeps per engine)."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            if before_dispose is not None:
                before_dispose(engine)
            engine.dispose()

"""PostgreSQL, the layer every other one stands on: where the database is, how the library
connects to it, and which tenant a connection acts for.

Open ``engine`` for database URLs, engines (pool, jsonb codec) and running the migrations;
``tenancy`` for the tenant scope that row-level security reads and the role the library
connects as; ``codec`` for how JSON values are read back; ``embedded`` for the embedded
server started when no URL is given. Nothing in this layer knows about events.
"""

from . import embedded
from .codec import parse_json
from .engine import make_engine, migrate, resolve_url
from .tenancy import TenantEngines, can_manage_roles, tenant_scope

__all__ = [
    "TenantEngines",
    "can_manage_roles",
    "embedded",
    "make_engine",
    "migrate",
    "parse_json",
    "resolve_url",
    "tenant_scope",
]

"""PostgreSQL, the layer every other one stands on: where the database is, how the library
connects to it, and which tenant a connection acts for.

Open ``engine`` for database URLs, engines (pool, jsonb codec) and running the migrations;
``tenancy`` for the tenant scope that row-level security reads and the role the library
connects as; ``codec`` for how JSON values are read back; ``embedded`` for the embedded
server started when no URL is given; ``vectors`` for pgvector values (the query's literal, rows of
vectors read in binary). Nothing in this layer knows about events.
"""

from . import embedded
from .codec import parse_json
from .engine import make_engine, migrate, resolve_url
from .tenancy import TenantEngines, can_manage_roles, tenant_scope
from .vectors import binary_rows, decode_vectors, to_array, vector_literal

__all__ = [
    "TenantEngines",
    "binary_rows",
    "can_manage_roles",
    "decode_vectors",
    "embedded",
    "make_engine",
    "migrate",
    "parse_json",
    "resolve_url",
    "tenant_scope",
    "to_array",
    "vector_literal",
]

"""Tenant roles belong to one database, also in a copy of it.

Revision ID: 0003
Revises: 0002

A tenant's login role is named after the database and the tenant (``ROLE_PREFIX`` + 24
hex digits of ``sha256(database || 0x1f || tenant)``), but ``memory_tenant_roles`` is a
table: ``CREATE DATABASE b TEMPLATE a`` copies it, so ``b`` starts with ``a``'s roles
mapped to their tenants. Before this revision ``memory_tenant()`` honoured those rows (a
role of ``a`` read and wrote its tenant's rows in ``b``), and ``memory_ensure_tenant_role``
failed on them (the tenant already mapped: a unique violation), so a copy could not be
opened with tenant roles. Now:

* ``memory_tenant()`` and ``memory_caller_tenant()`` map a login to a tenant only when the
  login is the role *this* database derives for that tenant: a copied row grants its
  role nothing (no rows under row-level security, MM030 from every function that writes);
* ``memory_ensure_tenant_role`` replaces a row that maps the tenant to another role with
  this database's role, so the copy opens and each tenant gets its own role on first use;
* the rows of other databases' roles are deleted when this revision is applied (a copy
  made earlier) and before it is undone (the baseline's downgrade drops every role the
  mapping names; those roles are another database's, still in use there).

The functions' whole new text is in alembic/sql/0003_tenant_roles.sql, the baseline's in
alembic/sql/0003_tenant_roles_downgrade.sql. No table changes, so no privilege changes.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from memory.pg.constants import render_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parent.parent / "sql"


def render(name: str) -> str:
    """The SQL of alembic/sql/``name``, its ``{{NAME}}`` placeholders filled in."""
    return render_sql((SQL / name).read_text(encoding="utf-8"), f"alembic/sql/{name}")


def upgrade() -> None:
    op.execute(render("0003_tenant_roles.sql"))


def downgrade() -> None:
    op.execute(render("0003_tenant_roles_downgrade.sql"))

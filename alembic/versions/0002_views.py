"""Session views: indexes for the control events that forks and retractions append.

Revision ID: 0002
Revises: 0001

A session's view (memory/log/views.py) is computed from two event types written in clear:
``session_forked`` (version 1 of a branch, found through the unique index on
``(tenant, session_id, version)``) and ``events_retracted``. The retractions of a view's
segments, and of an actor's sessions for the memories a context may show, are looked up
on every read of a view and every context call: two small partial indexes keep that a
probe instead of a scan of the session's or the actor's events. No table is added, so
no privilege changes.

The SQL is in alembic/sql/0002_views.sql (and 0002_views_downgrade.sql).
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SQL = Path(__file__).resolve().parent.parent / "sql"


def upgrade() -> None:
    op.execute((SQL / "0002_views.sql").read_text(encoding="utf-8"))


def downgrade() -> None:
    op.execute((SQL / "0002_views_downgrade.sql").read_text(encoding="utf-8"))

"""Session views: indexes for the control events that forks and retractions append.

Revision ID: 0013
Revises: 0012

A session's view (memory/log/views.py) is computed from two event types written in clear:
``session_forked`` (version 1 of a branch, found through the unique index on
``(tenant, session_id, version)``) and ``events_retracted``. The retractions of a view's
segments, and of an actor's sessions for the memories a context may show, are looked up
on every read of a view and every context call: two small partial indexes keep that a
probe instead of a scan of the session's or the actor's events. No table is added, so
no privilege changes.
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE INDEX memory_events_retracted_session_idx ON memory_events (tenant, session_id, version)
 WHERE type = 'events_retracted';
CREATE INDEX memory_events_retracted_actor_idx ON memory_events (tenant, actor_id, position)
 WHERE type = 'events_retracted';
"""

DOWNGRADE = """
DROP INDEX IF EXISTS memory_events_retracted_actor_idx;
DROP INDEX IF EXISTS memory_events_retracted_session_idx;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)

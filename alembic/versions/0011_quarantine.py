"""Poison events: a dead-letter table for events a projection cannot process.

Revision ID: 0011
Revises: 0010

An event that a projection cannot decode (a ciphertext that fails authentication, a
payload its schema or upcaster refuses) or whose ``apply`` raises is recorded here, in
the transaction that moves the projection's checkpoint past it, and the projection goes
on with every other event and tenant (memory/projections/runner.py). One row per
(projection, generation, position): ``attempts`` counts the runs and retries that met
it, ``resolved_at`` is set when a retry applied it. The rows of a generation go with the
generation when it is dropped.

The table has a tenant column, so it gets the same forced row-level security as every
tenant table. The library's tenant roles read their own tenant's rows and may delete them,
which is what forgetting does (an error message may quote the event); only the projection
runner, on the owner's maintenance connection, inserts and updates them.
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE memory_quarantine (
    id            bigint      GENERATED ALWAYS AS IDENTITY,
    projection    text        NOT NULL,
    generation    integer     NOT NULL,
    position      bigint      NOT NULL,
    tenant        text        NOT NULL,
    actor_id      text        NOT NULL,
    event_id      uuid        NOT NULL,
    error_class   text        NOT NULL,
    error_message text        NOT NULL,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    attempts      integer     NOT NULL DEFAULT 1,
    resolved_at   timestamptz,
    CONSTRAINT memory_quarantine_pk PRIMARY KEY (id),
    CONSTRAINT memory_quarantine_event UNIQUE (projection, generation, position)
);
CREATE INDEX memory_quarantine_unresolved_idx
    ON memory_quarantine (projection, generation) WHERE resolved_at IS NULL;
CREATE INDEX memory_quarantine_tenant_idx ON memory_quarantine (tenant, actor_id);
SELECT memory_secure_table('memory_quarantine', false);
DO $$
BEGIN
    -- forget deletes a forgotten actor's entries (their error may quote the event) on the
    -- tenant's own connection, as it deletes chunks; the policy confines it to the tenant
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'memory_app') THEN
        GRANT DELETE ON memory_quarantine TO memory_app;
    END IF;
END $$;
"""

DOWNGRADE = """
DROP TABLE memory_quarantine;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)

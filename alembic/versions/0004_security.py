"""Security: encryption keys, forgetting, row-level security by tenant.

Revision ID: 0004
Revises: 0003

Keys (crypto-shredding, see memory/log/sealing.py)
---------------------------------------------
``memory_keys`` holds one data key per (tenant, actor), wrapped (AES-GCM) by the master
key, which never reaches the database. ``memory_event_keys`` holds one random secret per
sealed event; an event's key is derived from its actor's key *and* its secret, so either
row's destruction makes the payload unrecoverable without touching ``memory_events``:
forgetting an actor deletes its key and its event secrets;
forgetting one event nulls its secret (the row stays, so a retried append of the same
event id cannot plant a new secret). ``memory_forget_requests`` records a forget before
its work starts, so a crash half-way is completed by the next call.

Row-level security
------------------
Every table with a ``tenant`` column gets ENABLE + FORCE ROW LEVEL SECURITY and one policy:
a row is visible and writable only when ``tenant = current_setting('memory.tenant')``. The
library sets that (session-level, on every connection checkout, see memory/pg/tenancy.py)
for the tenant of the call; with no tenant set, nothing is visible.

The role ``memory_app`` (LOGIN, NOSUPERUSER, NOBYPASSRLS, owns nothing, may not UPDATE,
DELETE or TRUNCATE ``memory_events``) is created once per cluster when the migrating role
may create roles; ``Store.open()`` on the embedded server connects as it. Cross-tenant
maintenance (the projection runner follows the whole log and creates per-generation
indexes, master-key rotation) runs as the tables' owner, the role that ran this migration:
FORCE applies row-level security to the owner too, so that role must be a superuser (the
embedded server's ``postgres``) or have BYPASSRLS. Superusers bypass row-level security
whatever the table says (PostgreSQL's rule), so a superuser URL is an administrator's
tool, not the library's connection. Later migrations that add a table with a ``tenant``
column call ``SELECT memory_secure_table('name')``.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE memory_keys (
    tenant      text        NOT NULL,
    key_id      text        NOT NULL,
    actor_id    text        NOT NULL,
    wrapped     bytea       NOT NULL,
    master_id   text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz,
    CONSTRAINT memory_keys_pk PRIMARY KEY (tenant, key_id),
    -- One live key per actor; a forgotten actor's key is deleted, a new one may follow.
    CONSTRAINT memory_keys_actor_key UNIQUE (tenant, actor_id)
);

CREATE TABLE memory_event_keys (
    tenant       text        NOT NULL,
    event_id     uuid        NOT NULL,
    key_id       text        NOT NULL,
    secret       bytea,
    forgotten_at timestamptz,
    -- key_id names a memory_keys row; no foreign key (a per-row check cost more than the
    -- insert): the append checks the key once per statement and a forget deletes the
    -- secrets of the keys it deletes (memory/log/sealing.py, memory/forget.py).
    CONSTRAINT memory_event_keys_pk PRIMARY KEY (tenant, event_id),
    CONSTRAINT memory_event_keys_forgotten CHECK ((secret IS NULL) = (forgotten_at IS NOT NULL))
);
CREATE INDEX memory_event_keys_key_idx ON memory_event_keys (tenant, key_id);

CREATE TABLE memory_forget_requests (
    tenant       text        NOT NULL,
    request_id   uuid        NOT NULL,
    actor_id     text,
    event_ids    uuid[]      NOT NULL DEFAULT '{}',
    requested_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    CONSTRAINT memory_forget_requests_pk PRIMARY KEY (tenant, request_id),
    -- An actor, events, or an actor plus the contexts of others that cited its events.
    CONSTRAINT memory_forget_requests_what CHECK (
        actor_id IS NOT NULL OR cardinality(event_ids) > 0)
);
CREATE INDEX memory_forget_requests_pending_idx
    ON memory_forget_requests (tenant) WHERE completed_at IS NULL;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'memory_app') THEN
        CREATE ROLE memory_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'memory: cannot create the memory_app role here; create it (see '
                 'alembic/versions/0004_security.py) and run memory_secure_table again';
END $$;

-- Tenant isolation for one table: FORCEd row-level security keyed on memory.tenant, and
-- the privileges of the library's roles. Idempotent; later migrations call it too.
CREATE FUNCTION memory_secure_table(p_table regclass, p_writable boolean DEFAULT true)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_role text;
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
    EXECUTE format('DROP POLICY IF EXISTS memory_tenant ON %s', p_table);
    EXECUTE format('CREATE POLICY memory_tenant ON %s '
                   'USING (tenant = current_setting(''memory.tenant'', true)) '
                   'WITH CHECK (tenant = current_setting(''memory.tenant'', true))', p_table);
    FOREACH v_role IN ARRAY ARRAY['memory_app'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_roles WHERE rolname = v_role);
        IF p_writable THEN
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I', p_table, v_role);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT ON %s TO %I', p_table, v_role);
        END IF;
    END LOOP;
END $$;

DO $$
DECLARE
    v_table text;
    v_role  text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['memory_app'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_roles WHERE rolname = v_role);
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), v_role);
        EXECUTE format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE memory_events_position_seq '
                       'TO %I', v_role);
        -- Tables without a tenant (projection state) are shared bookkeeping.
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON memory_projections TO %I',
                       v_role);
    END LOOP;
    PERFORM memory_secure_table('memory_events', false);
    FOR v_table IN
        SELECT c.table_name FROM information_schema.columns c
          JOIN information_schema.tables t
            ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = current_schema() AND c.column_name = 'tenant'
           AND t.table_type = 'BASE TABLE' AND c.table_name <> 'memory_events'
    LOOP
        PERFORM memory_secure_table(v_table::regclass);
    END LOOP;
END $$;
"""

DOWNGRADE = """
DO $$
DECLARE
    v_table text;
BEGIN
    FOR v_table IN
        SELECT tablename FROM pg_policies
         WHERE schemaname = current_schema() AND policyname = 'memory_tenant'
    LOOP
        EXECUTE format('DROP POLICY memory_tenant ON %I', v_table);
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', v_table);
        EXECUTE format('ALTER TABLE %I DISABLE ROW LEVEL SECURITY', v_table);
    END LOOP;
END $$;
DROP FUNCTION memory_secure_table(regclass, boolean);
DROP TABLE memory_forget_requests;
DROP TABLE memory_event_keys;
DROP TABLE memory_keys;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)

"""Erasure: no plaintext or key material in planner statistics; physical erasure pending.

ANALYZE (autovacuum runs it on its own) copies sample values of every column into
``pg_statistic``: chunk and summary text, words, vectors, wrapped keys and event secrets
would stay there after a forget, where deleting the rows does not reach them. Every
column of a ``memory_*`` table (and every expression column of a ``memory_*`` index) that
can hold text, JSON, bytes, a tsvector or vectors gets a statistics target of 0, so ANALYZE
skips it, except the identifier columns of ``ALLOWED`` (tenants, actors, sessions, key and
batch ids, projection names and states, event types): they hold no content and the
planner's estimates for them stay. A target of 0 does not remove what an earlier ANALYZE
stored, so those rows are cleared: ``pg_clear_attribute_stats`` (PostgreSQL 18, needs the
MAINTAIN privilege the owner has), else a DELETE from ``pg_statistic`` (superusers).

A column added by a later migration must get the same (tests/forget/test_forget_erasure.py checks
every such column of every ``memory_*`` relation). Indexes the projection runner creates at
run time get it from memory/erasure.py.

``memory_forget_requests.erased_at``: when the key tables were rewritten and the derived
tables vacuumed after the request (memory/erasure.py); NULL while that is pending.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Keep in sync with memory/erasure.py (STATISTICS_ALLOWED).
ALLOWED = ("tenant", "actor_id", "session_id", "key_id", "batch", "master_id", "name",
           "status", "type")

UPGRADE = f"""
ALTER TABLE memory_forget_requests ADD COLUMN IF NOT EXISTS erased_at timestamptz;

DO $$
DECLARE
    r record;
    content_types regtype[] := ARRAY['text', 'bytea', 'jsonb', 'tsvector']::regtype[]
        || array_remove(ARRAY[to_regtype('vector'), to_regtype('vector[]')], NULL);
    can_clear boolean := to_regprocedure(
        'pg_clear_attribute_stats(text, text, text, boolean)') IS NOT NULL;
BEGIN
    FOR r IN
        SELECT n.nspname, c.relname, c.relkind, a.attnum, a.attname
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid
        LEFT JOIN pg_index i ON i.indexrelid = c.oid
        WHERE n.nspname = current_schema() AND c.relname LIKE 'memory\\_%'
          AND a.attnum > 0 AND NOT a.attisdropped
          AND a.atttypid = ANY (content_types)
          AND (c.relkind IN ('r', 'p', 'm') AND a.attname NOT IN {ALLOWED!r}
               OR c.relkind IN ('i', 'I') AND i.indkey[a.attnum - 1] = 0)
    LOOP
        EXECUTE format('ALTER %s %I.%I ALTER COLUMN %s SET STATISTICS 0',
                       CASE WHEN r.relkind IN ('i', 'I') THEN 'INDEX' ELSE 'TABLE' END,
                       r.nspname, r.relname,
                       CASE WHEN r.relkind IN ('i', 'I') THEN r.attnum::text
                            ELSE quote_ident(r.attname) END);
        IF can_clear THEN
            PERFORM pg_clear_attribute_stats(r.nspname, r.relname, r.attname::text, b)
            FROM unnest(ARRAY[false, true]) b;
        ELSIF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            DELETE FROM pg_statistic WHERE starelid = format('%I.%I', r.nspname,
                r.relname)::regclass AND staattnum = r.attnum;
        ELSE
            RAISE NOTICE 'memory: cannot clear the statistics of %.% here; delete them '
                         'from pg_statistic as a superuser',
                         r.relname, r.attname;
        END IF;
    END LOOP;
END $$;
"""

DOWNGRADE = """
ALTER TABLE memory_forget_requests DROP COLUMN IF EXISTS erased_at;
-- The statistics targets stay at 0: setting them back would let ANALYZE copy content
-- into pg_statistic again.
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)

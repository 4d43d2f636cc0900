"""The immutable event log: events table, append function, append-only guard.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The key of the transaction-level advisory lock every append takes; see memory/log/eventlog.py
# for why appends are serialised. Keep in sync with memory.log.sql.APPEND_LOCK_KEY.
APPEND_LOCK_KEY = 7_263_520_011

UPGRADE = f"""
CREATE SEQUENCE memory_events_position_seq;

CREATE TABLE memory_events (
    position       bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    tenant         text        NOT NULL,
    actor_id       text        NOT NULL,
    session_id     text        NOT NULL,
    version        integer     NOT NULL CHECK (version > 0),
    type           text        NOT NULL,
    schema_version integer     NOT NULL CHECK (schema_version > 0),
    payload        jsonb,
    payload_enc    bytea,
    key_id         text,
    metadata       jsonb       NOT NULL DEFAULT '{{}}',
    content_hash   bytea       NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    -- Every key starts with the tenant so the table can be distributed by tenant (Citus).
    CONSTRAINT memory_events_pk PRIMARY KEY (tenant, position),
    CONSTRAINT memory_events_event_id_key UNIQUE (tenant, event_id),
    CONSTRAINT memory_events_stream_version_key UNIQUE (tenant, session_id, version),
    -- A payload is stored either in clear or sealed with a key (crypto-shredding).
    CONSTRAINT memory_events_one_payload CHECK ((payload IS NULL) <> (payload_enc IS NULL)),
    CONSTRAINT memory_events_sealed_has_key CHECK ((payload_enc IS NULL) = (key_id IS NULL))
);
CREATE INDEX memory_events_position_idx ON memory_events (position);
CREATE INDEX memory_events_actor_idx ON memory_events (tenant, actor_id, position);

-- Append-only, enforced by the database: statement-level, so it also fires when no row matches.
CREATE FUNCTION memory_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'memory_events is append-only: % is refused', TG_OP
        USING ERRCODE = 'MM010', HINT = 'History is never rewritten;'
              || ' forget data by destroying its key (Store.forget).';
END $$;

CREATE TRIGGER memory_events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON memory_events
    FOR EACH STATEMENT EXECUTE FUNCTION memory_events_refuse_change();
-- ALWAYS: the guard also fires under session_replication_role = replica, which would
-- otherwise silence ordinary triggers.
ALTER TABLE memory_events ENABLE ALWAYS TRIGGER memory_events_append_only;

-- One round trip per append: lock, idempotency, expected version, insert, wake-up.
CREATE FUNCTION memory_append(
    p_tenant text, p_actor text, p_session text, p_expected bigint,
    p_ids uuid[], p_types text[], p_schema_versions integer[],
    p_payloads jsonb[], p_payloads_enc bytea[], p_key_ids text[],
    p_metadata jsonb[], p_hashes bytea[], p_occurred timestamptz[])
RETURNS TABLE (event_id uuid, "position" bigint, version integer,
               recorded_at timestamptz, duplicate boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_n        integer := cardinality(p_ids);
    v_found    integer;
    v_bad      uuid;
    v_current  integer;
    v_actor    text;
    v_first    bigint;
BEGIN
    -- Held until commit: positions are handed out in commit order (no gaps for readers).
    PERFORM pg_advisory_xact_lock({APPEND_LOCK_KEY});

    SELECT count(*) INTO v_found
      FROM memory_events e WHERE e.tenant = p_tenant AND e.event_id = ANY (p_ids);
    IF v_found > 0 THEN
        -- A re-sent batch is a no-op only if it is the same batch, event for event.
        SELECT i.id INTO v_bad
          FROM unnest(p_ids, p_hashes) AS i(id, h)
          JOIN memory_events e ON e.tenant = p_tenant AND e.event_id = i.id
         WHERE e.content_hash <> i.h OR e.session_id <> p_session
         LIMIT 1;
        IF v_bad IS NOT NULL THEN
            RAISE EXCEPTION 'event id % was already used for other content', v_bad
                USING ERRCODE = 'MM002', DETAIL = v_bad::text;
        END IF;
        IF v_found < v_n THEN
            -- Some of the batch is in the log, some is not: it is not a retry of one append.
            SELECT e.event_id INTO v_bad FROM memory_events e
             WHERE e.tenant = p_tenant AND e.event_id = ANY (p_ids) LIMIT 1;
            RAISE EXCEPTION 'event id % was already appended in another batch', v_bad
                USING ERRCODE = 'MM002', DETAIL = v_bad::text;
        END IF;
        RETURN QUERY
            SELECT e.event_id, e.position, e.version, e.recorded_at, true
              FROM unnest(p_ids) WITH ORDINALITY AS i(id, ord)
              JOIN memory_events e ON e.tenant = p_tenant AND e.event_id = i.id
             ORDER BY i.ord;
        RETURN;
    END IF;

    SELECT e.version, e.actor_id INTO v_current, v_actor
      FROM memory_events e
     WHERE e.tenant = p_tenant AND e.session_id = p_session
     ORDER BY e.version DESC LIMIT 1;
    v_current := coalesce(v_current, 0);
    IF p_expected IS NOT NULL AND p_expected <> v_current THEN
        RAISE EXCEPTION 'session % is at version %, the append expected %',
                        p_session, v_current, p_expected
            USING ERRCODE = 'MM001', DETAIL = v_current::text;
    END IF;
    IF v_actor IS NOT NULL AND v_actor <> p_actor THEN
        RAISE EXCEPTION 'session % belongs to actor %, not %', p_session, v_actor, p_actor
            USING ERRCODE = 'MM003';
    END IF;

    -- The lock makes this block of positions contiguous and ordered like the batch.
    v_first := nextval('memory_events_position_seq');
    IF v_n > 1 THEN
        PERFORM setval('memory_events_position_seq', v_first + v_n - 1);
    END IF;

    RETURN QUERY
        WITH ins AS (
            INSERT INTO memory_events AS e
                (position, event_id, tenant, actor_id, session_id, version, type,
                 schema_version, payload, payload_enc, key_id, metadata, content_hash,
                 occurred_at)
            SELECT v_first + i.ord - 1, i.id, p_tenant, p_actor, p_session,
                   v_current + i.ord, i.typ, i.sv, i.pl, i.enc, i.kid, i.meta, i.h, i.occ
              FROM unnest(p_ids, p_types, p_schema_versions, p_payloads, p_payloads_enc,
                          p_key_ids, p_metadata, p_hashes, p_occurred)
                   WITH ORDINALITY AS i(id, typ, sv, pl, enc, kid, meta, h, occ, ord)
            RETURNING e.event_id, e.position, e.version, e.recorded_at
        )
        SELECT ins.event_id, ins.position, ins.version, ins.recorded_at, false
          FROM ins ORDER BY ins.position;
    PERFORM pg_notify('memory_events', p_tenant);
END $$;
"""

DOWNGRADE = """
DROP FUNCTION memory_append(text, text, text, bigint, uuid[], text[], integer[], jsonb[],
                            bytea[], text[], jsonb[], bytea[], timestamptz[]);
DROP TABLE memory_events;
DROP FUNCTION memory_events_refuse_change();
DROP SEQUENCE memory_events_position_seq;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)

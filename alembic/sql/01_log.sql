-- The event log: the one table every projection and every context is built from.

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
    metadata       jsonb       NOT NULL DEFAULT '{}',
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
        USING ERRCODE = '{{SQLSTATE_APPEND_ONLY}}', HINT = 'History is never rewritten;'
              || ' forget data by destroying its key (Store.forget).';
END $$;

CREATE TRIGGER memory_events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON memory_events
    FOR EACH STATEMENT EXECUTE FUNCTION memory_events_refuse_change();
-- ALWAYS: the guard also fires under session_replication_role = replica, which would
-- otherwise silence ordinary triggers.
ALTER TABLE memory_events ENABLE ALWAYS TRIGGER memory_events_append_only;

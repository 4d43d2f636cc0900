-- Keys, epochs and secrets (crypto-shredding, memory/log/sealing.py), forget requests,
-- and the map of tenant roles.

-- One data key per (tenant, actor), wrapped (AES-GCM) by the master key, which never
-- reaches the database.
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

-- One secret per event: for events whose epoch was destroyed by forgetting another event
-- of it (their keys kept, masked under the actor's key), and for events sealed one secret
-- per event. A forgotten event's row stays with its secret nulled, so a retried append of
-- the same event id cannot plant a new secret.
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

-- A forget is recorded before its work starts, so a crash half-way is completed by the
-- next call. erased_at: when the key tables were rewritten and the derived tables
-- vacuumed after it (memory/erasure.py); NULL while that is pending.
CREATE TABLE memory_forget_requests (
    tenant       text        NOT NULL,
    request_id   uuid        NOT NULL,
    actor_id     text,
    event_ids    uuid[]      NOT NULL DEFAULT '{}',
    requested_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    erased_at    timestamptz,
    CONSTRAINT memory_forget_requests_pk PRIMARY KEY (tenant, request_id),
    -- An actor, events, or an actor plus the contexts of others that cited its events.
    CONSTRAINT memory_forget_requests_what CHECK (
        actor_id IS NOT NULL OR cardinality(event_ids) > 0)
);
CREATE INDEX memory_forget_requests_pending_idx
    ON memory_forget_requests (tenant) WHERE completed_at IS NULL;

-- Secrets rows. A batch (``s:`` + hex): the 32-byte secrets of one append's events packed
-- in event order, event v's at (v - first_version) * 32; forgetting one event zeros its
-- 32 bytes. An epoch (``e:`` + hex, first_version 0): one secret that seals many appends
-- of one actor; an append under it writes nothing here, it checks and holds the epoch.
-- key_id is the actor key's: forgetting the actor deletes its rows with its key.
CREATE TABLE memory_event_secrets (
    tenant        text    NOT NULL,
    batch         text    NOT NULL,
    key_id        text    NOT NULL,
    first_version integer NOT NULL,
    secrets       bytea   NOT NULL,
    CONSTRAINT memory_event_secrets_pk PRIMARY KEY (tenant, batch),
    CONSTRAINT memory_event_secrets_whole CHECK (length(secrets) % 32 = 0)
);
CREATE INDEX memory_event_secrets_key_idx ON memory_event_secrets (tenant, key_id);
-- Random bytes do not compress: skip the attempt, and keep slices cheap to read.
ALTER TABLE memory_event_secrets ALTER COLUMN secrets SET STORAGE EXTERNAL;

-- Which tenant each tenant login role acts for (memory_ensure_tenant_role writes it).
CREATE TABLE memory_tenant_roles (
    role_name   text        NOT NULL,
    tenant_name text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memory_tenant_roles_pk PRIMARY KEY (role_name),
    CONSTRAINT memory_tenant_roles_tenant_key UNIQUE (tenant_name)
);
-- The owner's alone: row-level security with no policy admits nobody else.
ALTER TABLE memory_tenant_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE memory_tenant_roles FORCE ROW LEVEL SECURITY;

"""Grouped appends and one secrets row per appended batch.

Revision ID: 0005
Revises: 0004

Why (benchmarks/RESULTS.md, "Append" and "Encryption")
-----------------------------------------------------
* ``memory_append`` (0001) serves one append per statement, and the no-gap lock is held
  through the commit's WAL flush, so concurrent single-event appends could not share a
  flush. ``memory_append_group`` serves *several* appends (requests) in one statement and
  one transaction, taking the lock once: the library gathers the appends that arrive while
  another is in flight (memory/log/group.py) and sends them together, so they share one
  flush. Each request keeps its own semantics: it runs in its own subtransaction (a
  plpgsql block with an EXCEPTION clause) doing exactly what a lone append does
  (idempotency, expected version, session ownership, key check, insert), in request
  order, so request k sees what requests 0..k-1 wrote; a request that fails is rolled
  back alone and its error is returned in its rows instead of failing the statement. A
  group of one runs without the subtransaction and raises, like ``memory_append``.
* Event secrets: ``memory_event_keys`` (0004) took one row (and two index entries) per
  sealed event, a large part of a sealed append's server time. ``memory_event_secrets``
  takes one row per appended batch: the 32-byte secrets of its events packed in event
  order in one bytea. A sealed event's ``key_id`` names its batch row (``s:`` + hex, so
  it cannot be mistaken for an actor key id, which is plain hex), and its secret is the
  32 bytes at ``(version - first_version) * 32``. Forgetting one event overwrites those
  32 bytes with zeros (``memory_forget_secrets``): the events table is never updated.
  Forgetting an actor deletes its batch rows by ``key_id`` (the actor key). Events
  sealed before this revision keep their rows in ``memory_event_keys`` and stay readable.

The append lock key is the one of 0001 (memory.log.sql.APPEND_LOCK_KEY).
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

APPEND_LOCK_KEY = 7_263_520_011

TABLES = """
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
SELECT memory_secure_table('memory_event_secrets');
"""

# A constant of its own: 0008 adds the epoch check to it.
APPEND_REQUEST = f"""
-- One append request: what memory_append (0001) does for a batch, with the events as one
-- JSON array (rows of [id, type, schema version, payload, metadata, content hash (hex),
-- occurred_at, sealed payload (base64) or null]) and, when sealed, the actor key to check
-- and the batch's secrets row. The caller holds the append lock.
CREATE FUNCTION memory_append_request(
    p_tenant text, p_actor text, p_session text, p_expected bigint, p_events jsonb,
    p_key_id text, p_batch text, p_secrets bytea, p_grouped boolean DEFAULT false)
RETURNS TABLE (event_id uuid, "position" bigint, version integer,
               recorded_at timestamptz, duplicate boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_n        integer := jsonb_array_length(p_events);
    v_current  integer;
    v_actor    text;
    v_first    bigint;
    v_written  integer;
    v_bad      uuid;
    v_x        jsonb;
BEGIN
    IF NOT p_grouped THEN
        -- Held until commit: positions are handed out in commit order (no gaps for
        -- readers). A group (p_grouped) took it once for all its requests, outside any
        -- subtransaction, and checked their keys and sends the wake-up itself.
        PERFORM pg_advisory_xact_lock({APPEND_LOCK_KEY});
    END IF;
    -- The common case first: the session's head, then the insert. An event id already in
    -- the log (an idempotent retry) is found by the insert itself (ON CONFLICT on the
    -- event id, the cheapest check there is), or, when the append would be refused, by
    -- memory_append_duplicate before refusing: a retry of an append that landed returns
    -- its original positions whatever its expected version says, as in 0001.
    SELECT e.version, e.actor_id INTO v_current, v_actor
      FROM memory_events e
     WHERE e.tenant = p_tenant AND e.session_id = p_session
     ORDER BY e.version DESC LIMIT 1;
    v_current := coalesce(v_current, 0);
    IF (p_expected IS NOT NULL AND p_expected <> v_current)
       OR (v_actor IS NOT NULL AND v_actor <> p_actor) THEN
        RETURN QUERY SELECT * FROM memory_append_duplicate(p_tenant, p_session, p_events);
        IF FOUND THEN
            RETURN;
        END IF;
        IF p_expected IS NOT NULL AND p_expected <> v_current THEN
            RAISE EXCEPTION 'session % is at version %, the append expected %',
                            p_session, v_current, p_expected
                USING ERRCODE = 'MM001', DETAIL = v_current::text;
        END IF;
        RAISE EXCEPTION 'session % belongs to actor %, not %', p_session, v_actor, p_actor
            USING ERRCODE = 'MM003';
    END IF;

    IF p_key_id IS NOT NULL AND NOT p_grouped THEN
        -- The actor key must still exist, and stays locked until commit: a forget that
        -- deletes it waits for this append, then deletes this batch's secrets too. A key
        -- already deleted (a stale cache) fails the request before anything is written.
        PERFORM FROM memory_keys k WHERE k.tenant = p_tenant AND k.key_id = p_key_id
            FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the data key % of actor % was destroyed', p_key_id, p_actor
                USING ERRCODE = 'MM004';
        END IF;
    END IF;

    -- The lock makes this block of positions contiguous and ordered like the batch.
    v_first := nextval('memory_events_position_seq');
    IF v_n = 1 THEN
        -- One event (the most common append): the same insert without unpacking a set.
        v_x := p_events->0;
        RETURN QUERY
            INSERT INTO memory_events AS e
                (position, event_id, tenant, actor_id, session_id, version, type,
                 schema_version, payload, payload_enc, key_id, metadata, content_hash,
                 occurred_at)
            VALUES (v_first, (v_x->>0)::uuid, p_tenant, p_actor, p_session, v_current + 1,
                    v_x->>1, (v_x->>2)::int, nullif(v_x->3, 'null'),
                    decode(v_x->>7, 'base64'),
                    CASE WHEN v_x->>7 IS NOT NULL THEN p_batch END,
                    v_x->4, decode(v_x->>5, 'hex'), (v_x->>6)::timestamptz)
            ON CONFLICT (tenant, event_id) DO NOTHING
            RETURNING e.event_id, e.position, e.version, e.recorded_at, false;
    ELSE
        PERFORM setval('memory_events_position_seq', v_first + v_n - 1);
        RETURN QUERY
            WITH ins AS (
                INSERT INTO memory_events AS e
                    (position, event_id, tenant, actor_id, session_id, version, type,
                     schema_version, payload, payload_enc, key_id, metadata, content_hash,
                     occurred_at)
                SELECT v_first + b.ord - 1, (b.x->>0)::uuid, p_tenant, p_actor, p_session,
                       v_current + b.ord, b.x->>1, (b.x->>2)::int, nullif(b.x->3, 'null'),
                       decode(b.x->>7, 'base64'),
                       CASE WHEN b.x->>7 IS NOT NULL THEN p_batch END,
                       b.x->4, decode(b.x->>5, 'hex'), (b.x->>6)::timestamptz
                  FROM jsonb_array_elements(p_events) WITH ORDINALITY AS b(x, ord)
                ON CONFLICT (tenant, event_id) DO NOTHING
                RETURNING e.event_id, e.position, e.version, e.recorded_at
            )
            SELECT ins.event_id, ins.position, ins.version, ins.recorded_at, false
              FROM ins ORDER BY ins.position;
    END IF;
    GET DIAGNOSTICS v_written = ROW_COUNT;
    IF v_written < v_n THEN
        -- Some event id is in the log already. All of them: a retry (or a conflict,
        -- which memory_append_duplicate raises); only some: not a retry of one append.
        -- Raising rolls back what this request wrote (the statement, or its
        -- subtransaction in a group); the positions drawn are then never used, a hole
        -- in the numbering that readers do not mind (they follow "after N").
        IF v_written > 0 THEN
            SELECT e.event_id INTO v_bad
              FROM jsonb_array_elements(p_events) AS b(x)
              JOIN memory_events e ON e.tenant = p_tenant AND e.event_id = (b.x->>0)::uuid
             WHERE e.position < v_first
             LIMIT 1;
            RAISE EXCEPTION 'event id % was already appended in another batch', v_bad
                USING ERRCODE = 'MM002', DETAIL = v_bad::text;
        END IF;
        RETURN QUERY SELECT * FROM memory_append_duplicate(p_tenant, p_session, p_events);
        RETURN;
    END IF;
    IF p_key_id IS NOT NULL THEN
        INSERT INTO memory_event_secrets (tenant, batch, key_id, first_version, secrets)
        VALUES (p_tenant, p_batch, p_key_id, v_current + 1, p_secrets);
    END IF;
    IF NOT p_grouped THEN
        PERFORM pg_notify('memory_events', p_tenant);  -- a wake-up for followers
    END IF;
END $$;
"""

REST = f"""
-- The events of p_events that are in the log already, as an idempotent retry sees them:
-- no rows when none is; their original rows when all are, with the same content in the
-- same session; MM002 otherwise (an id re-used for other content, or part of a batch).
CREATE FUNCTION memory_append_duplicate(p_tenant text, p_session text, p_events jsonb)
RETURNS TABLE (event_id uuid, "position" bigint, version integer,
               recorded_at timestamptz, duplicate boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_n     integer := jsonb_array_length(p_events);
    v_found integer;
    v_bad   uuid;
BEGIN
    SELECT count(*) INTO v_found
      FROM jsonb_array_elements(p_events) AS b(x)
      JOIN memory_events e ON e.tenant = p_tenant AND e.event_id = (b.x->>0)::uuid;
    IF v_found = 0 THEN
        RETURN;
    END IF;
    SELECT e.event_id INTO v_bad
      FROM jsonb_array_elements(p_events) AS b(x)
      JOIN memory_events e ON e.tenant = p_tenant AND e.event_id = (b.x->>0)::uuid
     WHERE e.content_hash <> decode(b.x->>5, 'hex') OR e.session_id <> p_session
     LIMIT 1;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'event id % was already used for other content', v_bad
            USING ERRCODE = 'MM002', DETAIL = v_bad::text;
    END IF;
    IF v_found < v_n THEN
        SELECT e.event_id INTO v_bad
          FROM jsonb_array_elements(p_events) AS b(x)
          JOIN memory_events e ON e.tenant = p_tenant AND e.event_id = (b.x->>0)::uuid
         LIMIT 1;
        RAISE EXCEPTION 'event id % was already appended in another batch', v_bad
            USING ERRCODE = 'MM002', DETAIL = v_bad::text;
    END IF;
    RETURN QUERY
        SELECT e.event_id, e.position, e.version, e.recorded_at, true
          FROM jsonb_array_elements(p_events) WITH ORDINALITY AS b(x, ord)
          JOIN memory_events e ON e.tenant = p_tenant AND e.event_id = (b.x->>0)::uuid
         ORDER BY b.ord;
END $$;

-- Several append requests in one statement and one transaction (one WAL flush), in
-- order. p_requests: a JSON array of objects {{a: actor, s: session, x: expected version
-- or null, e: events, k: actor key id, b: batch, z: secrets (base64)}} (k, b, z null
-- for clear events). Rows: the request's index and its appended events, or one row with
-- its error (SQLSTATE, message, detail, table).
CREATE FUNCTION memory_append_group(p_tenant text, p_requests jsonb)
RETURNS TABLE (req integer, event_id uuid, "position" bigint, version integer,
               recorded_at timestamptz, duplicate boolean, err_state text,
               err_message text, err_detail text, err_table text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_r       jsonb;
    v_i       integer;
    v_state   text;
    v_message text;
    v_detail  text;
    v_table   text;
    v_live    text[];
BEGIN
    -- Held until commit: positions are handed out in commit order (no gaps for readers).
    PERFORM pg_advisory_xact_lock({APPEND_LOCK_KEY});
    IF jsonb_array_length(p_requests) = 1 THEN
        -- A lone request: no subtransaction; its error fails the statement.
        v_r := p_requests->0;
        RETURN QUERY
            SELECT 0, a.event_id, a.position, a.version, a.recorded_at, a.duplicate,
                   NULL::text, NULL::text, NULL::text, NULL::text
              FROM memory_append_request(
                   p_tenant, v_r->>'a', v_r->>'s', (v_r->>'x')::bigint, v_r->'e',
                   v_r->>'k', v_r->>'b', decode(v_r->>'z', 'base64')) AS a;
    ELSE
        -- The actor keys, checked and locked once for the group (see the same check in
        -- memory_append_request); a request whose key is gone fails alone (MM004).
        v_live := ARRAY(
            SELECT k.key_id FROM memory_keys k
             WHERE k.tenant = p_tenant
               AND k.key_id IN (SELECT r->>'k' FROM jsonb_array_elements(p_requests) AS r)
               FOR KEY SHARE);
        FOR v_r, v_i IN
            SELECT r.x, (r.ord - 1)::integer
              FROM jsonb_array_elements(p_requests) WITH ORDINALITY AS r(x, ord)
        LOOP
            BEGIN
                IF v_r->>'k' IS NOT NULL AND NOT (v_r->>'k' = ANY (v_live)) THEN
                    RAISE EXCEPTION 'the data key % of actor % was destroyed',
                                    v_r->>'k', v_r->>'a' USING ERRCODE = 'MM004';
                END IF;
                -- A plpgsql set-returning function materialises its rows before the
                -- first is returned, so a failing request emits none of them.
                RETURN QUERY
                    SELECT v_i, a.event_id, a.position, a.version, a.recorded_at,
                           a.duplicate, NULL::text, NULL::text, NULL::text, NULL::text
                      FROM memory_append_request(
                           p_tenant, v_r->>'a', v_r->>'s', (v_r->>'x')::bigint, v_r->'e',
                           v_r->>'k', v_r->>'b', decode(v_r->>'z', 'base64'), true) AS a;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE,
                    v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL,
                    v_table = TABLE_NAME;
                RETURN QUERY SELECT v_i, NULL::uuid, NULL::bigint, NULL::integer,
                                    NULL::timestamptz, NULL::boolean, v_state, v_message,
                                    v_detail, v_table;
            END;
        END LOOP;
        PERFORM pg_notify('memory_events', p_tenant);  -- a wake-up for followers
    END IF;
END $$;

-- Forget single events: zero their 32 bytes in their batch's secrets row (events sealed
-- before 0005: null their memory_event_keys row). Returns how many secrets were destroyed
-- (0 for an event already forgotten).
CREATE FUNCTION memory_forget_secrets(p_tenant text, p_event_ids uuid[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_zero  bytea := decode(repeat('00', 32), 'hex');
    v_done  integer := 0;
    v_count integer;
    v_event record;
BEGIN
    FOR v_event IN
        SELECT e.key_id, e.version FROM memory_events e
         WHERE e.tenant = p_tenant AND e.event_id = ANY (p_event_ids)
           AND e.key_id LIKE 's:%'
    LOOP
        UPDATE memory_event_secrets s
           SET secrets = overlay(s.secrets PLACING v_zero
                                 FROM (v_event.version - s.first_version) * 32 + 1 FOR 32)
         WHERE s.tenant = p_tenant AND s.batch = v_event.key_id
           AND substring(s.secrets FROM (v_event.version - s.first_version) * 32 + 1
                         FOR 32) <> v_zero;
        GET DIAGNOSTICS v_count = ROW_COUNT;
        v_done := v_done + v_count;
    END LOOP;
    UPDATE memory_event_keys SET secret = NULL, forgotten_at = now()
     WHERE tenant = p_tenant AND event_id = ANY (p_event_ids) AND secret IS NOT NULL;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_done + v_count;
END $$;
"""

UPGRADE = TABLES + APPEND_REQUEST + REST

DOWNGRADE = """
DROP FUNCTION memory_forget_secrets(text, uuid[]);
DROP FUNCTION memory_append_group(text, jsonb);
DROP FUNCTION memory_append_request(text, text, text, bigint, jsonb, text, text, bytea,
                                    boolean);
DROP FUNCTION memory_append_duplicate(text, text, jsonb);
DROP TABLE memory_event_secrets;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)

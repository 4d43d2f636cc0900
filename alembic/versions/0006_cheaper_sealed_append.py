"""Cheaper sealed appends: the actor key held by an advisory lock, one index less on
the event secrets.

Revision ID: 0006
Revises: 0005

Why (benchmarks/RESULTS.md, "Encryption"): a sealed single-event append wrote ~1,400
bytes of WAL against ~900 in clear. Measured per append (``pg_current_wal_insert_lsn()``
deltas around each statement): the secrets row 376 bytes (272 without its second index),
the ``FOR KEY SHARE`` of the actor's key row 56 bytes (a row lock is a heap change: a WAL
record and a dirtied page, on every append).

* ``memory_event_secrets_key_idx`` (tenant, key_id) is dropped. Only forgetting an actor
  used it; that forget now finds the actor's batch rows through its events (the events'
  ``key_id`` names their batch, found by ``memory_events_actor_idx``): a batch row is
  written in the transaction of its events and events are never deleted, so every batch
  row of an actor is named by one of its events (memory/forget.py).
* The append holds the actor key with ``memory_hold_key``: a *shared* transaction-level
  advisory lock on (tenant, key id), then the existence check in a new snapshot (READ
  COMMITTED takes one per statement), instead of ``FOR KEY SHARE`` on the key row. A
  trigger on ``memory_keys`` takes the same lock *exclusively* before any DELETE (or a
  change of tenant or key id) of a key row, whoever runs it. So the race with a forget
  stays closed both ways: an append that holds the key makes the forget's DELETE wait
  until the append commits, and the forget's next statement (deleting the actor's batch
  rows) sees the append's events and deletes their secrets too; a forget that deleted the
  key first makes the append wait until it commits, and the append's check then finds
  the key gone (MM004: nothing written, the library retries with a new key). Under
  REPEATABLE READ or SERIALIZABLE the check could not see a delete that commits after the
  transaction's snapshot, so there the key row is still locked ``FOR KEY SHARE``.
  A lock key collision between two (tenant, key id) pairs (a 32-bit hash) only makes a
  forget wait for an unrelated append; the two-int form of the advisory lock never
  collides with the append lock (one bigint).

Events sealed before stay readable and forgettable: nothing about the stored rows changes.
"""

import importlib.util
import re
from pathlib import Path

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

APPEND_LOCK_KEY = 7_263_520_011
KEY_LOCK_CLASS = 72_635_200
"""The first half of the advisory lock holding an actor key (the second: a hash of
tenant and key id)."""

UPGRADE = f"""
DROP INDEX memory_event_secrets_key_idx;

-- True when the actor key (p_tenant, p_key_id) exists; it then cannot be deleted before
-- the caller's transaction ends (the trigger below waits for it).
CREATE FUNCTION memory_hold_key(p_tenant text, p_key_id text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        -- One snapshot for the whole transaction: lock the row itself.
        PERFORM FROM memory_keys k WHERE k.tenant = p_tenant AND k.key_id = p_key_id
            FOR KEY SHARE;
        RETURN FOUND;
    END IF;
    PERFORM pg_advisory_xact_lock_shared({KEY_LOCK_CLASS},
                                         hashtext(p_tenant || chr(31) || p_key_id));
    -- A new statement, a new snapshot: a delete that committed while we waited is seen.
    PERFORM FROM memory_keys k WHERE k.tenant = p_tenant AND k.key_id = p_key_id;
    RETURN FOUND;
END $$;

CREATE FUNCTION memory_keys_wait_for_appends() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({KEY_LOCK_CLASS},
                                  hashtext(OLD.tenant || chr(31) || OLD.key_id));
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER memory_keys_wait_for_appends
    BEFORE DELETE OR UPDATE OF tenant, key_id ON memory_keys
    FOR EACH ROW EXECUTE FUNCTION memory_keys_wait_for_appends();
ALTER TABLE memory_keys ENABLE ALWAYS TRIGGER memory_keys_wait_for_appends;

-- memory_append_request and memory_append_group of 0005, holding keys with memory_hold_key.
CREATE OR REPLACE FUNCTION memory_append_request(
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
        -- The actor key must still exist, and is held until commit: a forget that
        -- deletes it waits for this append, then deletes this batch's secrets too. A key
        -- already deleted (a stale cache) fails the request before anything is written.
        -- (memory_hold_key: a shared advisory lock, then the check in a new snapshot.)
        IF NOT memory_hold_key(p_tenant, p_key_id) THEN
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

CREATE OR REPLACE FUNCTION memory_append_group(p_tenant text, p_requests jsonb)
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
            SELECT q.k FROM (SELECT DISTINCT r->>'k' AS k
                               FROM jsonb_array_elements(p_requests) AS r
                              WHERE r->>'k' IS NOT NULL ORDER BY 1) AS q
             WHERE memory_hold_key(p_tenant, q.k));
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
"""


def _functions_of_0005() -> str:
    """memory_append_request and memory_append_group as revision 0005 made them."""
    path = Path(__file__).with_name("0005_grouped_append.py")
    spec = importlib.util.spec_from_file_location("memory_migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return "\n".join(
        re.search(rf"CREATE FUNCTION {name}\(.*?END \$\$;", module.UPGRADE, re.S)
        .group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
        for name in ("memory_append_request", "memory_append_group"))


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(_functions_of_0005())
    op.execute("""
DROP TRIGGER memory_keys_wait_for_appends ON memory_keys;
DROP FUNCTION memory_keys_wait_for_appends();
DROP FUNCTION memory_hold_key(text, text);
CREATE INDEX memory_event_secrets_key_idx ON memory_event_secrets (tenant, key_id);
""")

"""Set-based appends: one insert for a whole group, no subtransaction per request.

Revision ID: 0006
Revises: 0005

Why (benchmarks/RESULTS.md, "Append")
-------------------------------------
``memory_append_group`` (0005) runs each request of a group in its own plpgsql
subtransaction, through ``memory_append_request``: a group of four single-event appends
took ~1.7 ms of statement time, against ~0.7 ms for one (measured on this machine with
another benchmark running), so four writers got little more than one. Almost every
append is the common case: its session's head is what it expected, the session is its
actor's, its key exists, its event ids are new. ``memory_append_set``
checks that for every request of the group first (one look-up of each session's head,
one key check for all), and when it holds, writes the whole group with one
INSERT (and one for the secrets rows of sealed requests): no subtransaction, no
per-request function call. When any request is not the common case (a stale expected
version, an idempotent retry, a foreign session, a destroyed key, two requests on one
session) nothing has been written yet and the whole group goes to ``memory_append_group``
instead, whose per-request semantics are unchanged: the fast path is a shortcut that
gives the same outcome, never a second set of rules. An event id seen before is found by
the insert itself (ON CONFLICT, the cheapest check): the function then raises MM020,
undoing its statement, and the library sends the group to ``memory_append_group``.
A lone append keeps ``memory_append_request`` (0005), which costs less than this for one.

Why checking first is safe: every append holds the append lock (taken first, here as in
0005) until it commits, so no other append can write a session head or an event id
between the checks and the insert.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

APPEND_LOCK_KEY = 7_263_520_011

UPGRADE = f"""
-- Same parameters and rows as memory_append_group (0005). Raises MM020, having written
-- nothing, when an event id of the group is in the log already (or twice in the group):
-- the library then sends the group to memory_append_group, which gives each request its
-- own outcome (an idempotent retry gets its original positions). memory/log/group.py.
CREATE FUNCTION memory_append_set(p_tenant text, p_requests jsonb)
RETURNS TABLE (req integer, event_id uuid, "position" bigint, version integer,
               recorded_at timestamptz, duplicate boolean, err_state text,
               err_message text, err_detail text, err_table text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_n       integer := jsonb_array_length(p_requests);
    v_r       jsonb;
    v_head    integer;
    v_owner   text;
    v_heads   integer[] := '{{}}';
    v_before  integer[] := '{{}}';
    v_seen    text[] := '{{}}';
    v_keys    text[] := '{{}}';
    v_total   integer := 0;
    v_first   bigint;
    v_written integer;
BEGIN
    -- Held until commit: positions are handed out in commit order (no gaps for readers).
    PERFORM pg_advisory_xact_lock({APPEND_LOCK_KEY});

    -- Is every request the common case: its session's head and owner as it expects, each
    -- session once in the group (versions then follow from the heads read here), its
    -- actor key alive? If not, nothing is written yet: memory_append_group gives each
    -- request its own outcome (a lone request raises its error).
    FOR v_i IN 0 .. v_n - 1 LOOP
        v_r := p_requests->v_i;
        v_owner := NULL;
        SELECT e.version, e.actor_id INTO v_head, v_owner FROM memory_events e
         WHERE e.tenant = p_tenant AND e.session_id = v_r->>'s'
         ORDER BY e.version DESC LIMIT 1;
        v_head := coalesce(v_head, 0);
        IF (v_r->>'x' IS NOT NULL AND (v_r->>'x')::integer <> v_head)
           OR (v_owner IS NOT NULL AND v_owner <> v_r->>'a')
           OR v_r->>'s' = ANY (v_seen) THEN
            RETURN QUERY SELECT * FROM memory_append_group(p_tenant, p_requests);
            RETURN;
        END IF;
        v_seen := v_seen || (v_r->>'s');
        v_heads := v_heads || v_head;
        v_before := v_before || v_total;
        v_total := v_total + jsonb_array_length(v_r->'e');
        IF v_r->>'k' IS NOT NULL AND NOT (v_r->>'k' = ANY (v_keys)) THEN
            v_keys := v_keys || (v_r->>'k');
        END IF;
    END LOOP;
    IF cardinality(v_keys) > 0 THEN
        -- Locked until commit: a forget that deletes a key waits for this append, then
        -- deletes its secrets rows too (0005).
        PERFORM FROM memory_keys k WHERE k.tenant = p_tenant AND k.key_id = ANY (v_keys)
            FOR KEY SHARE;
        GET DIAGNOSTICS v_written = ROW_COUNT;
        IF v_written < cardinality(v_keys) THEN
            RETURN QUERY SELECT * FROM memory_append_group(p_tenant, p_requests);
            RETURN;
        END IF;
    END IF;

    -- The lock makes this block of positions contiguous: requests in order, each
    -- request's events in order.
    v_first := nextval('memory_events_position_seq');
    IF v_total > 1 THEN
        PERFORM setval('memory_events_position_seq', v_first + v_total - 1);
    END IF;
    -- The events and, for sealed requests, their secrets rows, in one statement. A
    -- secrets row already there is a resent request (the same batch): the MM020 below
    -- then sends it to memory_append_group, like its events.
    RETURN QUERY
        WITH q AS (
            SELECT (r.ord - 1)::integer AS i, r.x, v_heads[r.ord] AS head,
                   v_before[r.ord] AS before
              FROM jsonb_array_elements(p_requests) WITH ORDINALITY AS r(x, ord)
        ), ins AS (
            INSERT INTO memory_events AS e
                (position, event_id, tenant, actor_id, session_id, version, type,
                 schema_version, payload, payload_enc, key_id, metadata, content_hash,
                 occurred_at)
            SELECT v_first + q.before + b.ord - 1, (b.x->>0)::uuid, p_tenant,
                   q.x->>'a', q.x->>'s', q.head + b.ord, b.x->>1, (b.x->>2)::int,
                   nullif(b.x->3, 'null'), decode(b.x->>7, 'base64'),
                   CASE WHEN b.x->>7 IS NOT NULL THEN q.x->>'b' END,
                   b.x->4, decode(b.x->>5, 'hex'), (b.x->>6)::timestamptz
              FROM q, jsonb_array_elements(q.x->'e') WITH ORDINALITY AS b(x, ord)
            ON CONFLICT (tenant, event_id) DO NOTHING
            RETURNING e.session_id, e.event_id, e.position, e.version, e.recorded_at
        ), secrets AS (
            INSERT INTO memory_event_secrets (tenant, batch, key_id, first_version, secrets)
            SELECT p_tenant, q.x->>'b', q.x->>'k', q.head + 1, decode(q.x->>'z', 'base64')
              FROM q WHERE q.x->>'k' IS NOT NULL
            ON CONFLICT (tenant, batch) DO NOTHING
        )
        SELECT q.i, ins.event_id, ins.position, ins.version, ins.recorded_at, false,
               NULL::text, NULL::text, NULL::text, NULL::text
          FROM ins JOIN q ON q.x->>'s' = ins.session_id
         ORDER BY ins.position;
    GET DIAGNOSTICS v_written = ROW_COUNT;
    IF v_written < v_total THEN
        -- An event id already in the log (a retry, or a conflict) or twice in the group.
        -- Raising undoes this statement; the library sends the group to
        -- memory_append_group, which sorts out which request is which.
        RAISE EXCEPTION 'an event id of this group is in the log already'
            USING ERRCODE = 'MM020';
    END IF;
    PERFORM pg_notify('memory_events', p_tenant);  -- a wake-up for followers
END $$;
"""

DOWNGRADE = "DROP FUNCTION memory_append_set(text, jsonb);"


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)

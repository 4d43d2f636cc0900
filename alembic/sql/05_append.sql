-- Appending: every write to the log goes through these SECURITY DEFINER functions.
-- Each takes the append lock ({{APPEND_LOCK_KEY}}) before it draws positions and holds it until
-- commit (the no-gap guarantee), and the caller's tenant from memory_caller_tenant.

-- The first append function: one batch as parallel arrays, one statement. The library
-- appends through memory_append_request and the group functions; this one stays callable
-- for the owner and keeps the same semantics.
CREATE FUNCTION memory_append(
    p_tenant text, p_actor text, p_session text, p_expected bigint,
    p_ids uuid[], p_types text[], p_schema_versions integer[],
    p_payloads jsonb[], p_payloads_enc bytea[], p_key_ids text[],
    p_metadata jsonb[], p_hashes bytea[], p_occurred timestamptz[])
RETURNS TABLE (event_id uuid, "position" bigint, version integer,
               recorded_at timestamptz, duplicate boolean)
LANGUAGE plpgsql SECURITY DEFINER AS $$
#variable_conflict use_column
DECLARE
    v_n        integer := cardinality(p_ids);
    v_found    integer;
    v_bad      uuid;
    v_current  integer;
    v_actor    text;
    v_first    bigint;
BEGIN
    p_tenant := memory_caller_tenant(p_tenant);
    -- Held until commit: positions are handed out in commit order (no gaps for readers).
    PERFORM pg_advisory_xact_lock({{APPEND_LOCK_KEY}});

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
                USING ERRCODE = '{{SQLSTATE_IDEMPOTENCY}}', DETAIL = v_bad::text;
        END IF;
        IF v_found < v_n THEN
            -- Some of the batch is in the log, some is not: it is not a retry of one append.
            SELECT e.event_id INTO v_bad FROM memory_events e
             WHERE e.tenant = p_tenant AND e.event_id = ANY (p_ids) LIMIT 1;
            RAISE EXCEPTION 'event id % was already appended in another batch', v_bad
                USING ERRCODE = '{{SQLSTATE_IDEMPOTENCY}}', DETAIL = v_bad::text;
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
            USING ERRCODE = '{{SQLSTATE_CONCURRENCY}}', DETAIL = v_current::text;
    END IF;
    IF v_actor IS NOT NULL AND v_actor <> p_actor THEN
        RAISE EXCEPTION 'session % belongs to actor %, not %', p_session, v_actor, p_actor
            USING ERRCODE = '{{SQLSTATE_OWNERSHIP}}';
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
    PERFORM pg_notify('{{NOTIFY_CHANNEL}}', '');
END $$;

-- The events of p_events that are in the log already, as an idempotent retry sees them:
-- no rows when none is; their original rows when all are, with the same content in the
-- same session; {{SQLSTATE_IDEMPOTENCY}} otherwise (an id re-used for other content, or part of a batch).
CREATE FUNCTION memory_append_duplicate(p_tenant text, p_session text, p_events jsonb)
RETURNS TABLE (event_id uuid, "position" bigint, version integer,
               recorded_at timestamptz, duplicate boolean)
LANGUAGE plpgsql SECURITY DEFINER AS $$
#variable_conflict use_column
DECLARE
    -- Shape and size first: the declarations below read p_events.
    v_shape integer := CASE WHEN jsonb_typeof(p_events) IS DISTINCT FROM 'array'
                                 THEN memory_check_array(p_events, 100000, 'events')
                            WHEN jsonb_array_length(p_events) BETWEEN 1 AND 100000 THEN 0
                            ELSE memory_check_array(p_events, 100000, 'events') END;
    v_n     integer := jsonb_array_length(p_events);
    v_found integer;
    v_bad   uuid;
BEGIN
    p_tenant := memory_caller_tenant(p_tenant);
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
            USING ERRCODE = '{{SQLSTATE_IDEMPOTENCY}}', DETAIL = v_bad::text;
    END IF;
    IF v_found < v_n THEN
        SELECT e.event_id INTO v_bad
          FROM jsonb_array_elements(p_events) AS b(x)
          JOIN memory_events e ON e.tenant = p_tenant AND e.event_id = (b.x->>0)::uuid
         LIMIT 1;
        RAISE EXCEPTION 'event id % was already appended in another batch', v_bad
            USING ERRCODE = '{{SQLSTATE_IDEMPOTENCY}}', DETAIL = v_bad::text;
    END IF;
    RETURN QUERY
        SELECT e.event_id, e.position, e.version, e.recorded_at, true
          FROM jsonb_array_elements(p_events) WITH ORDINALITY AS b(x, ord)
          JOIN memory_events e ON e.tenant = p_tenant AND e.event_id = (b.x->>0)::uuid
         ORDER BY b.ord;
END $$;

-- One append (a request): the events as one JSON array (rows of [id, type, schema version,
-- payload, metadata, content hash (hex), occurred_at, sealed payload (base64) or null])
-- and, when sealed, the actor key to check and the batch's secrets row; or, sealed under
-- an epoch, no key id and the epoch as the batch. A lone append calls it directly; a
-- group (p_grouped) calls it per request, holding the append lock and checking keys and
-- epochs once for all of them, and sends the wake-up itself.
CREATE FUNCTION memory_append_request(
    p_tenant text, p_actor text, p_session text, p_expected bigint, p_events jsonb,
    p_key_id text, p_batch text, p_secrets bytea, p_grouped boolean DEFAULT false)
RETURNS TABLE (event_id uuid, "position" bigint, version integer,
               recorded_at timestamptz, duplicate boolean)
LANGUAGE plpgsql SECURITY DEFINER AS $$
#variable_conflict use_column
DECLARE
    -- Shape and size first: the declarations below read p_events.
    v_shape integer := CASE WHEN jsonb_typeof(p_events) IS DISTINCT FROM 'array'
                                 THEN memory_check_array(p_events, 100000, 'events')
                            WHEN jsonb_array_length(p_events) BETWEEN 1 AND 100000 THEN 0
                            ELSE memory_check_array(p_events, 100000, 'events') END;
    v_n        integer := jsonb_array_length(p_events);
    v_current  integer;
    v_actor    text;
    v_first    bigint;
    v_written  integer;
    v_bad      uuid;
    v_x        jsonb;
BEGIN
    p_tenant := memory_caller_tenant(p_tenant);
    IF p_grouped THEN
        -- A direct call that says it is grouped takes the lock too: re-entrant, nearly
        -- free when its group holds it.
        PERFORM pg_advisory_xact_lock({{APPEND_LOCK_KEY}});
    END IF;
    IF NOT p_grouped AND p_key_id IS NULL AND p_batch LIKE 'e:%' THEN
        -- Sealed under an epoch: hold it until commit, then make sure it exists,
        -- as memory_check_epochs does for a group, and before the append lock as there.
        PERFORM pg_advisory_xact_lock_shared(memory_epoch_lock(p_batch));
        PERFORM FROM memory_event_secrets s
         WHERE s.tenant = p_tenant AND s.batch = p_batch;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the epoch % was destroyed (a forget since it was made)',
                            p_batch USING ERRCODE = '{{SQLSTATE_STALE_KEY}}';
        END IF;
    END IF;
    IF NOT p_grouped THEN
        -- Held until commit: positions are handed out in commit order (no gaps for
        -- readers). A group (p_grouped) took it once for all its requests, outside any
        -- subtransaction, and checked their keys and sends the wake-up itself.
        PERFORM pg_advisory_xact_lock({{APPEND_LOCK_KEY}});
    END IF;
    -- The common case first: the session's head, then the insert. An event id already in
    -- the log (an idempotent retry) is found by the insert itself (ON CONFLICT on the
    -- event id, the cheapest check there is), or, when the append would be refused, by
    -- memory_append_duplicate before refusing: a retry of an append that landed returns
    -- its original positions whatever its expected version says.
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
                USING ERRCODE = '{{SQLSTATE_CONCURRENCY}}', DETAIL = v_current::text;
        END IF;
        RAISE EXCEPTION 'session % belongs to actor %, not %', p_session, v_actor, p_actor
            USING ERRCODE = '{{SQLSTATE_OWNERSHIP}}';
    END IF;

    IF p_key_id IS NOT NULL AND NOT p_grouped THEN
        -- The actor key must still exist, and stays locked until commit: a forget that
        -- deletes it waits for this append, then deletes this batch's secrets too. A key
        -- already deleted (a stale cache) fails the request before anything is written.
        PERFORM FROM memory_keys k WHERE k.tenant = p_tenant AND k.key_id = p_key_id
            FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the data key % of actor % was destroyed', p_key_id, p_actor
                USING ERRCODE = '{{SQLSTATE_STALE_KEY}}';
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
                USING ERRCODE = '{{SQLSTATE_IDEMPOTENCY}}', DETAIL = v_bad::text;
        END IF;
        RETURN QUERY SELECT * FROM memory_append_duplicate(p_tenant, p_session, p_events);
        RETURN;
    END IF;
    IF p_key_id IS NOT NULL THEN
        INSERT INTO memory_event_secrets (tenant, batch, key_id, first_version, secrets)
        VALUES (p_tenant, p_batch, p_key_id, v_current + 1, p_secrets);
    END IF;
    IF NOT p_grouped THEN
        PERFORM pg_notify('{{NOTIFY_CHANNEL}}', '');  -- a wake-up for followers
    END IF;
END $$;

-- Several append requests in one statement and one transaction (one WAL flush), in
-- order, each in its own subtransaction, so request k sees what requests 0..k-1 wrote and
-- a failing request is rolled back alone. p_requests: a JSON array of objects {a: actor,
-- s: session, x: expected version or null, e: events, k: actor key id, b: batch, z:
-- secrets (base64)} (k, b, z null for clear events). Rows: the request's index and its
-- appended events, or one row with its error (SQLSTATE, message, detail, table).
CREATE FUNCTION memory_append_group(p_tenant text, p_requests jsonb)
RETURNS TABLE (req integer, event_id uuid, "position" bigint, version integer,
               recorded_at timestamptz, duplicate boolean, err_state text,
               err_message text, err_detail text, err_table text)
LANGUAGE plpgsql SECURITY DEFINER AS $$
#variable_conflict use_column
DECLARE
    -- Shape and size first: the declarations below read p_requests.
    v_shape integer := CASE WHEN jsonb_typeof(p_requests) IS DISTINCT FROM 'array'
                                 THEN memory_check_array(p_requests, 1000, 'requests')
                            WHEN jsonb_array_length(p_requests) BETWEEN 1 AND 1000 THEN 0
                            ELSE memory_check_array(p_requests, 1000, 'requests') END;
    v_r       jsonb;
    v_i       integer;
    v_state   text;
    v_message text;
    v_detail  text;
    v_table   text;
    v_live    text[];
BEGIN
    p_tenant := memory_caller_tenant(p_tenant);
    -- Held until commit: positions are handed out in commit order (no gaps for readers).
    PERFORM pg_advisory_xact_lock({{APPEND_LOCK_KEY}});
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
                                    v_r->>'k', v_r->>'a' USING ERRCODE = '{{SQLSTATE_STALE_KEY}}';
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
        PERFORM pg_notify('{{NOTIFY_CHANNEL}}', '');  -- a wake-up for followers
    END IF;
END $$;

-- The common case of a group, set-based: when every request's session is at the version
-- it expects and its actor's, each session once, every key alive, the whole group is one
-- INSERT (and one for the secrets rows of sealed requests), no subtransaction. Otherwise,
-- with nothing written, the group goes to memory_append_group, whose per-request rules are
-- the only rules. Raises {{SQLSTATE_RESEND}}, having written nothing, when an event id of the group is
-- in the log already (or twice in the group): the library then sends the group to
-- memory_append_group, which gives each request its own outcome (memory/log/group.py).
-- Checking first is safe: the append lock is taken first and held until commit, so no
-- other append writes a session head or an event id between the checks and the insert.
CREATE FUNCTION memory_append_set(p_tenant text, p_requests jsonb)
RETURNS TABLE (req integer, event_id uuid, "position" bigint, version integer,
               recorded_at timestamptz, duplicate boolean, err_state text,
               err_message text, err_detail text, err_table text)
LANGUAGE plpgsql SECURITY DEFINER AS $$
#variable_conflict use_column
DECLARE
    -- Shape and size first: the declarations below read p_requests.
    v_shape integer := CASE WHEN jsonb_typeof(p_requests) IS DISTINCT FROM 'array'
                                 THEN memory_check_array(p_requests, 1000, 'requests')
                            WHEN jsonb_array_length(p_requests) BETWEEN 1 AND 1000 THEN 0
                            ELSE memory_check_array(p_requests, 1000, 'requests') END;
    v_n       integer := jsonb_array_length(p_requests);
    v_r       jsonb;
    v_head    integer;
    v_owner   text;
    v_heads   integer[] := '{}';
    v_before  integer[] := '{}';
    v_seen    text[] := '{}';
    v_keys    text[] := '{}';
    v_total   integer := 0;
    v_first   bigint;
    v_written integer;
BEGIN
    p_tenant := memory_caller_tenant(p_tenant);
    -- Held until commit: positions are handed out in commit order (no gaps for readers).
    PERFORM pg_advisory_xact_lock({{APPEND_LOCK_KEY}});

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
        -- deletes its secrets rows too.
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
            USING ERRCODE = '{{SQLSTATE_RESEND}}';
    END IF;
    PERFORM pg_notify('{{NOTIFY_CHANNEL}}', '');  -- a wake-up for followers
END $$;

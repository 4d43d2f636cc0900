-- Keys, epochs and forgetting: the functions that create and destroy secrets.

-- The advisory lock that holds an epoch: shared by the appends sealed under it until they
-- commit, exclusive for a forget that destroys it (which therefore waits for them, and
-- which an append that comes later waits for, then finds the epoch gone).
CREATE FUNCTION memory_epoch_lock(p_epoch text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashtextextended('memory epoch ' || p_epoch, 0) $$;

-- Hold the epochs p_epochs until commit; {{SQLSTATE_STALE_KEY}} when one is gone. Returns the tenant,
-- which the group statements pass on to the append so that it runs after this. An
-- advisory lock, not FOR KEY SHARE on the epoch's row: a row lock wrote to the row at
-- every append and made a MultiXact with two appends of one actor in flight. One look-up
-- per epoch by equality: "= ANY (p_epochs)" gets a custom plan on every call.
CREATE FUNCTION memory_check_epochs(p_tenant text, p_epochs text[])
RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_epoch text;
BEGIN
    p_tenant := memory_caller_tenant(p_tenant);
    FOREACH v_epoch IN ARRAY p_epochs LOOP
        PERFORM pg_advisory_xact_lock_shared(memory_epoch_lock(v_epoch));
        PERFORM FROM memory_event_secrets s
         WHERE s.tenant = p_tenant AND s.batch = v_epoch AND s.batch LIKE 'e:%';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the epoch % was destroyed (a forget since it was made)',
                            v_epoch USING ERRCODE = '{{SQLSTATE_STALE_KEY}}';
        END IF;
    END LOOP;
    RETURN p_tenant;
END $$;

-- A new actor key (memory/log/sealing.py); a key already there for the actor wins (no row
-- written).
CREATE FUNCTION memory_create_key(p_tenant text, p_key_id text, p_actor text,
                                  p_wrapped bytea, p_master_id text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    p_tenant := memory_caller_tenant(p_tenant);
    IF p_key_id !~ '^[0-9a-f]{32}$' OR octet_length(p_wrapped) NOT BETWEEN 1 AND 1024
       OR octet_length(p_master_id) NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'a malformed actor key' USING ERRCODE = '{{SQLSTATE_MALFORMED}}';
    END IF;
    INSERT INTO memory_keys (tenant, key_id, actor_id, wrapped, master_id)
    VALUES (p_tenant, p_key_id, p_actor, p_wrapped, p_master_id)
    ON CONFLICT (tenant, actor_id) DO NOTHING;
END $$;

-- A new epoch under a live actor key; false when the key is gone. The key stays locked
-- until commit, so a forget of the actor waits, then deletes the epoch.
CREATE FUNCTION memory_create_epoch(p_tenant text, p_epoch text, p_secret bytea,
                                    p_key_id text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_made integer;
BEGIN
    p_tenant := memory_caller_tenant(p_tenant);
    IF p_epoch !~ '^e:[0-9a-f]{32}$' OR octet_length(p_secret) <> 32 THEN
        RAISE EXCEPTION 'a malformed epoch' USING ERRCODE = '{{SQLSTATE_MALFORMED}}';
    END IF;
    INSERT INTO memory_event_secrets (tenant, batch, key_id, first_version, secrets)
    SELECT k.tenant, p_epoch, k.key_id, 0, p_secret FROM memory_keys k
     WHERE k.tenant = p_tenant AND k.key_id = p_key_id FOR KEY SHARE;
    GET DIAGNOSTICS v_made = ROW_COUNT;
    RETURN v_made > 0;
END $$;

-- Forgetting an actor: hold, exclusively, the epochs under p_keys (the appends holding
-- them are waited for), in name order as appends lock them. Only epochs of the caller's
-- tenant. Returns how many.
CREATE FUNCTION memory_lock_epochs(p_tenant text, p_keys text[])
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_epoch text;
    v_n     integer := 0;
BEGIN
    p_tenant := memory_caller_tenant(p_tenant);
    FOR v_epoch IN
        SELECT s.batch FROM memory_event_secrets s
         WHERE s.tenant = p_tenant AND s.key_id = ANY (p_keys) AND s.batch LIKE 'e:%'
         ORDER BY s.batch COLLATE "C"
    LOOP
        PERFORM pg_advisory_xact_lock(memory_epoch_lock(v_epoch));
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END $$;

-- Forgetting events: hold one epoch exclusively (its advisory lock, then its row FOR
-- UPDATE) and return its actor key id and secret; no row when it is not (or no longer)
-- an epoch of the caller's tenant.
CREATE FUNCTION memory_lock_epoch(p_tenant text, p_epoch text)
RETURNS TABLE (key_id text, secrets bytea)
LANGUAGE plpgsql SECURITY DEFINER AS $$
#variable_conflict use_column
BEGIN
    p_tenant := memory_caller_tenant(p_tenant);
    PERFORM FROM memory_event_secrets s WHERE s.tenant = p_tenant AND s.batch = p_epoch;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(memory_epoch_lock(p_epoch));
    RETURN QUERY SELECT s.key_id, s.secrets FROM memory_event_secrets s
                  WHERE s.tenant = p_tenant AND s.batch = p_epoch FOR UPDATE;
END $$;

-- Forget single events: zero their 32 bytes in their batch's secrets row (events with a
-- memory_event_keys row: null it). Returns how many secrets were destroyed (0 for an
-- event already forgotten).
CREATE FUNCTION memory_forget_secrets(p_tenant text, p_event_ids uuid[])
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_zero  bytea := decode(repeat('00', 32), 'hex');
    v_done  integer := 0;
    v_count integer;
    v_event record;
BEGIN
    p_tenant := memory_caller_tenant(p_tenant);
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

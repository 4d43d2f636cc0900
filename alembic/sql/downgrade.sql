-- Everything the baseline made in this database, gone: the tenant roles it mapped (roles
-- are cluster-wide; one still used elsewhere stays, with a notice), {{APP_ROLE}}'s privileges
-- here, the advisory-lock functions given back to PUBLIC, then the functions, tables,
-- policies (with their tables) and the sequence. {{APP_ROLE}} itself stays: other databases of
-- the cluster may use it (DROP ROLE {{APP_ROLE}} by hand once none does). The vector extension
-- stays too: other schemas may use it.
DO $$
DECLARE
    v_fn   regprocedure;
    v_role text;
BEGIN
    BEGIN
        FOR v_fn IN
            SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'pg_catalog'::regnamespace
               AND (p.proname LIKE 'pg\_advisory\_%' OR p.proname LIKE 'pg\_try\_advisory\_%')
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', v_fn);
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    FOR v_role IN SELECT role_name FROM memory_tenant_roles LOOP
        BEGIN
            EXECUTE format('DROP ROLE IF EXISTS %I', v_role);
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'memory: role % is still in use; drop it by hand', v_role;
        END;
    END LOOP;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{{APP_ROLE}}') THEN
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM {{APP_ROLE}}', current_schema());
        EXECUTE format('REVOKE ALL ON DATABASE %I FROM {{APP_ROLE}}', current_database());
    END IF;
END $$;

DROP FUNCTION memory_forget_secrets(text, uuid[]);
DROP FUNCTION memory_lock_epoch(text, text);
DROP FUNCTION memory_lock_epochs(text, text[]);
DROP FUNCTION memory_create_epoch(text, text, bytea, text);
DROP FUNCTION memory_create_key(text, text, text, bytea, text);
DROP FUNCTION memory_check_epochs(text, text[]);
DROP FUNCTION memory_epoch_lock(text);
DROP FUNCTION memory_append_set(text, jsonb);
DROP FUNCTION memory_append_group(text, jsonb);
DROP FUNCTION memory_append_request(text, text, text, bigint, jsonb, text, text, bytea,
                                    boolean);
DROP FUNCTION memory_append_duplicate(text, text, jsonb);
DROP FUNCTION memory_append(text, text, text, bigint, uuid[], text[], integer[], jsonb[],
                            bytea[], text[], jsonb[], bytea[], timestamptz[]);
DROP FUNCTION memory_secure_table(regclass, boolean);
DROP FUNCTION memory_check_array(jsonb, integer, text);
DROP FUNCTION memory_ensure_tenant_role(text, text);

-- The tables, with their indexes, policies and the append-only trigger.
DROP TABLE memory_quarantine;
DROP TABLE memory_words;
DROP TABLE memory_summary_state;
DROP TABLE memory_summaries;
DROP TABLE memory_chunks;
DROP TABLE memory_projections;
DROP TABLE memory_event_secrets;
DROP TABLE memory_forget_requests;
DROP TABLE memory_event_keys;
DROP TABLE memory_keys;
DROP TABLE memory_events;
DROP SEQUENCE memory_events_position_seq;
DROP FUNCTION memory_events_refuse_change();

-- Last: the policies above called memory_tenant(), and it reads the role map.
DROP FUNCTION memory_caller_tenant(text);
DROP FUNCTION memory_tenant();
DROP TABLE memory_tenant_roles;

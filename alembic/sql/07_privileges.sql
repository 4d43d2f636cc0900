-- Least privilege: the tenant roles (members of {{APP_ROLE}}) read their own tenant's rows and
-- write only through the SECURITY DEFINER functions, plus the deletions forgetting makes.
DO $$
DECLARE
    v_schema text := current_schema();
    v_fn     regprocedure;
    v_table  text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{{APP_ROLE}}') THEN
        CREATE ROLE {{APP_ROLE}} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
    -- A group, not a login: the library logs in as tenant roles. Made by another database
    -- of the cluster, or by hand: its attributes are set here either way.
    ALTER ROLE {{APP_ROLE}} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
        NOREPLICATION;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO {{APP_ROLE}}', current_database());
    BEGIN
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', v_schema);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'memory: cannot revoke CREATE on schema % from PUBLIC', v_schema;
    END;
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM {{APP_ROLE}}', v_schema);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {{APP_ROLE}}', v_schema);
    -- Nothing on the position sequence; the projections' bookkeeping is read-only.
    REVOKE ALL ON SEQUENCE memory_events_position_seq FROM {{APP_ROLE}};
    REVOKE ALL ON memory_projections FROM {{APP_ROLE}};
    GRANT SELECT ON memory_projections TO {{APP_ROLE}};
    REVOKE ALL ON memory_tenant_roles FROM PUBLIC;

    -- Every table with a tenant column: forced row-level security, SELECT only.
    FOR v_table IN
        SELECT c.table_name FROM information_schema.columns c
          JOIN information_schema.tables t
            ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = v_schema AND c.column_name = 'tenant'
           AND t.table_type = 'BASE TABLE'
    LOOP
        PERFORM memory_secure_table(v_table::regclass);
    END LOOP;
    -- What a tenant may still write directly, each confined by row-level security to its
    -- own tenant: forgetting's deletions (keys, secrets, derived rows, quarantined entries,
    -- whose error may quote the event), the event keys it keeps, and its request rows.
    GRANT DELETE ON memory_keys TO {{APP_ROLE}};
    GRANT DELETE ON memory_event_secrets TO {{APP_ROLE}};
    GRANT INSERT, DELETE ON memory_event_keys TO {{APP_ROLE}};
    GRANT INSERT, UPDATE ON memory_forget_requests TO {{APP_ROLE}};
    GRANT DELETE ON memory_chunks TO {{APP_ROLE}};
    GRANT DELETE ON memory_summaries TO {{APP_ROLE}};
    GRANT DELETE ON memory_summary_state TO {{APP_ROLE}};
    GRANT UPDATE, DELETE ON memory_words TO {{APP_ROLE}};
    GRANT DELETE ON memory_quarantine TO {{APP_ROLE}};

    -- The library's functions: nobody but the owner, then {{APP_ROLE}} the ones it calls.
    FOR v_fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
         WHERE p.pronamespace = v_schema::regnamespace AND p.proname LIKE 'memory\_%'
           AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                              AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, {{APP_ROLE}}', v_fn);
    END LOOP;
    GRANT EXECUTE ON FUNCTION memory_tenant() TO {{APP_ROLE}};
    GRANT EXECUTE ON FUNCTION memory_append_request(text, text, text, bigint, jsonb, text,
                                                    text, bytea, boolean) TO {{APP_ROLE}};
    GRANT EXECUTE ON FUNCTION memory_append_group(text, jsonb) TO {{APP_ROLE}};
    GRANT EXECUTE ON FUNCTION memory_append_set(text, jsonb) TO {{APP_ROLE}};
    GRANT EXECUTE ON FUNCTION memory_check_epochs(text, text[]) TO {{APP_ROLE}};
    GRANT EXECUTE ON FUNCTION memory_forget_secrets(text, uuid[]) TO {{APP_ROLE}};
    GRANT EXECUTE ON FUNCTION memory_create_key(text, text, text, bytea, text) TO {{APP_ROLE}};
    GRANT EXECUTE ON FUNCTION memory_create_epoch(text, text, bytea, text) TO {{APP_ROLE}};
    GRANT EXECUTE ON FUNCTION memory_lock_epochs(text, text[]) TO {{APP_ROLE}};
    GRANT EXECUTE ON FUNCTION memory_lock_epoch(text, text) TO {{APP_ROLE}};

    -- Every SECURITY DEFINER function resolves names in this schema only (pg_temp last, so
    -- a caller's temporary table cannot stand in for one of ours).
    FOR v_fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
         WHERE p.pronamespace = v_schema::regnamespace AND p.proname LIKE 'memory\_%'
           AND p.prosecdef
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                       v_fn, v_schema);
    END LOOP;

    -- The advisory locks (the append lock, epochs, projections) are the owner's: taken
    -- only inside its functions and on its maintenance connections.
    BEGIN
        FOR v_fn IN
            SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'pg_catalog'::regnamespace
               AND (p.proname LIKE 'pg\_advisory\_%' OR p.proname LIKE 'pg\_try\_advisory\_%')
        LOOP
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', v_fn);
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'memory: only a superuser can revoke the advisory-lock functions '
                     'from PUBLIC; tenants can still take the append lock';
    END;
END $$;

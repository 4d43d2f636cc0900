-- Tenancy: which tenant a connection acts for, and the row-level security built on it.

-- The tenant of the login role of this session; NULL for any other. session_user, not
-- current_user: inside a SECURITY DEFINER function current_user is the owner.
CREATE FUNCTION memory_tenant() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
AS $$ SELECT r.tenant_name FROM memory_tenant_roles r WHERE r.role_name = session_user $$;

-- The tenant a call acts for: a tenant role's own ({{SQLSTATE_TENANT}} when p_tenant names another),
-- or, for the owner (a member of the role that owns these functions), p_tenant. Called
-- only by the SECURITY DEFINER functions (so as the owner, with their search_path): not
-- one itself, which saves a second switch of role and settings per call.
CREATE FUNCTION memory_caller_tenant(p_tenant text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_tenant text;
BEGIN
    SELECT r.tenant_name INTO v_tenant FROM memory_tenant_roles r
     WHERE r.role_name = session_user;
    IF v_tenant IS NULL THEN
        IF p_tenant IS NOT NULL AND pg_has_role(session_user, current_user, 'USAGE') THEN
            RETURN p_tenant;
        END IF;
        RAISE EXCEPTION 'role % acts for no tenant of this database', session_user
            USING ERRCODE = '{{SQLSTATE_TENANT}}';
    END IF;
    IF p_tenant IS NOT NULL AND p_tenant <> v_tenant THEN
        RAISE EXCEPTION 'this connection acts for another tenant than the one named'
            USING ERRCODE = '{{SQLSTATE_TENANT}}',
                  HINT = 'A tenant''s role reads and writes its own tenant only.';
    END IF;
    RETURN v_tenant;
END $$;

-- The role of p_tenant in this database, created (LOGIN, a member of {{APP_ROLE}}) when
-- missing, mapped, its session defaults reset, and given p_password (a SCRAM verifier,
-- or NULL to leave it) when set. Executable by the owner only (memory/pg/tenancy.py).
CREATE FUNCTION memory_ensure_tenant_role(p_tenant text, p_password text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_role   text;
    v_mapped text;
BEGIN
    IF p_tenant IS NULL OR p_tenant = '' OR octet_length(p_tenant) > 4096 THEN
        RAISE EXCEPTION 'a tenant is a non-empty text of at most 4096 bytes'
            USING ERRCODE = '{{SQLSTATE_MALFORMED}}';
    END IF;
    v_role := '{{ROLE_PREFIX}}' || left(encode(sha256(
        convert_to(current_database(), 'UTF8') || '\x1f'::bytea
        || convert_to(p_tenant, 'UTF8')), 'hex'), 24);
    SELECT r.tenant_name INTO v_mapped FROM memory_tenant_roles r WHERE r.role_name = v_role;
    IF v_mapped IS NOT NULL AND v_mapped <> p_tenant THEN
        RAISE EXCEPTION 'tenant role % already maps another tenant', v_role
            USING ERRCODE = '{{SQLSTATE_MALFORMED}}';
    END IF;
    IF v_mapped IS NULL THEN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = v_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I LOGIN', v_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- made by a concurrent call
            END;
        END IF;
        -- Made here or left by a dropped database of the same name: attributes and the
        -- one membership a tenant role has, either way.
        EXECUTE format('ALTER ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB '
                       'NOCREATEROLE NOREPLICATION INHERIT', v_role);
        IF current_setting('server_version_num')::int >= 160000 THEN
            EXECUTE format('GRANT {{APP_ROLE}} TO %I WITH INHERIT TRUE, SET FALSE', v_role);
        ELSE
            EXECUTE format('GRANT {{APP_ROLE}} TO %I', v_role);
        END IF;
        INSERT INTO memory_tenant_roles (role_name, tenant_name) VALUES (v_role, p_tenant)
        ON CONFLICT (role_name) DO NOTHING;
    END IF;
    -- A role may change its own password and session defaults: both are reset here.
    EXECUTE format('ALTER ROLE %I RESET ALL', v_role);
    IF p_password IS NOT NULL THEN
        EXECUTE format('ALTER ROLE %I PASSWORD %L', v_role, p_password);
    END IF;
    RETURN v_role;
END $$;

-- p_value when it is a JSON array of 1 to p_max elements; {{SQLSTATE_MALFORMED}} otherwise. The
-- functions that take arrays call it only for bad input (their check is an expression).
CREATE FUNCTION memory_check_array(p_value jsonb, p_max integer, p_what text)
RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF jsonb_typeof(p_value) IS DISTINCT FROM 'array'
       OR jsonb_array_length(p_value) NOT BETWEEN 1 AND p_max THEN
        RAISE EXCEPTION 'the % of an append must be a JSON array of 1 to % elements',
                        p_what, p_max USING ERRCODE = '{{SQLSTATE_MALFORMED}}';
    END IF;
    RETURN jsonb_array_length(p_value);
END $$;

-- Tenant isolation for one table: FORCEd row-level security keyed on the login role's
-- tenant, SELECT for {{APP_ROLE}} (p_writable: INSERT, UPDATE and DELETE too). Idempotent; a
-- later migration that adds a table with a tenant column calls it.
CREATE FUNCTION memory_secure_table(p_table regclass, p_writable boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
    EXECUTE format('DROP POLICY IF EXISTS memory_tenant ON %s', p_table);
    EXECUTE format('CREATE POLICY memory_tenant ON %s '
                   'USING (tenant = (SELECT memory_tenant())) '
                   'WITH CHECK (tenant = (SELECT memory_tenant()))', p_table);
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{{APP_ROLE}}') THEN
        EXECUTE format('REVOKE ALL ON %s FROM {{APP_ROLE}}', p_table);
        EXECUTE format('GRANT SELECT ON %s TO {{APP_ROLE}}', p_table);
        IF p_writable THEN
            EXECUTE format('GRANT INSERT, UPDATE, DELETE ON %s TO {{APP_ROLE}}', p_table);
        END IF;
    END IF;
END $$;

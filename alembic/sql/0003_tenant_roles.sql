-- Tenant roles belong to one database (alembic/versions/0003_tenant_roles.py): a mapping row
-- counts only when its role is the one this database gives its tenant, so the rows a copy
-- of the database (CREATE DATABASE ... TEMPLATE) carries over from its source grant the
-- source's roles nothing here, and the copy's own roles replace them on first use.

-- The tenant of the login role of this session; NULL for any other. session_user, not
-- current_user: inside a SECURITY DEFINER function current_user is the owner. A role maps
-- to its tenant only under the name this database derives for that tenant (a row copied
-- from another database, or kept from before a rename, names another role and is ignored).
CREATE OR REPLACE FUNCTION memory_tenant() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
AS $$ SELECT r.tenant_name FROM memory_tenant_roles r
       WHERE r.role_name = session_user
         AND r.role_name = '{{ROLE_PREFIX}}' || left(encode(sha256(
             convert_to(current_database(), 'UTF8') || '\x1f'::bytea
             || convert_to(r.tenant_name, 'UTF8')), 'hex'), 24) $$;

-- The tenant a call acts for: a tenant role's own ({{SQLSTATE_TENANT}} when p_tenant names another),
-- or, for the owner (a member of the role that owns these functions), p_tenant. Called
-- only by the SECURITY DEFINER functions (so as the owner, with their search_path): not
-- one itself, which saves a second switch of role and settings per call. A mapping row
-- counts only under this database's name for the tenant's role, as in memory_tenant().
CREATE OR REPLACE FUNCTION memory_caller_tenant(p_tenant text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_tenant text;
BEGIN
    SELECT r.tenant_name INTO v_tenant FROM memory_tenant_roles r
     WHERE r.role_name = session_user
       AND r.role_name = '{{ROLE_PREFIX}}' || left(encode(sha256(
           convert_to(current_database(), 'UTF8') || '\x1f'::bytea
           || convert_to(r.tenant_name, 'UTF8')), 'hex'), 24);
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
-- A row mapping p_tenant to another role (one of the database this one was copied from,
-- which grants nothing here) gives way to this database's role.
CREATE OR REPLACE FUNCTION memory_ensure_tenant_role(p_tenant text, p_password text DEFAULT NULL)
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
        DELETE FROM memory_tenant_roles r WHERE r.tenant_name = p_tenant;
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

-- CREATE OR REPLACE resets a function's settings: the SECURITY DEFINER ones get their
-- pinned search_path back (as alembic/sql/07_privileges.sql sets it).
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION memory_tenant() '
                   'SET search_path = pg_catalog, %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION memory_ensure_tenant_role(text, text) '
                   'SET search_path = pg_catalog, %I, pg_temp', current_schema());
END $$;

-- Rows of another database's roles, carried here by a copy made before this migration:
-- they grant nothing any more; gone, so the mapping names only this database's roles.
DELETE FROM memory_tenant_roles r
 WHERE r.role_name <> '{{ROLE_PREFIX}}' || left(encode(sha256(
       convert_to(current_database(), 'UTF8') || '\x1f'::bytea
       || convert_to(r.tenant_name, 'UTF8')), 'hex'), 24);

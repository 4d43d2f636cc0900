"""Least privilege: per-tenant login roles, writes only through SECURITY DEFINER functions.

Revision ID: 0010
Revises: 0009

Why
---
Until 0009 the tenant was the session setting ``memory.tenant``, which the application's
role set itself: one injected ``SET memory.tenant = 'other'`` read another tenant, and the
role could insert into the log, move the position sequence, rewrite the projections'
checkpoints and take the append lock.

The tenant binding
------------------
Each tenant of a database has its own LOGIN role, ``memory_t_`` + the first 24 hex digits
of ``sha256(current_database() || 0x1f || tenant)``, made by
``memory_ensure_tenant_role`` (SECURITY DEFINER, executable by the owner only; the library
calls it on its maintenance connection, memory/pg/tenancy.py). ``memory_tenant_roles``
(owner-only) maps role to tenant, and ``memory_tenant()`` (SECURITY DEFINER, STABLE)
returns the tenant of ``session_user``: the role the connection logged in as, which no
statement of that session can change (SET ROLE changes ``current_user`` only, and a
tenant role is a member of nothing it may SET ROLE to; SET SESSION AUTHORIZATION needs a
superuser). ``session_user``, not ``current_user``: inside a SECURITY DEFINER function,
``current_user`` is the function's owner, and the append functions below need the
caller's tenant. Any other login (``memory_app`` does not log in any more, the owner, a
stranger) maps to NULL and sees no row. Every tenant table's policy is
``tenant = (SELECT memory_tenant())`` (an initplan: one call per statement).

Privileges
----------
``memory_app`` becomes a NOLOGIN group role; tenant roles are its members (INHERIT TRUE,
SET FALSE on PostgreSQL 16 and later). It holds: USAGE on the schema, SELECT on every
tenant table and on ``memory_projections``, EXECUTE on the functions the library calls,
and the direct writes of forgetting that row-level security confines to the caller's own
tenant (``LEFTOVER_GRANTS``; tests/pg/test_least_privilege.py holds the whole allow-list).
Nothing on the position sequence, no INSERT/UPDATE/DELETE on ``memory_events``, nothing
written to ``memory_projections``. The append functions (0001, 0005-0008) and the other
functions that write become SECURITY DEFINER with a pinned ``search_path``, and take the
tenant from ``memory_caller_tenant``: a tenant role may name only its own tenant (MM030
otherwise); the owner (a member of the functions' owner role) may name any. Their bodies
are the ones the earlier migrations created, read back from the catalog, with the check
inserted first; the wake-up they send (NOTIFY) no longer carries the tenant's name, which
every listener could read.

EXECUTE on every ``pg_advisory_*`` and ``pg_try_advisory_*`` function is revoked from
PUBLIC in this database (needs a superuser; the append lock, the epoch locks and the
projections' locks are then taken only inside the owner's functions and connections).
Forgetting locks epochs through ``memory_lock_epochs`` and ``memory_lock_epoch``, which
lock only epochs that exist in the caller's tenant.

``memory_secure_table(table)`` now gives SELECT only (``p_writable`` adds INSERT, UPDATE
and DELETE, for a table whose rows a tenant may change freely); later migrations that add
a tenant table call it.
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

APPEND_LOCK_KEY = 7_263_520_011

# The functions of earlier migrations that become SECURITY DEFINER, with the block each
# gets first. ``p_tenant := memory_caller_tenant(p_tenant)`` refuses another tenant's name.
# memory_append_request with p_grouped set skipped the append lock because its group
# holds it: a direct call now takes it too (re-entrant, nearly free when held).
_CHECK = "    p_tenant := memory_caller_tenant(p_tenant);\n"
# Shapes and sizes, checked in the first declaration: the functions' own declarations
# read them (jsonb_array_length) before their bodies begin. The check is an expression
# (PL/pgSQL's cheap path); memory_check_array, which raises, runs only for bad input.


def _shape(param: str, most: int, what: str) -> str:
    check = f"memory_check_array({param}, {most}, '{what}')"
    return (f"    v_shape_0010 integer := CASE WHEN jsonb_typeof({param}) IS DISTINCT FROM "
            f"'array' THEN {check} WHEN jsonb_array_length({param}) BETWEEN 1 AND {most} "
            f"THEN 0 ELSE {check} END;  -- least privilege (0010)\n")


_EVENTS = _shape("p_events", 100000, "events")
_REQUESTS = _shape("p_requests", 1000, "requests")

CHECKED = {
    "memory_append(text, text, text, bigint, uuid[], text[], integer[], jsonb[], bytea[], "
    "text[], jsonb[], bytea[], timestamptz[])": ("", _CHECK),
    "memory_append_request(text, text, text, bigint, jsonb, text, text, bytea, boolean)": (
        _EVENTS, _CHECK + f"""    IF p_grouped THEN
        PERFORM pg_advisory_xact_lock({APPEND_LOCK_KEY});
    END IF;
"""),
    "memory_append_duplicate(text, text, jsonb)": (_EVENTS, _CHECK),
    "memory_append_group(text, jsonb)": (_REQUESTS, _CHECK),
    "memory_append_set(text, jsonb)": (_REQUESTS, _CHECK),
    "memory_check_epochs(text, text[])": ("", _CHECK),
    "memory_forget_secrets(text, uuid[])": ("", _CHECK),
}
OPEN, CLOSE = "    -- least privilege (0010) {\n", "    -- } least privilege (0010)\n"
NOTIFY_BEFORE = "pg_notify('memory_events', p_tenant)"
NOTIFY_AFTER = "pg_notify('memory_events', '')"

# What memory_app may still write directly, each confined by row-level security to the
# caller's own tenant: forgetting's deletions (keys, secrets, derived rows), the event keys
# it keeps, and its request rows. Every other write goes through a function.
LEFTOVER_GRANTS = {
    "memory_keys": "DELETE",
    "memory_event_secrets": "DELETE",
    "memory_event_keys": "INSERT, DELETE",
    "memory_forget_requests": "INSERT, UPDATE",
    "memory_chunks": "DELETE",
    "memory_summaries": "DELETE",
    "memory_summary_state": "DELETE",
    "memory_words": "UPDATE, DELETE",
}

# The functions memory_app may call (every other memory_* function is the owner's).
APP_FUNCTIONS = [
    "memory_tenant()",
    "memory_append_request(text, text, text, bigint, jsonb, text, text, bytea, boolean)",
    "memory_append_group(text, jsonb)",
    "memory_append_set(text, jsonb)",
    "memory_check_epochs(text, text[])",
    "memory_forget_secrets(text, uuid[])",
    "memory_create_key(text, text, text, bytea, text)",
    "memory_create_epoch(text, text, bytea, text)",
    "memory_lock_epochs(text, text[])",
    "memory_lock_epoch(text, text)",
]

FUNCTIONS = """
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

-- The tenant of the login role of this session; NULL for any other.
CREATE FUNCTION memory_tenant() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
AS $$ SELECT r.tenant_name FROM memory_tenant_roles r WHERE r.role_name = session_user $$;

-- The tenant a call acts for: a tenant role's own (MM030 when p_tenant names another),
-- or, for the owner (a member of the role that owns these functions), p_tenant. Called
-- only by the SECURITY DEFINER functions below (so as the owner, with their search_path):
-- not one itself, which saves a second switch of role and settings per call.
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
            USING ERRCODE = 'MM030';
    END IF;
    IF p_tenant IS NOT NULL AND p_tenant <> v_tenant THEN
        RAISE EXCEPTION 'this connection acts for another tenant than the one named'
            USING ERRCODE = 'MM030',
                  HINT = 'A tenant''s role reads and writes its own tenant only.';
    END IF;
    RETURN v_tenant;
END $$;

-- The role of p_tenant in this database, created (LOGIN, a member of memory_app) when
-- missing, mapped, its session defaults reset, and given p_password (a SCRAM verifier,
-- or NULL to leave it) when set.
CREATE FUNCTION memory_ensure_tenant_role(p_tenant text, p_password text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_role   text;
    v_mapped text;
BEGIN
    IF p_tenant IS NULL OR p_tenant = '' OR octet_length(p_tenant) > 4096 THEN
        RAISE EXCEPTION 'a tenant is a non-empty text of at most 4096 bytes'
            USING ERRCODE = 'MM031';
    END IF;
    v_role := 'memory_t_' || left(encode(sha256(
        convert_to(current_database(), 'UTF8') || '\\x1f'::bytea
        || convert_to(p_tenant, 'UTF8')), 'hex'), 24);
    SELECT r.tenant_name INTO v_mapped FROM memory_tenant_roles r WHERE r.role_name = v_role;
    IF v_mapped IS NOT NULL AND v_mapped <> p_tenant THEN
        RAISE EXCEPTION 'tenant role % already maps another tenant', v_role
            USING ERRCODE = 'MM031';
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
            EXECUTE format('GRANT memory_app TO %I WITH INHERIT TRUE, SET FALSE', v_role);
        ELSE
            EXECUTE format('GRANT memory_app TO %I', v_role);
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

-- p_value when it is a JSON array of 1 to p_max elements; MM031 otherwise.
CREATE FUNCTION memory_check_array(p_value jsonb, p_max integer, p_what text)
RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF jsonb_typeof(p_value) IS DISTINCT FROM 'array'
       OR jsonb_array_length(p_value) NOT BETWEEN 1 AND p_max THEN
        RAISE EXCEPTION 'the % of an append must be a JSON array of 1 to % elements',
                        p_what, p_max USING ERRCODE = 'MM031';
    END IF;
    RETURN jsonb_array_length(p_value);
END $$;

-- A new actor key (crypto.py); a key already there for the actor wins (no row written).
CREATE FUNCTION memory_create_key(p_tenant text, p_key_id text, p_actor text,
                                  p_wrapped bytea, p_master_id text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    p_tenant := memory_caller_tenant(p_tenant);
    IF p_key_id !~ '^[0-9a-f]{32}$' OR octet_length(p_wrapped) NOT BETWEEN 1 AND 1024
       OR octet_length(p_master_id) NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'a malformed actor key' USING ERRCODE = 'MM031';
    END IF;
    INSERT INTO memory_keys (tenant, key_id, actor_id, wrapped, master_id)
    VALUES (p_tenant, p_key_id, p_actor, p_wrapped, p_master_id)
    ON CONFLICT (tenant, actor_id) DO NOTHING;
END $$;

-- A new epoch under a live actor key (crypto.py, 0007); false when the key is gone. The
-- key stays locked until commit, so a forget of the actor waits, then deletes the epoch.
CREATE FUNCTION memory_create_epoch(p_tenant text, p_epoch text, p_secret bytea,
                                    p_key_id text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_made integer;
BEGIN
    p_tenant := memory_caller_tenant(p_tenant);
    IF p_epoch !~ '^e:[0-9a-f]{32}$' OR octet_length(p_secret) <> 32 THEN
        RAISE EXCEPTION 'a malformed epoch' USING ERRCODE = 'MM031';
    END IF;
    INSERT INTO memory_event_secrets (tenant, batch, key_id, first_version, secrets)
    SELECT k.tenant, p_epoch, k.key_id, 0, p_secret FROM memory_keys k
     WHERE k.tenant = p_tenant AND k.key_id = p_key_id FOR KEY SHARE;
    GET DIAGNOSTICS v_made = ROW_COUNT;
    RETURN v_made > 0;
END $$;

-- Forgetting an actor: hold, exclusively, the epochs under p_keys (the appends holding
-- them are waited for, 0007), in name order as appends lock them. Only epochs of the
-- caller's tenant. Returns how many.
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

-- Tenant isolation for one table: FORCEd row-level security keyed on the login role's
-- tenant, SELECT for memory_app (p_writable: INSERT, UPDATE and DELETE too). Idempotent.
DROP FUNCTION memory_secure_table(regclass, boolean);
CREATE FUNCTION memory_secure_table(p_table regclass, p_writable boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
    EXECUTE format('DROP POLICY IF EXISTS memory_tenant ON %s', p_table);
    EXECUTE format('CREATE POLICY memory_tenant ON %s '
                   'USING (tenant = (SELECT memory_tenant())) '
                   'WITH CHECK (tenant = (SELECT memory_tenant()))', p_table);
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'memory_app') THEN
        EXECUTE format('REVOKE ALL ON %s FROM memory_app', p_table);
        EXECUTE format('GRANT SELECT ON %s TO memory_app', p_table);
        IF p_writable THEN
            EXECUTE format('GRANT INSERT, UPDATE, DELETE ON %s TO memory_app', p_table);
        END IF;
    END IF;
END $$;
"""


def _rewrite_sql(signature: str, declare: str, block: str) -> str:
    """Re-create one function with ``declare`` first in its declarations and ``block``
    first in its body (its text as the catalog holds it), then make it SECURITY DEFINER
    with a pinned search_path."""
    old, new = "E'\\nBEGIN\\n'", "E'\\nBEGIN\\n' || " + _literal(OPEN + block + CLOSE)
    decl_old = "E'\\nDECLARE\\n'"
    decl_new = "E'\\nDECLARE\\n' || " + _literal(declare)
    return f"""
DO $$
DECLARE
    v_def text := pg_get_functiondef('{signature}'::regprocedure);
BEGIN
    IF position({old} in v_def) = 0 THEN
        RAISE EXCEPTION 'memory 0010: % has no top-level BEGIN', '{signature}';
    END IF;
    v_def := overlay(v_def PLACING {new} FROM position({old} in v_def) FOR 7);
    IF {_literal(declare)} <> '' THEN
        IF position({decl_old} in v_def) = 0 THEN
            RAISE EXCEPTION 'memory 0010: % has no DECLARE', '{signature}';
        END IF;
        v_def := overlay(v_def PLACING {decl_new} FROM position({decl_old} in v_def) FOR 9);
    END IF;
    v_def := replace(v_def, {_literal(NOTIFY_BEFORE)}, {_literal(NOTIFY_AFTER)});
    EXECUTE v_def;
    EXECUTE format('ALTER FUNCTION {signature} SECURITY DEFINER '
                   'SET search_path = pg_catalog, %I, pg_temp', current_schema());
END $$;
"""


def _restore_sql(signature: str, declare: str) -> str:
    """Undo :func:`_rewrite_sql` (the block and the settings go, the body stays)."""
    return f"""
DO $$
DECLARE
    v_def   text := pg_get_functiondef('{signature}'::regprocedure);
    v_start integer := position({_literal(OPEN)} in v_def);
    v_end   integer := position({_literal(CLOSE)} in v_def);
BEGIN
    IF v_start > 0 AND v_end > v_start THEN
        v_def := overlay(v_def PLACING '' FROM v_start
                         FOR v_end - v_start + {len(CLOSE)});
    END IF;
    v_def := replace(v_def, {_literal(NOTIFY_AFTER)}, {_literal(NOTIFY_BEFORE)});
    IF {_literal(declare)} <> '' THEN
        v_def := replace(v_def, {_literal(declare)}, '');
    END IF;
    EXECUTE v_def;
    ALTER FUNCTION {signature} SECURITY INVOKER RESET search_path;
END $$;
"""


def _literal(text: str) -> str:
    """A SQL string literal (E'' form, newlines escaped) of ``text``."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


PRIVILEGES = """
DO $$
DECLARE
    v_schema text := current_schema();
    v_fn     regprocedure;
    v_table  text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'memory_app') THEN
        CREATE ROLE memory_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
    -- A group, not a login: the library logs in as tenant roles.
    ALTER ROLE memory_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE
        NOREPLICATION;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO memory_app', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO memory_app', v_schema);
    BEGIN
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', v_schema);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'memory: cannot revoke CREATE on schema % from PUBLIC', v_schema;
    END;
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM memory_app', v_schema);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO memory_app', v_schema);
    REVOKE ALL ON SEQUENCE memory_events_position_seq FROM memory_app;
    REVOKE ALL ON memory_projections FROM memory_app;
    GRANT SELECT ON memory_projections TO memory_app;
    REVOKE ALL ON memory_tenant_roles FROM PUBLIC;

    -- Every tenant table: the new policy, SELECT only; then the leftover writes.
    FOR v_table IN
        SELECT c.table_name FROM information_schema.columns c
          JOIN information_schema.tables t
            ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = v_schema AND c.column_name = 'tenant'
           AND t.table_type = 'BASE TABLE'
    LOOP
        PERFORM memory_secure_table(v_table::regclass);
    END LOOP;
    LEFTOVER

    -- The library's functions: nobody but the owner, then memory_app the ones it calls.
    FOR v_fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
         WHERE p.pronamespace = v_schema::regnamespace AND p.proname LIKE 'memory\\_%'
           AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                              AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, memory_app', v_fn);
    END LOOP;
    APP_FUNCTIONS
    -- Every SECURITY DEFINER function resolves names in this schema only (pg_temp last, so
    -- a caller's temporary table cannot stand in for one of ours).
    FOR v_fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
         WHERE p.pronamespace = v_schema::regnamespace AND p.proname LIKE 'memory\\_%'
           AND p.prosecdef
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp',
                       v_fn, v_schema);
    END LOOP;

    -- The advisory locks (the append lock, epochs, projections) are the owner's.
    BEGIN
        FOR v_fn IN
            SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'pg_catalog'::regnamespace
               AND (p.proname LIKE 'pg\\_advisory\\_%' OR p.proname LIKE 'pg\\_try\\_advisory\\_%')
        LOOP
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', v_fn);
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'memory: only a superuser can revoke the advisory-lock functions '
                     'from PUBLIC; tenants can still take the append lock';
    END;
END $$;
"""


def _privileges() -> str:
    leftover = "\n".join(f"    GRANT {what} ON {table} TO memory_app;"
                         for table, what in LEFTOVER_GRANTS.items())
    functions = "\n".join(f"    GRANT EXECUTE ON FUNCTION {f} TO memory_app;"
                          for f in APP_FUNCTIONS)
    return PRIVILEGES.replace("    LEFTOVER", leftover).replace(
        "    APP_FUNCTIONS", functions)


DOWNGRADE_PRIVILEGES = """
DO $$
DECLARE
    v_schema text := current_schema();
    v_fn     regprocedure;
    v_table  text;
    v_role   text;
BEGIN
    BEGIN
        FOR v_fn IN
            SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'pg_catalog'::regnamespace
               AND (p.proname LIKE 'pg\\_advisory\\_%' OR p.proname LIKE 'pg\\_try\\_advisory\\_%')
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', v_fn);
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    FOR v_fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
         WHERE p.pronamespace = v_schema::regnamespace AND p.proname LIKE 'memory\\_%'
           AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                              AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', v_fn);
    END LOOP;
    FOR v_role IN SELECT role_name FROM memory_tenant_roles LOOP
        BEGIN
            EXECUTE format('DROP ROLE IF EXISTS %I', v_role);
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'memory: role % is still in use; drop it by hand', v_role;
        END;
    END LOOP;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'memory_app') THEN
        ALTER ROLE memory_app LOGIN;
        EXECUTE format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE memory_events_position_seq '
                       'TO memory_app');
        GRANT SELECT, INSERT, UPDATE, DELETE ON memory_projections TO memory_app;
    END IF;
    FOR v_table IN
        SELECT c.table_name FROM information_schema.columns c
          JOIN information_schema.tables t
            ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = v_schema AND c.column_name = 'tenant'
           AND t.table_type = 'BASE TABLE'
    LOOP
        PERFORM memory_secure_table(v_table::regclass, v_table <> 'memory_events');
    END LOOP;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'memory_app') THEN
        REVOKE ALL ON memory_events FROM memory_app;
        GRANT SELECT, INSERT ON memory_events TO memory_app;
    END IF;
END $$;
"""

# memory_secure_table as 0004 made it.
SECURE_TABLE_0004 = """
DROP FUNCTION memory_secure_table(regclass, boolean);
CREATE FUNCTION memory_secure_table(p_table regclass, p_writable boolean DEFAULT true)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_role text;
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
    EXECUTE format('DROP POLICY IF EXISTS memory_tenant ON %s', p_table);
    EXECUTE format('CREATE POLICY memory_tenant ON %s '
                   'USING (tenant = current_setting(''memory.tenant'', true)) '
                   'WITH CHECK (tenant = current_setting(''memory.tenant'', true))', p_table);
    FOREACH v_role IN ARRAY ARRAY['memory_app'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_roles WHERE rolname = v_role);
        IF p_writable THEN
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I', p_table, v_role);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT ON %s TO %I', p_table, v_role);
        END IF;
    END LOOP;
END $$;
"""

DROP_FUNCTIONS = """
DROP FUNCTION memory_lock_epoch(text, text);
DROP FUNCTION memory_lock_epochs(text, text[]);
DROP FUNCTION memory_create_epoch(text, text, bytea, text);
DROP FUNCTION memory_create_key(text, text, text, bytea, text);
DROP FUNCTION memory_check_array(jsonb, integer, text);
DROP FUNCTION memory_ensure_tenant_role(text, text);
"""

DROP_LAST = """
DROP FUNCTION memory_caller_tenant(text);
DROP FUNCTION memory_tenant();
DROP TABLE memory_tenant_roles;
"""


def upgrade() -> None:
    op.execute(FUNCTIONS)
    for signature, (declare, block) in CHECKED.items():
        op.execute(_rewrite_sql(signature, declare, block))
    op.execute(_privileges())


def downgrade() -> None:
    for signature, (declare, _) in CHECKED.items():
        op.execute(_restore_sql(signature, declare))
    op.execute(DROP_FUNCTIONS)
    op.execute(SECURE_TABLE_0004)
    op.execute(DOWNGRADE_PRIVILEGES)
    op.execute(DROP_LAST)

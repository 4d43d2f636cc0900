-- No content in planner statistics: ANALYZE copies sample values of every column into
-- pg_statistic, where deleting the rows (a forget) does not reach them. Every column of a
-- memory_* table (and every expression column of a memory_* index) that can hold text,
-- JSON, bytes, a tsvector or vectors gets a statistics target of 0, except the identifier
-- columns ({{STATISTICS_ALLOWED}}), which hold no content and keep the planner's estimates.
-- A target of 0 does not remove what an earlier ANALYZE stored, so those rows are cleared.
DO $$
DECLARE
    r record;
    content_types regtype[] := ARRAY['text', 'bytea', 'jsonb', 'tsvector']::regtype[]
        || array_remove(ARRAY[to_regtype('vector'), to_regtype('vector[]')], NULL);
    can_clear boolean := to_regprocedure(
        'pg_clear_attribute_stats(text, text, text, boolean)') IS NOT NULL;
BEGIN
    FOR r IN
        SELECT n.nspname, c.relname, c.relkind, a.attnum, a.attname
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid
        LEFT JOIN pg_index i ON i.indexrelid = c.oid
        WHERE n.nspname = current_schema() AND c.relname LIKE 'memory\_%'
          AND a.attnum > 0 AND NOT a.attisdropped
          AND a.atttypid = ANY (content_types)
          AND (c.relkind IN ('r', 'p', 'm') AND a.attname NOT IN ({{STATISTICS_ALLOWED}})
               OR c.relkind IN ('i', 'I') AND i.indkey[a.attnum - 1] = 0)
    LOOP
        EXECUTE format('ALTER %s %I.%I ALTER COLUMN %s SET STATISTICS 0',
                       CASE WHEN r.relkind IN ('i', 'I') THEN 'INDEX' ELSE 'TABLE' END,
                       r.nspname, r.relname,
                       CASE WHEN r.relkind IN ('i', 'I') THEN r.attnum::text
                            ELSE quote_ident(r.attname) END);
        IF can_clear THEN  -- PostgreSQL 18; needs the MAINTAIN privilege the owner has
            PERFORM pg_clear_attribute_stats(r.nspname, r.relname, r.attname::text, b)
            FROM unnest(ARRAY[false, true]) b;
        ELSIF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            DELETE FROM pg_statistic WHERE starelid = format('%I.%I', r.nspname,
                r.relname)::regclass AND staattnum = r.attnum;
        ELSE
            RAISE NOTICE 'memory: cannot clear the statistics of %.% here; delete them '
                         'from pg_statistic as a superuser',
                         r.relname, r.attname;
        END IF;
    END LOOP;
END $$;

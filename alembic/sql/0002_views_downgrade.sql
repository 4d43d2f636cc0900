-- Undoes alembic/sql/0002_views.sql.
DROP INDEX IF EXISTS memory_events_retracted_actor_idx;
DROP INDEX IF EXISTS memory_events_retracted_session_idx;

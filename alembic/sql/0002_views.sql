-- Session views (alembic/versions/0002_views.py): the retractions of a view's segments, and
-- of an actor's sessions for the memories a context may show, looked up by index.
CREATE INDEX memory_events_retracted_session_idx ON memory_events (tenant, session_id, version)
 WHERE type = 'events_retracted';
CREATE INDEX memory_events_retracted_actor_idx ON memory_events (tenant, actor_id, position)
 WHERE type = 'events_retracted';

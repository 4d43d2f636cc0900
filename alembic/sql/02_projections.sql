-- Projections: derived, disposable state built from the log, one generation at a time.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE memory_projections (
    name        text        NOT NULL,
    generation  integer     NOT NULL,
    status      text        NOT NULL CHECK (status IN ('building', 'live', 'retired')),
    config      jsonb       NOT NULL DEFAULT '{}',
    position    bigint      NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    switched_at timestamptz,
    CONSTRAINT memory_projections_pk PRIMARY KEY (name, generation)
);
CREATE UNIQUE INDEX memory_projections_one_live
    ON memory_projections (name) WHERE status = 'live';

CREATE TABLE memory_chunks (
    generation     integer     NOT NULL,
    tenant         text        NOT NULL,
    actor_id       text        NOT NULL,
    session_id     text        NOT NULL,
    event_position bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    chunk_index    integer     NOT NULL,
    role           text,
    author         text,
    occurred_at    timestamptz NOT NULL,
    text           text        NOT NULL,
    tsv            tsvector    GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    embedding      vector      NOT NULL,
    -- The vectors of a chunk's sentences; NULL for a chunk of one sentence.
    pieces         vector[],
    CONSTRAINT memory_chunks_pk PRIMARY KEY (tenant, generation, event_position, chunk_index)
);
CREATE INDEX memory_chunks_actor_idx ON memory_chunks (tenant, generation, actor_id);
CREATE INDEX memory_chunks_session_idx
    ON memory_chunks (tenant, generation, session_id, event_position);
CREATE INDEX memory_chunks_event_idx ON memory_chunks (tenant, event_id);
CREATE INDEX memory_chunks_tsv_idx ON memory_chunks USING gin (tsv);

CREATE TABLE memory_summaries (
    generation      integer     NOT NULL,
    tenant          text        NOT NULL,
    actor_id        text        NOT NULL,
    session_id      text        NOT NULL,
    covers_position bigint      NOT NULL,
    events_covered  integer     NOT NULL,
    text            text        NOT NULL,
    source_event_ids uuid[]     NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memory_summaries_pk
        PRIMARY KEY (tenant, generation, session_id, covers_position)
);
CREATE INDEX memory_summaries_actor_idx ON memory_summaries (tenant, generation, actor_id);

-- The summaries projection's bookkeeping: one row per session it has seen (what it has
-- seen, and the session version its latest summary covers). Pending = not yet covered.
CREATE TABLE memory_summary_state (
    generation         integer     NOT NULL,
    tenant             text        NOT NULL,
    actor_id           text        NOT NULL,
    session_id         text        NOT NULL,
    last_position      bigint      NOT NULL,
    last_version       integer     NOT NULL,
    last_occurred_at   timestamptz NOT NULL,
    summarized_version integer     NOT NULL DEFAULT 0,
    CONSTRAINT memory_summary_state_pk PRIMARY KEY (tenant, generation, session_id)
);
CREATE INDEX memory_summary_state_pending_idx ON memory_summary_state (generation)
    WHERE last_version > summarized_version;

-- Each actor's vocabulary per chunks generation: one row per word its chunks use, with the
-- word's Postgres lexeme and its vector; event_position is the first chunk holding it.
CREATE TABLE memory_words (
    tenant         text    NOT NULL,
    generation     integer NOT NULL,
    actor_id       text    NOT NULL,
    word           text    NOT NULL,
    lexeme         text    NOT NULL,
    event_position bigint  NOT NULL,
    embedding      vector  NOT NULL,
    CONSTRAINT memory_words_pk PRIMARY KEY (tenant, generation, actor_id, word)
);
CREATE INDEX memory_words_position_idx
    ON memory_words (tenant, generation, actor_id, event_position);

-- Poison events: one row per (projection, generation, position) a projection could not
-- process, written in the transaction that moves its checkpoint past the event.
CREATE TABLE memory_quarantine (
    id            bigint      GENERATED ALWAYS AS IDENTITY,
    projection    text        NOT NULL,
    generation    integer     NOT NULL,
    position      bigint      NOT NULL,
    tenant        text        NOT NULL,
    actor_id      text        NOT NULL,
    event_id      uuid        NOT NULL,
    error_class   text        NOT NULL,
    error_message text        NOT NULL,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    attempts      integer     NOT NULL DEFAULT 1,
    resolved_at   timestamptz,
    CONSTRAINT memory_quarantine_pk PRIMARY KEY (id),
    CONSTRAINT memory_quarantine_event UNIQUE (projection, generation, position)
);
CREATE INDEX memory_quarantine_unresolved_idx
    ON memory_quarantine (projection, generation) WHERE resolved_at IS NULL;
CREATE INDEX memory_quarantine_tenant_idx ON memory_quarantine (tenant, actor_id);

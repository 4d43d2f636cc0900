"""Projection state and the views retrieval reads: chunks (vectors + full text), summaries.

Revision ID: 0002
Revises: 0001

Projections are derived and disposable. Each rebuild is a new *generation* of a
projection, built beside the live one and switched to atomically, so the chunks and
summaries tables carry the generation in every key. The embedding column has no fixed
dimension so generations embedded by different models can coexist; each generation
gets its own partial HNSW index on ``embedding::vector(dim)``, created by the runner
when the generation goes live (memory/projections/chunks.py, ``finalize``).

Reading: select the live generation in the same statement as the rows, e.g.
``WHERE generation = (SELECT generation FROM memory_projections WHERE name = 'chunks'
AND status = 'live')`` (``memory.projections.live_generation_sql``); the switch to a new
generation is one transaction, so a statement sees the old or the new one, never a mix.
Projection names: ``chunks`` (memory_chunks) and ``summaries`` (memory_summaries).

Chunks: ``role`` is the message role, ``'note'`` for notes, ``'tool'`` for tool results;
``author`` is the message ``name`` (or the tool's name). The HNSW index of generation g is
``memory_chunks_hnsw_g<g>`` on ``(embedding::vector(<dim>)) vector_cosine_ops WHERE
generation = g``; the dimension is ``config->>'dim'`` of the generation's row.

Summaries: one row per version of a session's rolling summary. ``covers_position`` is the
log position of the last session event it covers, ``events_covered`` that event's session
version (= number of session events covered). ``text`` is one sentence per line;
``source_event_ids`` names the events the text was drawn from (for the extractive
summarizer, line by line; for a plugged-in summarizer, every event that fed it,
transitively). The summary as of position P: the row with the greatest
``covers_position <= P``.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
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
"""

DOWNGRADE = """
DROP TABLE memory_summary_state;
DROP TABLE memory_summaries;
DROP TABLE memory_chunks;
DROP TABLE memory_projections;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)

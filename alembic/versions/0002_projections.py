"""Projection state and the views retrieval reads: chunks (vectors + full text), summaries.

Revision ID: 0002
Revises: 0001

Projections are derived and disposable. Each rebuild is a new *generation* of a
projection, built beside the live one and switched to atomically, so the chunks and
summaries tables carry the generation in every key. The embedding column has no fixed
dimension so generations embedded by different models can coexist; each generation
gets its own partial HNSW index on ``embedding::vector(dim)``, created by the runner
when the generation is created (memory/projections/runner.py).
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
"""

DOWNGRADE = """
DROP TABLE memory_summaries;
DROP TABLE memory_chunks;
DROP TABLE memory_projections;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)

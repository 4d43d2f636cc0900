"""Sentence vectors of chunks, and each actor's vocabulary of word vectors.

Revision ID: 0009
Revises: 0008

Why (benchmarks/RESULTS.md, "LoCoMo" and "Projection")
------------------------------------------------------
A chunk's one vector blurs a turn of several sentences: the sentence that answers a
question scores higher alone than inside its turn. ``memory_chunks.pieces`` holds the
vectors of a chunk's sentences (NULL for a chunk of one sentence, whose own vector is
the piece), and the whole-scope ranker takes the larger of the chunk's cosine and its
best piece's.

A question's words are often not the words of the turn that answers it ("instrument",
"violin"). ``memory_words`` holds, per actor and chunks generation, each word the actor's
chunks use (one Postgres lexeme per word; stop words have none) with its vector (the word
embedded alone), so the ranker can add to the lexical query the actor's own words
closest to the question's. A row is derived data like a chunk: written by the chunks
projection in its generation, deleted with the generation, the actor, or the last chunk
that holds the word (memory/projections/chunks.py, ``forget_chunks``). ``event_position``
is the first chunk holding the word, so a context bounded by ``as_of`` sees the
vocabulary of its time.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE memory_chunks ADD COLUMN pieces vector[];

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
SELECT memory_secure_table('memory_words');
"""

DOWNGRADE = """
DROP TABLE memory_words;
ALTER TABLE memory_chunks DROP COLUMN pieces;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)

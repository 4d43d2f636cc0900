"""Each actor's vocabulary: the words its chunks use, each with its own vector.

Written by the chunks projection (memory/projections/chunks.py) in the transaction that
writes the chunks, read by the whole-scope ranker to widen a question's lexical query with
the actor's words nearest its own (memory/retrieval/ranking/expansion.py). Why a table and not
the model at query time: embedding an actor's ~2,000 words takes seconds; embedding each
once, when it first appears, takes ~1.5 ms a word.

A row says: this actor's chunks of this generation hold ``word`` (``chunking.WORD_RE``),
which Postgres stems to the one ``lexeme`` (words with no lexeme, i.e. stop words, or
with several are left out), first at ``event_position``. That position is kept true
when chunks go: forgetting moves a word to the next chunk that holds it, or deletes it
with its last one (:func:`forget_words`), so a rebuild from the log writes the same rows.

One race is left, on purpose: a forget that deletes a word's only chunk while a runner
batch, not yet committed, writes a later chunk holding the same word (the batch saw the
row, so it wrote none). The word is then missing from the vocabulary (the query expansion
cannot reach it; nothing forgotten survives) until the next rebuild. Closing it would mean
the forget taking the generation's row lock that runner batches hold, after the key
destruction that a batch reading the forgotten event waits for: a deadlock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from .chunking import words_of

WORDS_CONFIG = "english"
"""The text search configuration of the chunks' tsvector (migration 0002)."""

# each word's lexemes, as the chunks' tsvector would hold them
LEXEMES = """
SELECT w, tsvector_to_array(to_tsvector('english', w)) FROM unnest(%s::text[]) w
"""

KNOWN = """
SELECT word FROM memory_words
 WHERE tenant = %s AND generation = %s AND actor_id = %s AND word = ANY(%s::text[])
"""

INSERT = """
INSERT INTO memory_words (tenant, generation, actor_id, word, lexeme, event_position,
                          embedding)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""

Embed = Callable[[Sequence[str]], np.ndarray]


def lexeme_lists(conn: sa.Connection, words: Iterable[str]) -> dict[str, list[str]]:
    """word -> its lexemes (none for a stop word)."""
    words = sorted(set(words))
    if not words:
        return {}
    rows = conn.exec_driver_sql(LEXEMES, (words,)).fetchall()
    return {w: list(lex or []) for w, lex in rows}


def lexemes_of(conn: sa.Connection, words: Iterable[str]) -> dict[str, str]:
    """word -> its one lexeme, for the words that stem to exactly one."""
    return {w: lex[0] for w, lex in lexeme_lists(conn, words).items() if len(lex) == 1}


def new_words(conn: sa.Connection, generation: int, rows: Sequence[tuple[Any, ...]]
              ) -> list[tuple[str, str, str, int]]:
    """(tenant, actor, word, first position) of the words of chunk ``rows`` (chunks.py's
    row tuples, in position order) that the actor has no row for yet."""
    first: dict[tuple[str, str], dict[str, int]] = {}
    for r in rows:
        tenant, actor, position, text = r[0], r[1], r[3], r[-1]
        seen = first.setdefault((tenant, actor), {})
        for w in words_of(text):
            seen.setdefault(w, position)
    out: list[tuple[str, str, str, int]] = []
    for (tenant, actor), seen in first.items():
        known = {r[0] for r in conn.exec_driver_sql(
            KNOWN, (tenant, generation, actor, list(seen))).fetchall()}
        out.extend((tenant, actor, w, p) for w, p in seen.items() if w not in known)
    return out


def write_words(conn: sa.Connection, raw: Any, generation: int,
                rows: Sequence[tuple[Any, ...]], embed: Embed) -> int:
    """Add the new words of chunk ``rows`` to their actors' vocabularies; each distinct
    word is embedded once per batch (a word's vector depends on nothing else)."""
    found = new_words(conn, generation, rows)
    lexemes = lexemes_of(conn, (w for _, _, w, _ in found))
    found = [f for f in found if f[2] in lexemes]
    if not found:
        return 0
    distinct = sorted({w for _, _, w, _ in found})
    vectors = dict(zip(distinct, embed(distinct), strict=True))
    with raw.cursor() as cur:
        cur.executemany(INSERT, [(t, generation, a, w, lexemes[w], p, vectors[w])
                                 for t, a, w, p in found])
    return len(found)


def forget_words(conn: sa.Connection, tenant: str, *, actor_id: str | None = None,
                 gone: Sequence[tuple[int, str, str]] = ()) -> int:
    """After chunks were deleted: the actor's whole vocabulary (``actor_id``), or, for
    ``gone`` chunks ((generation, actor, text) each), their words moved to the next chunk
    still holding them, or deleted with their last one."""
    changed = 0
    if actor_id is not None:
        changed += conn.exec_driver_sql(
            "DELETE FROM memory_words WHERE tenant = %s AND actor_id = %s",
            (tenant, actor_id)).rowcount
    by_scope: dict[tuple[int, str], set[str]] = {}
    for generation, actor, text in gone:
        by_scope.setdefault((generation, actor), set()).update(words_of(text))
    for (generation, actor), words in by_scope.items():
        changed += _rehome(conn, tenant, generation, actor, words)
    return changed


def _rehome(conn: sa.Connection, tenant: str, generation: int, actor: str,
            words: set[str]) -> int:
    """Each of ``words`` at the first remaining chunk of the actor that holds it."""
    held = {r[0] for r in conn.exec_driver_sql(
        "SELECT word FROM memory_words WHERE tenant = %s AND generation = %s"
        " AND actor_id = %s AND word = ANY(%s::text[])",
        (tenant, generation, actor, sorted(words))).fetchall()}
    if not held:
        return 0
    first: dict[str, int] = {}
    # every remaining chunk's text is read: a forget is rare, and a prefilter on the
    # tsvector could miss a word that Postgres parses differently inside a sentence
    for position, text in conn.exec_driver_sql(
            "SELECT event_position, text FROM memory_chunks"
            " WHERE tenant = %s AND generation = %s AND actor_id = %s"
            " ORDER BY event_position, chunk_index",
            (tenant, generation, actor)).fetchall():
        for w in words_of(text):
            if w in held:
                first.setdefault(w, int(position))
    changed = 0
    for w in sorted(held):
        if w in first:
            changed += conn.exec_driver_sql(
                "UPDATE memory_words SET event_position = %s WHERE tenant = %s"
                " AND generation = %s AND actor_id = %s AND word = %s"
                " AND event_position <> %s",
                (first[w], tenant, generation, actor, w, first[w])).rowcount
        else:
            changed += conn.exec_driver_sql(
                "DELETE FROM memory_words WHERE tenant = %s AND generation = %s"
                " AND actor_id = %s AND word = %s",
                (tenant, generation, actor, w)).rowcount
    return changed

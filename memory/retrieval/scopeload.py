"""Reading a scope entry's rows from SQL: the chunks (vectors in binary transfer), their
lexeme counts, sentence vectors and the scope's vocabulary, above a position and at or
below the entry's ``upto``; and the counts that tell whether a cached entry still holds
(scopecache.py says why those counts suffice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from ..pg.vectors import binary_rows, decode_vectors
from .scopedata import Check, ScopeData, empty_cols, probe_params
from .scopeparts import Pieces, Words, words_from_rows

LOAD = """
SELECT c.event_position, c.chunk_index, c.event_id, c.session_id, c.actor_id, c.role,
       c.author, c.occurred_at, c.text, length(c.tsv), vector_send(c.embedding)
  FROM memory_chunks c
 WHERE c.tenant = %s AND c.generation = %s AND c.actor_id = ANY(%s)
   AND c.event_position > %s
 ORDER BY c.event_position, c.chunk_index
"""

LOAD_TERMS = """
SELECT c.event_position, c.chunk_index, t.lexeme, coalesce(array_length(t.positions, 1), 1)
  FROM memory_chunks c CROSS JOIN LATERAL unnest(c.tsv) AS t(lexeme, positions, weights)
 WHERE c.tenant = %s AND c.generation = %s AND c.actor_id = ANY(%s)
   AND c.event_position > %s AND c.event_position <= %s
"""

# The check a call makes when the start-of-call statement did not make it (replay, or a
# ChunkSearch used on its own): same counts as in search.callstate.STATE.
CHECK = """
SELECT (SELECT count(*) FROM (
          SELECT 1 FROM memory_chunks c
           WHERE c.tenant = %(tenant)s AND c.generation = %(generation)s
             AND c.actor_id = ANY(%(actors)s) LIMIT %(cap)s) s),
       (SELECT count(*) FROM memory_chunks c
         WHERE c.tenant = %(tenant)s AND c.generation = %(cgen)s
           AND c.actor_id = ANY(%(actors)s) AND c.event_position > %(cupto)s),
       (SELECT created_at::text FROM memory_projections
         WHERE name = 'chunks' AND generation = %(generation)s)
"""


# The sentence vectors of the entry's chunks (chunks of one sentence have none)
LOAD_PIECES = """
SELECT c.event_position, c.chunk_index, vector_send(p)
  FROM memory_chunks c CROSS JOIN LATERAL unnest(c.pieces) AS p
 WHERE c.tenant = %s AND c.generation = %s AND c.actor_id = ANY(%s)
   AND c.pieces IS NOT NULL AND c.event_position > %s AND c.event_position <= %s
"""

# The scope's vocabulary (memory/projections/words.py): rows of a word first held at or
# below upto are all there in the snapshot that read upto (written with the chunks).
LOAD_WORDS = """
SELECT w.word, w.lexeme, w.event_position, vector_send(w.embedding)
  FROM memory_words w
 WHERE w.tenant = %s AND w.generation = %s AND w.actor_id = ANY(%s)
   AND w.event_position > %s AND w.event_position <= %s
 ORDER BY w.word, w.event_position
"""

def read_rows(conn: sa.Connection, tenant: str, generation: int, actors: Sequence[str],
          after: int) -> tuple[dict[str, list[Any]], np.ndarray]:
    """Rows above ``after`` (binary transfer: the vectors come as pgvector's send format,
    decoded in one numpy call)."""
    rows = binary_rows(conn, LOAD, (tenant, generation, list(actors), after))
    cols = empty_cols()
    for r in rows:
        cols["positions"].append(r[0])
        cols["indexes"].append(r[1])
        cols["event_ids"].append(r[2])
        cols["sessions"].append(r[3])
        cols["actor_ids"].append(r[4])
        cols["roles"].append(r[5])
        cols["authors"].append(r[6])
        cols["occurred"].append(r[7])
        cols["texts"].append(r[8])
        cols["lengths"].append(int(r[9] or 0))
    return cols, decode_vectors([r[10] for r in rows])


def read_terms(conn: sa.Connection, data: ScopeData, tenant: str, actors: Sequence[str],
               after: int = -1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The entry's lexemes above ``after``: per lexeme, the rows holding it and how often
    (the term frequencies ``wholescope.SCOPE_TERMS`` reads), read once per entry (and for the
    new rows when it grows)."""
    found: dict[str, tuple[list[int], list[int]]] = {}
    rows = conn.exec_driver_sql(LOAD_TERMS, (tenant, data.generation, list(actors), after,
                                             data.upto)).fetchall()
    for pos, idx, lexeme, freq in rows:
        r = data.key_index.get((pos, idx))
        if r is None:
            continue
        lst = found.setdefault(lexeme, ([], []))
        lst[0].append(r)
        lst[1].append(int(freq))
    return {k: (np.asarray(v[0], dtype=np.int64), np.asarray(v[1], dtype=np.int64))
            for k, v in found.items()}


def read_pieces(conn: sa.Connection, data: ScopeData, tenant: str, actors: Sequence[str],
                after: int = -1) -> Pieces:
    """The sentence vectors of the entry's chunks above ``after``."""
    rows = binary_rows(conn, LOAD_PIECES, (tenant, data.generation, list(actors), after,
                                           data.upto))
    found = [(data.key_index.get((r[0], r[1])), r[2]) for r in rows]
    found = [f for f in found if f[0] is not None]
    matrix = decode_vectors([f[1] for f in found])
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix)) if len(matrix) else \
        np.zeros(0, dtype=np.float32)
    return Pieces(np.asarray([f[0] for f in found], dtype=np.int64), matrix, norms)


def read_words(conn: sa.Connection, data: ScopeData, tenant: str, actors: Sequence[str],
               after: int = -1) -> Words:
    """The scope's vocabulary rows first held above ``after`` (at or below ``upto``)."""
    return words_from_rows(binary_rows(conn, LOAD_WORDS, (tenant, data.generation,
                                                          list(actors), after, data.upto)))


def merge_terms(old: dict[str, tuple[np.ndarray, np.ndarray]],
                 new: dict[str, tuple[np.ndarray, np.ndarray]]
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = dict(old)
    for lexeme, (rows, freqs) in new.items():
        if lexeme in out:
            r0, f0 = out[lexeme]
            out[lexeme] = (np.concatenate([r0, rows]), np.concatenate([f0, freqs]))
        else:
            out[lexeme] = (rows, freqs)
    return out


def check(conn: sa.Connection, probed: ScopeData | None, tenant: str, actors: Sequence[str],
          generation: int, cap: int) -> Check:
    """The counts of :data:`CHECK`, for a call that did not get them from the statement
    it started with (``search.callstate.STATE``)."""
    cgen, cupto = probe_params(probed)
    row = conn.exec_driver_sql(CHECK, {"tenant": tenant, "generation": generation,
                                       "actors": list(actors), "cap": cap, "cgen": cgen,
                                       "cupto": cupto}).one()
    return Check(total=int(row[0]), newer=int(row[1]) if cgen == generation else 0,
                 created=str(row[2]))

"""What a scope entry (scopedata.py) holds besides its chunk rows: the chunks' sentence
vectors and the scope's vocabulary, read with the rows and grown with them; and the
decoding of pgvector's binary format and the cosine they share with the rows.

Both come from rows written by the chunks projection in the transaction that writes the
chunks (memory/projections/chunks.py, words.py), so the entry's staleness check (the
chunk counts, scopedata.py) covers them: they are read at or below the entry's ``upto``
in the snapshot that validated it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

if TYPE_CHECKING:
    from .scopedata import ScopeData

_HEADER_BYTES = 4  # pgvector's binary send format: int16 dim, int16 unused, then float4s

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

@dataclass(frozen=True)
class Pieces:
    """Sentence vectors: the entry row each belongs to, the vectors, their norms."""

    rows: np.ndarray
    matrix: np.ndarray
    norms: np.ndarray

    def __add__(self, other: Pieces) -> Pieces:
        return Pieces(np.concatenate([self.rows, other.rows]),
                      _stack(self.matrix, other.matrix),
                      np.concatenate([self.norms, other.norms]))


@dataclass(frozen=True)
class Words:
    """The vocabulary rows: word, lexeme, first position, (unit) vector."""

    words: list[str]
    lexemes: list[str]
    positions: np.ndarray
    matrix: np.ndarray

    def __add__(self, other: Words) -> Words:
        return Words(self.words + other.words, self.lexemes + other.lexemes,
                     np.concatenate([self.positions, other.positions]),
                     _stack(self.matrix, other.matrix))


def _stack(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not len(a):
        return b
    return a if not len(b) else np.concatenate([a, b])


def cosines(matrix: np.ndarray, norms: np.ndarray, query_vec: np.ndarray) -> np.ndarray:
    """Cosine of each row to the query, as :meth:`ScopeData.sims` computes it."""
    q = np.asarray(query_vec, dtype=np.float32).reshape(-1)
    if len(matrix) == 0:
        return np.zeros(0)
    if matrix.shape[1] != q.shape[0]:
        raise ValueError(f"query has {q.shape[0]} dimensions, the scope's vectors "
                         f"{matrix.shape[1]}")
    dots = np.einsum("ij,j->i", matrix, q).astype(np.float64)
    denom = norms.astype(np.float64) * float(np.sqrt(np.dot(q.astype(np.float64),
                                                            q.astype(np.float64))))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom > 0, dots / denom, 0.0)
    return np.clip(out, -1.0, 1.0)


def decode(blobs: Sequence[Any]) -> np.ndarray:
    """pgvector's binary send format, one blob per row, as one float32 matrix."""
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    raw = [bytes(b) for b in blobs]
    width = len(raw[0])
    if any(len(b) != width for b in raw):
        raise ValueError("vectors of one generation have different dimensions")
    dim = (width - _HEADER_BYTES) // 4
    flat = np.frombuffer(b"".join(raw), dtype=np.uint8).reshape(len(raw), width)
    matrix = flat[:, _HEADER_BYTES:].copy().view(">f4").astype(np.float32)
    return matrix.reshape(len(raw), dim)


def binary_rows(conn: sa.Connection, sql: str, params: Any) -> list[Any]:
    """The rows of ``sql`` in binary transfer (vectors come as pgvector's send format,
    for :func:`decode`)."""
    raw = conn.connection.driver_connection
    with raw.cursor(binary=True) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def words_from_rows(rows: Sequence[Any]) -> Words:
    """Vocabulary rows (word, lexeme, position, vector_send(embedding)) as :class:`Words`."""
    return Words([r[0] for r in rows], [r[1] for r in rows],
                 np.asarray([r[2] for r in rows], dtype=np.int64),
                 decode([r[3] for r in rows]))


def read_pieces(conn: sa.Connection, data: ScopeData, tenant: str, actors: Sequence[str],
                after: int = -1) -> Pieces:
    """The sentence vectors of the entry's chunks above ``after``."""
    rows = binary_rows(conn, LOAD_PIECES, (tenant, data.generation, list(actors), after,
                                           data.upto))
    found = [(data.key_index.get((r[0], r[1])), r[2]) for r in rows]
    found = [f for f in found if f[0] is not None]
    matrix = decode([f[1] for f in found])
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix)) if len(matrix) else \
        np.zeros(0, dtype=np.float32)
    return Pieces(np.asarray([f[0] for f in found], dtype=np.int64), matrix, norms)


def read_words(conn: sa.Connection, data: ScopeData, tenant: str, actors: Sequence[str],
               after: int = -1) -> Words:
    """The scope's vocabulary rows first held above ``after`` (at or below ``upto``)."""
    return words_from_rows(binary_rows(conn, LOAD_WORDS, (tenant, data.generation,
                                                          list(actors), after, data.upto)))

"""What a scope entry (scopedata.py) holds besides its chunk rows: the chunks' sentence
vectors and the scope's vocabulary, read with the rows and grown with them
(scopeload.py), and the cosine they share with the rows.

Both come from rows written by the chunks projection in the transaction that writes the
chunks (memory/projections/chunks.py, words.py), so the entry's staleness check (the
chunk counts, scopecache.py) covers them: they are read at or below the entry's ``upto``
in the snapshot that validated it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..pg.vectors import decode_vectors


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


def words_from_rows(rows: Sequence[Any]) -> Words:
    """Vocabulary rows (word, lexeme, position, vector_send(embedding)) as :class:`Words`."""
    return Words([r[0] for r in rows], [r[1] for r in rows],
                 np.asarray([r[2] for r in rows], dtype=np.int64),
                 decode_vectors([r[3] for r in rows]))

"""One scope entry: every chunk row of (database, tenant, actors) in one chunks generation
at or below a position, in memory, as the searches and the whole-scope ranker read it.

Why: one person's memory is small (hundreds to ~20k chunks), and every ``context()`` call
reads all of it: the whole-scope ranker scores every chunk (cosine, BM25 term
frequencies, turn windows), and exact vector search compares every vector. Doing that in
SQL costs ~0.9 microseconds per row of index scan plus pgvector's distance for each row
(83-107 ms for a 20k-chunk scope on this machine, benchmarks/RESULTS.md), where numpy over the
same vectors in memory takes ~2 ms. So the scope's rows (vectors as one float32 matrix,
positions, sessions, authors, texts, lexeme counts) are kept in memory and every search
reads them from here. The entry also holds the chunks' sentence vectors and the scope's
vocabulary (scopeparts.py), read and grown with the rows. The rows are read by
scopeload.py; which entries are kept, and why one is never stale, is scopecache.py.

A call filters the rows by its own bound (``as_of``, the projection's checkpoint), so
one entry serves every bound.

Determinism: cosines are computed per row with ``np.einsum`` (each row's dot product is
summed the same way whatever the number of rows, unlike a BLAS matrix-vector product),
so a cached entry, a grown one and a freshly read one give bit-identical scores, and a
recorded context replays identically.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import numpy as np

from .scopeparts import Pieces, Words, cosines


@dataclass(frozen=True)
class Check:
    """What the start of a call counted: the scope's rows in the live generation (capped)
    and the rows above the probed entry's ``upto`` (in the probed entry's generation)."""

    total: int
    newer: int
    created: str


class ScopeData:
    """Every chunk of one scope in one generation up to ``upto``; immutable once built
    (a grown entry is a new object; the vector buffer may be shared, see :meth:`grow`),
    except that its sentence vectors and vocabulary may be attached once, later, under a
    lock (:func:`ensure_parts`; a reader that sees them missing reads SQL instead)."""

    def __init__(self, key: tuple[Any, ...], generation: int, created: str, upto: int,
                 cols: dict[str, list[Any]], matrix: np.ndarray, *,
                 base: ScopeData | None = None) -> None:
        """``cols`` and ``matrix``: every row, or with ``base`` the rows appended to it
        (what depends on the old rows is carried over, not recomputed: a 20k-chunk scope
        grows by a turn in ~5 ms, not ~40)."""
        self.key = key
        self.generation = generation
        self.created = created
        self.upto = upto
        new_pos = np.asarray(cols["positions"], dtype=np.int64)
        new_idx = np.asarray(cols["indexes"], dtype=np.int64)
        new_len = np.asarray(cols["lengths"], dtype=np.int64)
        if base is None:
            self.cols = cols
            self._buffer = _Buffer(matrix)
            self._codes: dict[str, int] = {}
            self.positions, self.indexes, self.lengths = new_pos, new_idx, new_len
            self.key_index: dict[tuple[int, int], int] = {}
            first = 0
            old_norms = np.zeros(0, dtype=np.float32)
            old_codes = np.zeros(0, dtype=np.int64)
            self._text_bytes = 0
        else:
            self.cols = {name: base.cols[name] + cols[name] for name in base.cols}
            self._buffer = base._buffer.extend(base.n, matrix)
            self._codes = dict(base._codes)
            self.positions = np.concatenate([base.positions, new_pos])
            self.indexes = np.concatenate([base.indexes, new_idx])
            self.lengths = np.concatenate([base.lengths, new_len])
            self.key_index = dict(base.key_index)
            first = base.n
            old_norms, old_codes = base.norms, base.session_codes
            self._text_bytes = base._text_bytes
        self.event_ids: list[UUID] = self.cols["event_ids"]
        self.sessions: list[str] = self.cols["sessions"]
        self.actor_ids: list[str] = self.cols["actor_ids"]
        self.roles: list[str | None] = self.cols["roles"]
        self.authors: list[str | None] = self.cols["authors"]
        self.occurred: list[datetime] = self.cols["occurred"]
        self.texts: list[str] = self.cols["texts"]
        self.n = len(self.positions)
        self.matrix = self._buffer.rows(self.n)
        added = self.matrix[first:]
        self.norms = np.concatenate([old_norms, np.sqrt(np.einsum("ij,ij->i", added, added))
                                     if len(added) else np.zeros(0, dtype=np.float32)])
        codes = self._codes
        self.session_codes = np.concatenate([old_codes, np.asarray(
            [codes.setdefault(x, len(codes)) for x in cols["sessions"]], dtype=np.int64)])
        # rows by session (codes follow first appearance; any session order will do, the
        # ranker only needs each session's rows together and in position order)
        self.order = (np.lexsort((self.indexes, self.positions, self.session_codes))
                      if self.n else np.zeros(0, dtype=np.int64))
        for r, (p, i) in enumerate(zip(new_pos.tolist(), new_idx.tolist(), strict=True),
                                   start=first):
            self.key_index[(p, i)] = r
        self.max_position = int(self.positions.max()) if self.n else 0
        self.terms: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.pieces: Pieces | None = None
        self.words: Words | None = None
        """Read with the rows (:meth:`attach`; scopecache.py)."""
        self.derived: dict[str, Any] = {}
        """Values computed from this entry's rows alone, kept with it (wholescope.py)."""
        self._text_bytes += sum(len(t) for t in cols["texts"])
        self.nbytes = int(self._buffer.data.nbytes + self._text_bytes + 400 * self.n)

    def rows_at(self, bound: int) -> np.ndarray | None:
        """Row numbers at or below ``bound``; None when that is every row."""
        if self.max_position <= bound:
            return None
        return np.flatnonzero(self.positions <= bound)

    def order_rank(self) -> np.ndarray:
        """Where each row sits in ``order`` (for :meth:`neighbour_rows`)."""
        where = np.empty(self.n, dtype=np.int64)
        where[self.order] = np.arange(self.n)
        return where

    def neighbour_rows(self, r: int, window: int, bound: int, where: np.ndarray
                       ) -> list[int]:
        """Up to ``window`` rows of row ``r``'s session before it and after it (the latter
        at or below ``bound``), of other events than its own, as the SQL of
        ``search.chunks.NEIGHBOURS`` finds them (``where``: :meth:`order_rank`)."""
        order = self.order
        i = int(where[r])
        code = self.session_codes[r]
        position = self.positions[r]
        found: list[int] = []
        j = i - 1
        while j >= 0 and len(found) < window:
            rj = int(order[j])
            if self.session_codes[rj] != code:
                break
            if self.positions[rj] != position:  # other events only
                found.append(rj)  # earlier rows of the session are below the bound
            j -= 1
        after = 0
        j = i + 1
        while j < self.n and after < window:
            rj = int(order[j])
            if self.session_codes[rj] != code or self.positions[rj] > bound:
                break
            if self.positions[rj] != position:
                found.append(rj)
                after += 1
            j += 1
        return found

    def sims(self, query_vec: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """Cosine similarity of each row (all, or ``rows``) to the query, as pgvector's
        ``1 - (a <=> b)`` computes it (float32 dot products, then float64); a zero vector
        scores 0 instead of pgvector's NaN."""
        m = self.matrix if rows is None else self.matrix[rows]
        norms = self.norms if rows is None else self.norms[rows]
        return cosines(m, norms, query_vec)

    def attach(self, pieces: Pieces, words: Words) -> None:
        """Set the entry's sentence vectors and vocabulary (and count their bytes)."""
        self.pieces, self.words = pieces, words
        self.nbytes += int(pieces.matrix.nbytes + words.matrix.nbytes + 60 * len(words.words))

    def grow(self, cols: dict[str, list[Any]], matrix: np.ndarray, upto: int) -> ScopeData:
        """A new entry with ``cols`` appended (rows above this entry's ``upto``)."""
        return ScopeData(self.key, self.generation, self.created, upto, cols, matrix,
                         base=self)


class _Buffer:
    """The vectors of an entry with room to grow: a grown entry writes its new rows past
    the old ones in the same array (older entries only ever read their first ``n`` rows),
    so a live conversation does not copy a 20k x 384 matrix at every new turn."""

    def __init__(self, data: np.ndarray, filled: int | None = None) -> None:
        self.data = data
        self.filled = len(data) if filled is None else filled
        self.lock = threading.Lock()

    def rows(self, n: int) -> np.ndarray:
        return self.data[:n]

    def extend(self, n: int, new: np.ndarray) -> _Buffer:
        k = len(new)
        with self.lock:
            if self.filled == n and n + k <= len(self.data) and (
                    k == 0 or new.shape[1] == self.data.shape[1]):
                self.data[n:n + k] = new
                self.filled = n + k
                return self
        dim = new.shape[1] if k else self.data.shape[1]
        cap = max(n + k, int((n + k) * 1.25) + 16)
        data = np.empty((cap, dim), dtype=np.float32)
        if n:
            data[:n] = self.data[:n]
        data[n:n + k] = new
        return _Buffer(data, filled=n + k)


def empty_cols() -> dict[str, list[Any]]:
    return {k: [] for k in ("positions", "indexes", "event_ids", "sessions", "actor_ids",
                            "roles", "authors", "occurred", "texts", "lengths")}


def probe_params(entry: ScopeData | None) -> tuple[int, int]:
    """(generation, upto) to count newer rows against; (-1, 0) without an entry (the
    count is then 0 and costs one index probe)."""
    return (entry.generation, entry.upto) if entry is not None else (-1, 0)

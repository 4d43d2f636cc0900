"""A per-process cache of a chunk scope's data, validated against the database every call.

Why: one person's memory is small (hundreds to ~20k chunks), and every ``context()`` call
reads all of it: the whole-scope ranker scores every chunk (cosine, BM25 term
frequencies, turn windows), and exact vector search compares every vector. Doing that in
SQL costs ~0.9 microseconds per row of index scan plus pgvector's distance for each row
(83-107 ms for a 20k-chunk scope on this machine, benchmarks/RESULTS.md), where numpy over the
same vectors in memory takes ~2 ms. So the scope's rows (vectors as one float32 matrix,
positions, sessions, authors, texts, lexeme counts) are kept in memory, per process, and
every search reads them from here. The entry also holds the chunks' sentence vectors and
the scope's vocabulary (scopeparts.py), read and grown with the rows.

What an entry is: **every** chunk row of (database, tenant, actors) in one chunks
generation whose event position is at or below ``upto``, read in one snapshot. A call
filters the rows by its own bound (``as_of``, the projection's checkpoint), so one entry
serves every bound.

Why it is never stale (checked at the start of every call, in the call's own snapshot and
under the tenant's row-level security, in the statement that reads the bound):

* Chunk rows are immutable (nothing updates ``memory_chunks``) and, within one
  generation, inserted only by its projection runner, which holds the generation's row
  ``FOR UPDATE`` and writes rows with positions above its checkpoint in the same
  transaction that moves the checkpoint (memory/projections/runner.py). So once an entry
  was read with ``upto`` = the checkpoint of its snapshot, no row at or below ``upto`` can
  appear later: rows only *disappear* there (forgetting deletes them,
  memory/forget.py), and new rows come above ``upto``.
* Each call counts the scope's rows in the live generation (``total``, an index-only
  scan of ``memory_chunks_actor_idx``: ~2 ms for 20k rows) and the rows above the
  entry's ``upto`` (``newer``, a range of the primary key). If ``total == n + newer``,
  nothing at or below ``upto`` was deleted, the entry is exact, and the ``newer`` rows (if
  any) are read and appended. Any other count (a forget, a deletion by hand) reloads
  the whole scope. A generation switch (reproject) or a generation re-created under the
  same number (its ``created_at`` differs) reloads it too.
* The key holds the database URL and the tenant; the rows are read under the tenant's
  row-level security like every other read, so one tenant's entry is never built from,
  or handed to, another tenant.

Bounded: entries are kept in LRU order and evicted past ``scope_cache_bytes`` (a
:class:`RetrievalSettings` field; 0 keeps nothing, and every call then reads its scope
whole, which is slower but gives the same results). Scopes larger than
:func:`search.size_cap` are not read here at all (they go through the HNSW index).

Determinism: cosines are computed per row with ``np.einsum`` (each row's dot product is
summed the same way whatever the number of rows, unlike a BLAS matrix-vector product),
so a cached entry, a grown one and a freshly read one give bit-identical scores, and a
recorded context replays identically.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import numpy as np
import sqlalchemy as sa

from .scopeparts import (
    Pieces,
    Words,
    binary_rows,
    cosines,
    decode,
    read_pieces,
    read_words,
)

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
# ChunkSearch used on its own): same counts as in search.STATE.
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
        """Read with the rows (:meth:`attach`, :func:`fetch`, :func:`ensure_parts`)."""
        self.derived: dict[str, Any] = {}
        """Values computed from this entry's rows alone, kept with it (search.py)."""
        self._text_bytes += sum(len(t) for t in cols["texts"])
        self.nbytes = int(self._buffer.data.nbytes + self._text_bytes + 400 * self.n)

    def rows_at(self, bound: int) -> np.ndarray | None:
        """Row numbers at or below ``bound``; None when that is every row."""
        if self.max_position <= bound:
            return None
        return np.flatnonzero(self.positions <= bound)

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


def _empty_cols() -> dict[str, list[Any]]:
    return {k: [] for k in ("positions", "indexes", "event_ids", "sessions", "actor_ids",
                            "roles", "authors", "occurred", "texts", "lengths")}


def _read(conn: sa.Connection, tenant: str, generation: int, actors: Sequence[str],
          after: int) -> tuple[dict[str, list[Any]], np.ndarray]:
    """Rows above ``after`` (binary transfer: the vectors come as pgvector's send format,
    decoded in one numpy call)."""
    rows = binary_rows(conn, LOAD, (tenant, generation, list(actors), after))
    cols = _empty_cols()
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
    return cols, decode([r[10] for r in rows])


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


class ScopeCache:
    """The process's entries, LRU by bytes. Thread-safe: entries are immutable, the map
    is guarded by a lock, and two threads loading one scope at once both get a correct
    entry (the later one is kept)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[Any, ...], ScopeData] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = {"hits": 0, "grown": 0, "loads": 0, "evicted": 0}

    def peek(self, key: tuple[Any, ...]) -> ScopeData | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, entry: ScopeData, max_bytes: int) -> None:
        with self._lock:
            old = self._entries.pop(entry.key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if entry.nbytes > max_bytes:
                return
            self._entries[entry.key] = entry
            self._bytes += entry.nbytes
            while self._bytes > max_bytes and self._entries:
                _, gone = self._entries.popitem(last=False)
                self._bytes -= gone.nbytes
                self.stats["evicted"] += 1

    def resized(self, entry: ScopeData, before: int, max_bytes: int) -> None:
        """``entry`` (if cached) now holds ``entry.nbytes`` instead of ``before``."""
        with self._lock:
            if self._entries.get(entry.key) is not entry:
                return
            self._bytes += entry.nbytes - before
            while self._bytes > max_bytes and self._entries:
                _, gone = self._entries.popitem(last=False)
                self._bytes -= gone.nbytes
                self.stats["evicted"] += 1

    def drop(self, key: tuple[Any, ...]) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes

    def forget(self, tenant: str | None = None, actor: str | None = None) -> int:
        """Drop the entries of a tenant (and actor), e.g. right after forgetting it, so
        its plaintext does not stay in this process until the next call notices."""
        with self._lock:
            keys = [k for k in self._entries
                    if (tenant is None or k[1] == tenant) and (actor is None or actor in k[2])]
            for k in keys:
                self._bytes -= self._entries.pop(k).nbytes
            return len(keys)

    def clear(self) -> None:
        self.forget()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


CACHE = ScopeCache()
"""The process-wide cache every :class:`search.ChunkSearch` uses."""


def cache_key(conn: sa.Connection, tenant: str, actors: Sequence[str]) -> tuple[Any, ...]:
    """(database, tenant, actors): the database by its URL (without the password)."""
    url = conn.engine.url.render_as_string(hide_password=True)
    return (url, tenant, tuple(sorted(set(actors))))


def probe(key: tuple[Any, ...]) -> ScopeData | None:
    """The cached entry for ``key`` (maybe stale): the start-of-call statement counts the
    rows above its ``upto`` in its generation, and :func:`fetch` validates it."""
    return CACHE.peek(key)


def probe_params(entry: ScopeData | None) -> tuple[int, int]:
    """(generation, upto) to count newer rows against; (-1, 0) without an entry (the
    count is then 0 and costs one index probe)."""
    return (entry.generation, entry.upto) if entry is not None else (-1, 0)


def fetch(conn: sa.Connection, key: tuple[Any, ...], probed: ScopeData | None, tenant: str,
          actors: Sequence[str], generation: int, position: int, check: Check,
          max_bytes: int, parts: bool = True) -> ScopeData:
    """The scope's entry, valid in this snapshot: the probed one, the probed one grown by
    the rows above its ``upto``, or a fresh read (see the module docstring). ``check``
    must have been counted against ``probed`` (:func:`probe_params`). ``parts``: read the
    sentence vectors and the vocabulary too (the whole-scope ranker's; about three times
    the chunks' vectors), else only when first asked for (:func:`ensure_parts`)."""
    entry = probed
    if (entry is not None and entry.generation == generation
            and entry.created == check.created and check.total == entry.n + check.newer):
        if check.newer == 0:
            CACHE.stats["hits"] += 1
            return entry
        cols, matrix = _read(conn, tenant, generation, actors, entry.upto)
        if len(cols["positions"]) == check.newer:
            upto = max(position, entry.upto, max(cols["positions"]))
            grown = entry.grow(cols, matrix, upto)
            if entry.terms is not None:
                grown.terms = _merge_terms(entry.terms, read_terms(
                    conn, grown, tenant, actors, after=entry.upto))
            if parts or entry.pieces is not None:
                grown.attach(_or_read(entry.pieces, read_pieces, conn, grown, tenant, actors,
                                      entry.upto),
                             _or_read(entry.words, read_words, conn, grown, tenant, actors,
                                      entry.upto))
            CACHE.stats["grown"] += 1
            CACHE.put(grown, max_bytes)
            return grown
    cols, matrix = _read(conn, tenant, generation, actors, -1)
    upto = max([position, *cols["positions"][-1:]])
    fresh = ScopeData(key, generation, check.created, upto, cols, matrix)
    if parts:
        fresh.attach(read_pieces(conn, fresh, tenant, actors),
                     read_words(conn, fresh, tenant, actors))
    CACHE.stats["loads"] += 1
    CACHE.put(fresh, max_bytes)
    return fresh


_PARTS_LOCK = threading.Lock()


def ensure_parts(conn: sa.Connection, data: ScopeData, tenant: str, actors: Sequence[str],
                 max_bytes: int) -> None:
    """Read the entry's sentence vectors and vocabulary if it was loaded without them
    (valid: the entry was checked in this snapshot, and both are read at or below its
    ``upto``), and count their bytes in the cache."""
    with _PARTS_LOCK:
        if data.pieces is not None:
            return
        before = data.nbytes
        data.attach(read_pieces(conn, data, tenant, actors),
                    read_words(conn, data, tenant, actors))
        CACHE.resized(data, before, max_bytes)


def _or_read(old: Any, read: Any, conn: sa.Connection, data: ScopeData, tenant: str,
             actors: Sequence[str], after: int) -> Any:
    """``old`` grown by the rows above ``after``; everything when there is no ``old``."""
    if old is None:
        return read(conn, data, tenant, actors)
    return old + read(conn, data, tenant, actors, after=after)


def _merge_terms(old: dict[str, tuple[np.ndarray, np.ndarray]],
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
    """The counts of :data:`CHECK` for a call that did not get them from ``search.STATE``."""
    cgen, cupto = probe_params(probed)
    row = conn.exec_driver_sql(CHECK, {"tenant": tenant, "generation": generation,
                                       "actors": list(actors), "cap": cap, "cgen": cgen,
                                       "cupto": cupto}).one()
    return Check(total=int(row[0]), newer=int(row[1]) if cgen == generation else 0,
                 created=str(row[2]))

"""What a Store keeps in memory between retrieval calls: scope entries (scopedata.py), LRU
by bytes, validated against the database at every call; the lexemes of texts it has
asked Postgres for; the query expansion's word vectors. A :class:`ScopeCache` belongs to
the Store that made it (``store.scope_cache``), which passes it into every retrieval call;
nothing here is process-global.

What an entry is: **every** chunk row of (database, tenant, actors) in one chunks
generation whose event position is at or below ``upto``, read in one snapshot.

Why it is never stale (checked at the start of every call, in the call's own snapshot and
under the tenant's row-level security, in the statement that reads the bound):

* Chunk rows are immutable (nothing updates ``memory_chunks``) and, within one
  generation, inserted only by its projection runner, which holds the generation's row
  ``FOR UPDATE`` and writes rows with positions above its checkpoint in the same
  transaction that moves the checkpoint (memory/projections/applying.py). So once an entry
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
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from .scopedata import Check, ScopeData
from .scopeload import merge_terms, read_pieces, read_rows, read_terms, read_words

Key = tuple[Any, ...]


class LexemeMemo:
    """to_tsvector's lexemes of recent texts (queries, the scope's author names), per
    database and configuration: a pure function of the text, so a query repeated, or the
    author names of every call on one scope, cost no round trip. Bounded: past ``limit``
    texts it starts again empty (the texts come back on the next call)."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._found: dict[tuple[str, str, str], list[str]] = {}

    def get(self, conn: sa.Connection, config: str, text: str) -> list[str] | None:
        """The remembered lexemes of ``text`` (:meth:`put`), or None."""
        return self._found.get((database_of(conn), config, text))

    def put(self, conn: sa.Connection, config: str, text: str, lexemes: list[str]) -> None:
        if len(self._found) >= self.limit:
            self._found.clear()
        self._found[(database_of(conn), config, text)] = list(lexemes)

    def __len__(self) -> int:
        return len(self._found)


class WordVectorMemo:
    """The vectors of single query words the scope's vocabulary lacks, per model (the
    query expansion's, ranking/expansion.py): a question's words recur, and a model call
    costs far more than the ranking. Bounded: past ``limit`` words (~30 MB of 384-dim
    vectors) it starts again empty."""

    def __init__(self, limit: int = 20_000) -> None:
        self.limit = limit
        self._found: dict[tuple[str, int, str], np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, model: str, dim: int, word: str) -> np.ndarray | None:
        return self._found.get((model, dim, word))

    def put(self, model: str, dim: int, word: str, vector: np.ndarray) -> None:
        with self._lock:
            if len(self._found) >= self.limit:
                self._found.clear()
            self._found[(model, dim, word)] = vector

    def __len__(self) -> int:
        return len(self._found)


def database_of(conn: sa.Connection) -> str:
    """The connection's database, by its URL without the password."""
    return conn.engine.url.render_as_string(hide_password=True)


def cache_key(conn: sa.Connection, tenant: str, actors: Sequence[str]) -> Key:
    """(database, tenant, actors): the key of a scope's entry."""
    return (database_of(conn), tenant, tuple(sorted(set(actors))))


class ScopeCache:
    """A store's scope entries, LRU by bytes, and its :class:`LexemeMemo`. Thread-safe:
    entries are immutable, the map is guarded by a lock, and two threads loading one
    scope at once both get a correct entry (the later one is kept)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[Key, ScopeData] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._parts_lock = threading.Lock()
        self.stats = {"hits": 0, "grown": 0, "loads": 0, "evicted": 0}
        self.lexemes = LexemeMemo()
        """The lexemes of texts (queries, author names) seen by this store's calls."""
        self.word_vectors = WordVectorMemo()
        """The query expansion's vectors of single words, per model."""

    def peek(self, key: Key) -> ScopeData | None:
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

    def drop(self, key: Key) -> None:
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
        self.lexemes = LexemeMemo()
        self.word_vectors = WordVectorMemo()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    # -- reading an entry valid in the caller's snapshot ----------------------------------

    def probe(self, key: Key) -> ScopeData | None:
        """The cached entry for ``key`` (maybe stale): the start-of-call statement counts
        the rows above its ``upto`` in its generation, and :meth:`fetch` validates it."""
        return self.peek(key)

    def fetch(self, conn: sa.Connection, key: Key, probed: ScopeData | None, tenant: str,
              actors: Sequence[str], generation: int, position: int, check: Check,
              max_bytes: int, parts: bool = True) -> ScopeData:
        """The scope's entry, valid in this snapshot: the probed one, the probed one grown
        by the rows above its ``upto``, or a fresh read (see the module docstring).
        ``check`` must have been counted against ``probed`` (``scopedata.probe_params``).
        ``parts``: read the sentence vectors and the vocabulary too (the whole-scope
        ranker's; about three times the chunks' vectors), else only when first asked for
        (:meth:`ensure_parts`)."""
        entry = probed
        if (entry is not None and entry.generation == generation
                and entry.created == check.created and check.total == entry.n + check.newer):
            if check.newer == 0:
                self.stats["hits"] += 1
                return entry
            cols, matrix = read_rows(conn, tenant, generation, actors, entry.upto)
            if len(cols["positions"]) == check.newer:
                upto = max(position, entry.upto, max(cols["positions"]))
                grown = entry.grow(cols, matrix, upto)
                if entry.terms is not None:
                    grown.terms = merge_terms(entry.terms, read_terms(
                        conn, grown, tenant, actors, after=entry.upto))
                if parts or entry.pieces is not None:
                    grown.attach(_or_read(entry.pieces, read_pieces, conn, grown, tenant,
                                          actors, entry.upto),
                                 _or_read(entry.words, read_words, conn, grown, tenant,
                                          actors, entry.upto))
                self.stats["grown"] += 1
                self.put(grown, max_bytes)
                return grown
        cols, matrix = read_rows(conn, tenant, generation, actors, -1)
        upto = max([position, *cols["positions"][-1:]])
        fresh = ScopeData(key, generation, check.created, upto, cols, matrix)
        if parts:
            fresh.attach(read_pieces(conn, fresh, tenant, actors),
                         read_words(conn, fresh, tenant, actors))
        self.stats["loads"] += 1
        self.put(fresh, max_bytes)
        return fresh

    def ensure_parts(self, conn: sa.Connection, data: ScopeData, tenant: str,
                     actors: Sequence[str], max_bytes: int) -> None:
        """Read the entry's sentence vectors and vocabulary if it was loaded without them
        (valid: the entry was checked in this snapshot, and both are read at or below its
        ``upto``), and count their bytes."""
        with self._parts_lock:
            if data.pieces is not None:
                return
            before = data.nbytes
            data.attach(read_pieces(conn, data, tenant, actors),
                        read_words(conn, data, tenant, actors))
            self.resized(data, before, max_bytes)


def _or_read(old: Any, read: Callable[..., Any], conn: sa.Connection, data: ScopeData,
             tenant: str, actors: Sequence[str], after: int) -> Any:
    """``old`` grown by the rows above ``after``; everything when there is no ``old``."""
    if old is None:
        return read(conn, data, tenant, actors)
    return old + read(conn, data, tenant, actors, after=after)

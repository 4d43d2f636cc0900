"""Widening a question's lexical query with the scope's own words nearest its words.

Why: a question often names a thing by another word than the turn that answers it
("instrument" for "violin", "pet" for "dog"); BM25 then misses the turn and only the
vector search, which blurs a whole turn into one vector, can find it. Each word a
question uses brings the scope's ``expansion_per_word`` lexemes nearest to it (cosine of
single-word vectors of the same model, at least ``expansion_min_cosine``), each weighing
``expansion_weight`` x that cosine in BM25 against 1 for the question's own terms.
LoCoMo (benchmarks/RESULTS.md, "LoCoMo"; without it: benchmarks/locomo.py --set
expansion_weight=0): open-domain recall@10 .528 -> .553 and recall@50 .947 -> .951.

The vocabulary is the scope's rows of ``memory_words`` (memory/projections/words.py) at
or below the call's bound; a lexeme's vector is the normalised sum of the vectors of its
words. A question word the vocabulary lacks is embedded at query time (and its lexeme
asked of Postgres), which needs the call's embedder.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...pg.vectors import binary_rows
from ...projections.chunking import words_of
from ...projections.words import WORDS_CONFIG, lexeme_lists
from ..scopecache import WordVectorMemo
from ..scopeparts import Words, words_from_rows
from ..search import ChunkSearch
from ..settings import RetrievalSettings

if TYPE_CHECKING:
    from ...embedding import Embedder

VOCABULARY = """
SELECT w.word, w.lexeme, w.event_position, vector_send(w.embedding)
  FROM memory_words w
 WHERE w.tenant = %(tenant)s AND w.generation = %(generation)s
   AND w.actor_id = ANY(%(actors)s) AND w.event_position <= %(bound)s
 ORDER BY w.word, w.event_position
"""

Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Vocabulary:
    """The scope's lexemes with one unit vector each, and its words' (lexeme, vector)."""

    lexemes: list[str]
    matrix: np.ndarray
    words: dict[str, tuple[str, np.ndarray]]


def build(rows: Words) -> Vocabulary:
    """From vocabulary rows (a word held by several actors counts once)."""
    if not rows.words:
        return Vocabulary([], np.zeros((0, 0), dtype=np.float32), {})
    _, first = np.unique(np.asarray(rows.words, dtype=object), return_index=True)
    first = np.sort(first)
    lex = [rows.lexemes[i] for i in first]
    lexemes, inverse = np.unique(np.asarray(lex, dtype=object), return_inverse=True)
    sums = np.zeros((len(lexemes), rows.matrix.shape[1]), dtype=np.float32)
    np.add.at(sums, inverse, rows.matrix[first])
    norms = np.sqrt(np.einsum("ij,ij->i", sums, sums))
    unit = sums / np.maximum(norms, 1e-9)[:, None]
    words = {rows.words[i]: (rows.lexemes[i], rows.matrix[i]) for i in first}
    return Vocabulary([str(x) for x in lexemes], unit.astype(np.float32), words)


def vocabulary(finder: ChunkSearch) -> Vocabulary:
    """The scope's vocabulary at the finder's bound: from the cached entry (kept with it
    when the bound holds every row), else read in SQL."""
    data = finder.data_parts()
    if data is not None and data.words is not None:
        every = finder.whole_entry
        found = data.derived.get("vocabulary") if every else None
        if found is None:
            rows = data.words
            if not every:
                keep = np.flatnonzero(rows.positions <= finder.bound)
                rows = Words([rows.words[i] for i in keep],
                             [rows.lexemes[i] for i in keep],
                             rows.positions[keep], rows.matrix[keep]
                             if len(rows.matrix) else rows.matrix)
            found = build(rows)
            if every:
                data.derived["vocabulary"] = found
        return found
    return build(words_from_rows(binary_rows(finder.conn, VOCABULARY, finder.sql_params())))


def word_vectors(model: Embedder, words: Sequence[str], memo: WordVectorMemo
                 ) -> np.ndarray:
    """The query expansion's vectors of query words the scope's vocabulary lacks. Each
    word is embedded alone (so its vector never depends on which words came with it, and
    a recorded context replays bit for bit) and remembered per model in ``memo`` (the
    store's): a question's words recur, and a model call costs far more than the ranking."""
    out = []
    for w in words:
        vec = memo.get(model.name, int(model.dim), w)
        if vec is None:
            vec = model.embed([w])[0]
            memo.put(model.name, int(model.dim), w, vec)
        out.append(vec)
    return np.stack(out) if out else np.zeros((0, int(model.dim)), dtype=np.float32)


def expand(finder: ChunkSearch, query: str, terms: Collection[str],
           exclude: Collection[str], s: RetrievalSettings, embed: Embed | None
           ) -> dict[str, float]:
    """Lexemes to add to the query's ``terms``, with their BM25 weights. ``exclude``: the
    lexemes never added, nor expanded from (the scope's author names)."""
    if not s.expansion_weight or s.expansion_per_word <= 0:
        return {}
    vocab = vocabulary(finder)
    if not vocab.lexemes:
        return {}
    asked = _query_words(finder, query, vocab, embed)
    out: dict[str, float] = {}
    for lexeme, vec in asked:
        if lexeme in exclude:
            continue
        sims = vocab.matrix @ np.asarray(vec, dtype=np.float32)
        for t in _top(sims, s.expansion_per_word + 1):
            near = vocab.lexemes[t]
            if sims[t] < s.expansion_min_cosine or near in terms or near in exclude:
                continue
            out[near] = max(out.get(near, 0.0), s.expansion_weight * float(sims[t]))
    return out


def _top(sims: np.ndarray, k: int) -> list[int]:
    """The ``k`` best rows, best first (ties: the lower row first)."""
    if k < len(sims):
        part = np.argpartition(-sims, k - 1)[:k]
        return part[np.lexsort((part, -sims[part]))].tolist()
    return np.lexsort((np.arange(len(sims)), -sims)).tolist()


def _lexemes(finder: ChunkSearch, words: list[str]) -> dict[str, str]:
    """word -> its one lexeme, for the query words the vocabulary lacked; remembered
    with the queries' lexemes (``finder.lexemes``), so Postgres is asked once per word."""
    found = {w: finder.lexemes.get(finder.conn, WORDS_CONFIG, w) for w in words}
    todo = [w for w, lx in found.items() if lx is None]
    if todo:
        for w, lx in lexeme_lists(finder.conn, todo).items():
            finder.lexemes.put(finder.conn, WORDS_CONFIG, w, lx)
            found[w] = lx
    return {w: lx[0] for w, lx in found.items() if lx is not None and len(lx) == 1}


def _query_words(finder: ChunkSearch, query: str, vocab: Vocabulary, embed: Embed | None
                 ) -> list[tuple[str, np.ndarray]]:
    """(lexeme, vector) of each of the query's words that stems to one lexeme."""
    words = words_of(query)
    unseen = [w for w in words if w not in vocab.words]
    found: dict[str, tuple[str, np.ndarray]] = {}
    if unseen and embed is not None:
        lexemes = _lexemes(finder, unseen)
        todo = [w for w in unseen if w in lexemes]
        if todo:
            found = {w: (lexemes[w], v) for w, v in zip(todo, embed(todo), strict=True)}
    return [vocab.words.get(w) or found[w] for w in words
            if w in vocab.words or w in found]

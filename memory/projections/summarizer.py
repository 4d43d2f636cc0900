"""The summarizer a session summary is made by: :class:`Turn` and :class:`Summary` (what goes
in and out), the :class:`Summarizer` protocol, and the default :class:`ExtractiveSummarizer`.

The default needs no language model: it turns the candidate sentences (previous summary
lines + new turns) into TF-IDF vectors, ranks them by centrality (mean cosine similarity to
the others, as LexRank does), drops near-duplicates and keeps what fits a length bound, in
conversation order. ``vectors="embedding"`` uses the embedding model's vectors instead
(each line embedded once per process); it costs about as much model time as the chunks
projection again (LoCoMo: 40 s against 6 s for chunks on one conversation, measured
2026-11-27), the TF-IDF vectors cost milliseconds. Any object with the :class:`Summarizer`
shape can replace it (e.g. a call to a language model). The projection that keeps
summaries up to date is memory/projections/summaries.py.
"""

from __future__ import annotations

import math
import re
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..embedding import Embedder, default_embedder
from ..errors import DependencyError
from .chunking import split_sentences


@dataclass(frozen=True)
class Turn:
    """One event of a session, as text."""

    event_id: Any
    position: int
    version: int
    role: str | None
    author: str | None
    text: str
    occurred_at: datetime

    @property
    def speaker(self) -> str:
        return self.author or self.role or "?"


@dataclass(frozen=True)
class Summary:
    """A summary text and the events it was drawn from. For line-level provenance,
    ``source_event_ids`` has one id per line of ``text`` (lines separated by newlines)."""

    text: str
    source_event_ids: tuple[Any, ...] = ()


@runtime_checkable
class Summarizer(Protocol):
    """Turns the previous summary and the new turns into the next summary."""

    name: str

    def config(self) -> dict[str, Any]:
        """What shapes the output; recorded with the projection generation."""
        ...

    def summarize(self, previous: Summary | None, turns: Sequence[Turn]) -> Summary | str:
        """The new summary. A plain ``str`` gets, as sources, the previous summary's
        sources plus every turn (conservative provenance)."""
        ...


_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?")
_STOP_WORDS = """
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its
itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
i'm it's that's don't i've i'll you're we're can't didn't isn't oh yeah yes ok okay really
"""
_STOP = frozenset(_STOP_WORDS.split())


def tfidf_vectors(texts: Sequence[str]) -> np.ndarray:
    """Unit-length TF-IDF rows (sublinear term frequency, idf = log(1 + n / df)) over the
    lower-cased words of ``texts``, English stop words left out. Deterministic."""
    counts = [Counter(w for w in _WORD.findall(t.lower()) if w not in _STOP) for t in texts]
    vocab: dict[str, int] = {}
    for c in counts:
        for w in sorted(c):
            vocab.setdefault(w, len(vocab))
    m = np.zeros((len(texts), max(len(vocab), 1)))
    for i, c in enumerate(counts):
        for w, k in c.items():
            m[i, vocab[w]] = 1.0 + math.log(k)
    df = (m > 0).sum(axis=0)
    m *= np.log(1.0 + len(texts) / np.maximum(df, 1))
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms > 0, norms, 1.0)


class ExtractiveSummarizer:
    """Centrality over sentence vectors, redundancy removed, at most ``max_chars``.

    ``vectors``: ``"tfidf"`` (default; no model, the speaker prefix left out of the
    vectors) or ``"embedding"`` (``embedder``'s vectors of the whole line; ``redundancy``
    then defaults to 0.9 instead of 0.8)."""

    name = "extractive"

    def __init__(self, embedder: Embedder | None = None, *, max_chars: int = 600,
                 redundancy: float | None = None, min_words: int = 3,
                 vectors: str = "tfidf", cache_lines: int = 4096) -> None:
        if vectors not in ("tfidf", "embedding"):
            raise ValueError(f"unknown vectors {vectors!r} (tfidf or embedding)")
        self.vectors = vectors
        self._embedder = embedder
        self.max_chars = max_chars
        self.redundancy = redundancy if redundancy is not None else (
            0.8 if vectors == "tfidf" else 0.9)
        self.min_words = min_words
        self.cache_lines = cache_lines
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"vectors": self.vectors, "max_chars": self.max_chars,
                               "redundancy": self.redundancy, "min_words": self.min_words}
        if self.vectors == "embedding":
            out.update(model=self.embedder.name, dim=int(self.embedder.dim))
        return out

    def candidates(self, previous: Summary | None, turns: Sequence[Turn]
                   ) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        seen: set[str] = set()
        if previous is not None and previous.text:
            lines = [ln for ln in previous.text.split("\n") if ln.strip()]
            ids = list(previous.source_event_ids)
            for i, line in enumerate(lines):
                if line not in seen:
                    seen.add(line)
                    out.append((line, ids[i] if len(ids) == len(lines) else None))
        for turn in turns:
            for sentence in split_sentences(turn.text):
                if len(sentence.split()) < self.min_words:
                    continue
                line = f"{turn.speaker}: {' '.join(sentence.split())}"
                if len(line) > self.max_chars:
                    line = line[:self.max_chars - 1].rstrip() + "\u2026"
                if line not in seen:
                    seen.add(line)
                    out.append((line, turn.event_id))
        return out

    def _vectors(self, lines: list[str]) -> np.ndarray:
        if self.vectors == "tfidf":
            # the words after "speaker: " (a name on every line would look central)
            return tfidf_vectors([ln.split(": ", 1)[-1] for ln in lines])
        todo = [ln for ln in dict.fromkeys(lines) if ln not in self._cache]
        if todo:
            try:
                vectors = self.embedder.embed(todo)
            except Exception as exc:  # the model's failure, not the events' (see chunks)
                raise DependencyError(f"embedder {self.embedder.name!r} failed: "
                                      f"{type(exc).__name__}: {exc}") from exc
            for ln, v in zip(todo, vectors, strict=True):
                self._cache[ln] = np.asarray(v, dtype=np.float64)
        out = np.stack([self._cache[ln] for ln in lines])
        for ln in lines:
            self._cache.move_to_end(ln)
        while len(self._cache) > self.cache_lines:
            self._cache.popitem(last=False)
        return out

    def summarize(self, previous: Summary | None, turns: Sequence[Turn]) -> Summary:
        cands = self.candidates(previous, turns)
        if not cands:
            return previous or Summary("")
        vectors = self._vectors([c[0] for c in cands])
        sims = vectors @ vectors.T
        n = len(cands)
        centrality = (sims.sum(axis=1) - np.diag(sims)) / max(n - 1, 1)
        # stable order: score, then earlier first
        order = sorted(range(n), key=lambda i: (-round(float(centrality[i]), 6), i))
        chosen: list[int] = []
        size = 0
        for i in order:
            line = cands[i][0]
            if size + len(line) + (1 if chosen else 0) > self.max_chars:
                continue
            if any(sims[i, j] >= self.redundancy for j in chosen):
                continue
            chosen.append(i)
            size += len(line) + (1 if len(chosen) > 1 else 0)
        chosen.sort()
        return Summary("\n".join(cands[i][0] for i in chosen),
                       tuple(cands[i][1] for i in chosen))



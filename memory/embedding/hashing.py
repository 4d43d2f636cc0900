"""A model-free embedder for tests and benchmarks that need vectors but not their meaning."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .protocol import normalize


class HashEmbedder:
    """A deterministic, model-free embedder (feature hashing of words). Cheap and crude:
    for tests and benchmarks that need vectors but not their meaning."""

    def __init__(self, dim: int = 64, *, name: str | None = None) -> None:
        self.dim = dim
        self.name = name or f"hash-{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import zlib

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                h = zlib.crc32(word.encode("utf-8"))
                out[i, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
            if not out[i].any():
                out[i, 0] = 1.0
        return normalize(out)

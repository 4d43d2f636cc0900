"""Which backend embeds, and the one default embedder per process and backend.

``MEMORY_EMBEDDER`` picks the backend for the process: ``onnx`` (fp32, the default),
``onnx-int8`` (dynamically quantised) or ``torch``. When ONNX was not asked for and cannot
run (no exporter installed and no cached export, or a model with modules ONNX does not
cover), fp32 falls back to PyTorch, which gives the same vectors under the same name;
int8, or a backend named explicitly, fails instead with what to install or choose.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .protocol import Embedder
from .sentence_transformers_backend import SentenceTransformerEmbedder

BACKENDS = ("onnx", "onnx-int8", "torch")
DEFAULT_BACKEND = "onnx"

_default: dict[str, Embedder] = {}
_default_lock = threading.Lock()


def configured_backend() -> str:
    """The backend ``MEMORY_EMBEDDER`` names (``onnx``, ``onnx-int8``, ``torch``), else
    the default."""
    value = os.environ.get("MEMORY_EMBEDDER", "").strip().lower() or DEFAULT_BACKEND
    if value not in BACKENDS:
        from ..errors import ConfigurationError

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
        from ..errors import ConfigurationError

        raise ConfigurationError(f"unknown embedder backend {backend!r}: one of "
                                 f"{', '.join(BACKENDS)}")
    if backend == "torch":
        return SentenceTransformerEmbedder(path)
    from ..errors import ConfigurationError
    from .onnx_backend import OnnxEmbedder, unsupported

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

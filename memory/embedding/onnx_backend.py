"""An embedder on ONNX Runtime: the same model as the sentence-transformers one, at the
CPU's speed, with no PyTorch at run time.

The pipeline is all-MiniLM-L6-v2's own: the fast tokenizer (``tokenizer.json``, lower
case, truncated at the model's ``max_seq_length``), the exported encoder, mean pooling
over the attention mask and L2 normalisation (numpy). The encoder is exported once and
cached (:mod:`memory.embedding.export`).

Variants, and what they mean for stored vectors:

- ``fp32`` gives the sentence-transformers vectors to within float rounding (cosine
  difference ~1e-7, ``tests/test_embedding_onnx.py``), so it carries the model's own
  name: a store built with either is served by the other.
- ``int8`` (dynamic quantisation) moves vectors by up to a few hundredths in cosine, and
  a text's vector depends slightly on the batch it was embedded with (activations are
  quantised per batch). It is another model as far as stored vectors go: its name ends
  in ``+int8``, so a store projected with one variant refuses the other until
  ``memory reproject chunks``.

Threads: one ONNX Runtime session, shared, with one intra-op thread. A single short query
gains nothing from more (the work per operator is too small to split), and concurrent
callers (``Store.context`` from several threads) each run on their own thread without
fighting a thread pool per call for the cores. Large inputs (projection) are tokenised,
sorted by length (less padding), cut into ``batch_size`` batches and spread over a pool
of ``workers`` threads (default: the number of CPUs) running the same session.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from .weights import DEFAULT_MODEL, default_model_path

DEFAULT_MAX_SEQ_LENGTH = 256
INT8_SUFFIX = "+int8"


class OnnxEmbedder:
    """A local sentence-transformers model folder (mean pooling, BERT-style tokenizer),
    exported to ONNX and run by ONNX Runtime on the CPU, offline.

    ``variant`` is ``"fp32"`` or ``"int8"``; ``name`` defaults to the model's name (the
    folder's, or ``all-MiniLM-L6-v2`` for the packaged one) plus ``+int8`` for int8.
    ``threads`` is ONNX Runtime's intra-op thread count per call; ``workers`` how many
    batches of a large input run at once.
    """

    def __init__(self, path: str | Path | None = None, *, variant: str = "fp32",
                 name: str | None = None, batch_size: int = 64, threads: int = 1,
                 workers: int | None = None, model_file: str | Path | None = None) -> None:
        folder = Path(path) if path is not None else default_model_path()
        if not (folder / "tokenizer.json").is_file():
            raise ConfigurationError(
                f"no sentence-transformers model with a tokenizer.json at {folder}: give the "
                "path of a local model folder (models are never downloaded at run time)")
        if variant not in ("fp32", "int8"):
            raise ConfigurationError(f"unknown ONNX variant {variant!r}: 'fp32' or 'int8'")
        base = name or (DEFAULT_MODEL if path is None else folder.name)
        self.name = base + INT8_SUFFIX if variant == "int8" and name is None else base
        self.variant = variant
        self.path = folder
        self.batch_size = batch_size
        self.threads = threads
        self.workers = workers or os.cpu_count() or 1
        self.max_seq_length = _max_seq_length(folder)
        _check_supported(folder)
        self._tokenizer = _tokenizer(folder, self.max_seq_length)
        if model_file is None:
            from .export import cached_export

            model_file = cached_export(folder, variant, name=base)
        self.model_file = Path(model_file)
        self._session = _session(self.model_file, threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.dim = int(self._session.get_outputs()[0].shape[-1])
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        if len(texts) == 1:
            enc = [self._tokenizer.encode(texts[0])]
        else:
            enc = self._tokenizer.encode_batch(texts)
        ids = [e.ids for e in enc]
        if len(ids) <= self.batch_size:
            return self._run(ids)
        order = np.argsort([len(x) for x in ids], kind="stable")
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        pool = self._executor()
        for rows, vecs in zip(batches, pool.map(lambda b: self._run([ids[j] for j in b]),
                                                 batches), strict=True):
            out[rows] = vecs
        return out

    def _run(self, ids: list[list[int]]) -> np.ndarray:
        """One batch: pad to its longest text, encode, mean-pool, normalise."""
        width = max(len(x) for x in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, x in enumerate(ids):
            input_ids[i, :len(x)] = x
            mask[i, :len(x)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        hidden = self._session.run(None, feed)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return np.ascontiguousarray(pooled / norms, dtype=np.float32)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="memory-onnx")
            return self._pool

    def __repr__(self) -> str:
        return (f"OnnxEmbedder(name={self.name!r}, dim={self.dim}, variant={self.variant!r}, "
                f"threads={self.threads}, workers={self.workers})")


def _max_seq_length(folder: Path) -> int:
    cfg = folder / "sentence_bert_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_SEQ_LENGTH


SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


def unsupported(folder: Path) -> str | None:
    """Why this embedder cannot give ``folder``'s sentence-transformers vectors, or None.
    It runs a transformer, mean pooling and normalisation; a model with other modules
    (a Dense layer, another pooling) is refused rather than given other vectors."""
    modules = folder / "modules.json"
    if modules.is_file():
        for m in json.loads(modules.read_text()):
            kind = str(m.get("type", "")).rsplit(".", 1)[-1]
            if kind not in SUPPORTED_MODULES:
                return f"it has a {kind} module"
    for cfg in folder.glob("*_Pooling/config.json"):
        conf = json.loads(cfg.read_text())
        mode = conf.get("pooling_mode")
        if isinstance(mode, str):  # newer sentence-transformers: one named mode
            modes = {mode}
        else:
            modes = {k.removeprefix("pooling_mode_").removesuffix("_tokens")
                     for k, v in conf.items() if k.startswith("pooling_mode_") and v is True}
        if modes and modes != {"mean"}:
            return f"it pools with {sorted(modes)}"
    return None


def _check_supported(folder: Path) -> None:
    reason = unsupported(folder)
    if reason is not None:
        raise ConfigurationError(
            f"the ONNX embedder cannot run the model at {folder}: {reason} (it runs a "
            "transformer with mean pooling); use the PyTorch embedder (MEMORY_EMBEDDER=torch "
            "or --embedder torch)")


def _tokenizer(folder: Path, max_length: int) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()  # each batch is padded to its own longest text in _run
    tok.enable_truncation(max_length)
    return tok


def _session(model_file: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle threads of a pool spin by default, which steals the cores from other callers.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])

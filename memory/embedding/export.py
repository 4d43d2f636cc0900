"""Exporting a sentence-transformers model to ONNX once, and caching the result.

The export runs PyTorch (``torch.onnx.export``) and, for the int8 variant, ONNX Runtime's
dynamic quantiser; both need the ``onnx`` extra (``onnx`` and ``onnxscript``). Running the
exported file needs neither: :mod:`memory.embedding.onnx_backend` loads it with ONNX Runtime
and the fast tokenizer alone.

Exports live under ``MEMORY_HOME/models`` (or ``MEMORY_MODEL_CACHE``), one folder per
*key*: the model folder's contents (names, sizes, small files' bytes and the ends of large
ones), the variant, the exporter recipe and the versions of torch, onnx and ONNX Runtime.
Any of those changing gives a new folder, so a stale export is never picked up. A folder
is written beside its final place and renamed into it, so a reader never sees half an
export and two processes exporting at once both end up with a whole one. Nothing is ever
downloaded: the weights come from the local model folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from ..config import memory_home
from ..errors import ConfigurationError

# Bumped whenever the export or quantisation steps below change what they produce.
RECIPE = "1"
VARIANTS = ("fp32", "int8")
OPSET = 18
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MODEL_FILE = "model.onnx"
META_FILE = "export.json"

_lock = threading.Lock()


def cache_root() -> Path:
    """Where exported models are kept: ``MEMORY_MODEL_CACHE``, else ``MEMORY_HOME/models``."""
    env = os.environ.get("MEMORY_MODEL_CACHE")
    return Path(env).expanduser() if env else memory_home() / "models"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def folder_digest(folder: Path) -> str:
    """A digest of a model folder that changes when its weights or settings do, without
    reading hundreds of megabytes: every file's name and size, the whole of files under
    1 MiB, and the first and last MiB of larger ones."""
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        rel = p.relative_to(folder).as_posix()
        if rel.startswith(".") or rel.endswith(".md"):
            continue
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with p.open("rb") as f:
            if size <= 1 << 20:
                h.update(f.read())
            else:
                h.update(f.read(1 << 20))
                f.seek(size - (1 << 20))
                h.update(f.read())
    return h.hexdigest()


def export_key(folder: Path, variant: str) -> str:
    parts = {"model": folder_digest(folder), "variant": variant, "recipe": RECIPE,
             "opset": OPSET, "torch": _version("torch"), "onnx": _version("onnx"),
             "onnxruntime": _version("onnxruntime")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def cached_export(folder: Path, variant: str, *, name: str) -> Path:
    """The path of ``folder``'s model exported as ``variant`` (``fp32`` or ``int8``),
    exporting it first if this key has no export yet."""
    if variant not in VARIANTS:
        raise ConfigurationError(f"unknown ONNX variant {variant!r}; one of {VARIANTS}")
    target = cache_root() / f"{_safe(name)}-{variant}-{export_key(folder, variant)}"
    done = target / MODEL_FILE
    if done.is_file():
        return done
    with _lock:
        if done.is_file():
            return done
        _require_exporter(variant)
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            if variant == "int8":  # quantised from the (cached) fp32 export
                quantize_int8(_unlocked_fp32(folder, name), work / MODEL_FILE)
            else:
                export_fp32(folder, work / MODEL_FILE)
            (work / META_FILE).write_text(json.dumps({
                "name": name, "variant": variant, "source": str(folder),
                "recipe": RECIPE, "opset": OPSET, "torch": _version("torch"),
                "onnx": _version("onnx"), "onnxruntime": _version("onnxruntime")},
                indent=2) + "\n")
            work.chmod(0o755)
            try:
                work.rename(target)
            except OSError:
                if not done.is_file():  # another process's export is whole, or this fails
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return done


def _unlocked_fp32(folder: Path, name: str) -> Path:
    _lock.release()  # cached_export takes the lock itself
    try:
        return cached_export(folder, "fp32", name=name)
    finally:
        _lock.acquire()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _require_exporter(variant: str) -> None:
    missing = [m for m in ("torch", "onnx", "onnxscript") if _version(m) == "-"]
    if missing:
        raise ConfigurationError(
            f"exporting the model to ONNX ({variant}) needs {', '.join(missing)}: install "
            "the extra (`pip install 'memory[onnx]'`, which `make` does), or use the "
            "PyTorch embedder (MEMORY_EMBEDDER=torch). The export runs once and is cached "
            f"under {cache_root()}.")


def export_fp32(folder: Path, out: Path) -> None:
    """The model's transformer, token ids in and last hidden states out, with batch and
    sequence length dynamic. Pooling and normalising stay outside (numpy), as in
    sentence-transformers, so the graph is the encoder alone."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from torch.export import Dim
    from transformers import AutoModel

    # eager attention: the traced graph is plain MatMul/Softmax, which ONNX Runtime fuses
    model = AutoModel.from_pretrained(str(folder), local_files_only=True,
                                      attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in INPUTS)
    batch, seq = Dim("batch"), Dim("seq", max=512)
    shapes = {k: {0: batch, 1: seq} for k in INPUTS}
    with torch.no_grad(), _quiet():
        torch.onnx.export(Encoder(model), example, str(out), dynamo=True,
                          external_data=False, dynamic_shapes=shapes, opset_version=OPSET,
                          input_names=list(INPUTS), output_names=["last_hidden_state"])


def quantize_int8(fp32: Path, out: Path) -> None:
    """Dynamic int8 quantisation, weights signed and per output channel: per-tensor scales
    cost about five times as much cosine error on this model (benchmarks/RESULTS.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(fp32), str(out), per_channel=True, weight_type=QuantType.QInt8)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' progress lines and advice go to the log at debug level, not to the
    user's terminal: the export is an internal step of opening the embedder."""
    import logging

    log = logging.getLogger(__name__)
    root = logging.getLogger()
    level = root.level
    out = io.StringIO()
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
        if out.getvalue():
            log.debug("%s", out.getvalue())

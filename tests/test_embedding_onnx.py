"""The ONNX Runtime embedder against the PyTorch one, the variants' identities in a store,
and the export cache (offline, with the network blocked)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import memory
from memory.cli import main
from memory.embedding import (
    OnnxEmbedder,
    SentenceTransformerEmbedder,
    default_embedder,
    load_embedder,
    selection,
)
from memory.embedding import export as onnx_export
from memory.errors import ConfigurationError
from memory.projections import ProjectionConfigMismatch, live_generation

# Measured (benchmarks/embedding.py, LoCoMo questions and turns): fp32 differs from
# PyTorch by ~1e-7 in cosine; int8 (per-channel weights) by up to ~0.05, mean ~0.01.
FP32_COSINE_TOLERANCE = 1e-5
INT8_COSINE_MAX = 0.08
INT8_COSINE_MEAN = 0.02

TEXTS = [
    "Caroline went to the LGBTQ support group on 7 May 2023.",
    "What did Melanie paint last year?",
    "",
    "   padded with spaces   ",
    "Ünïcödé, emoji 🎉 and 中文 characters",
    "x" * 3000,  # one long word: many word pieces, truncated
    " ".join(f"Sentence {i} talks about the trip to Kyoto and the food there." for i in range(60)),
    *(f"Turn {i}: we adopted {'a cat' if i % 2 else 'two dogs'} in spring number {i}."
      for i in range(90)),  # more than one batch: sorted by length, spread over the pool
]


@pytest.fixture(scope="module")
def torch_embedder() -> Any:
    return default_embedder("torch")


@pytest.fixture(scope="module")
def int8() -> Any:
    return default_embedder("onnx-int8")


def cosine_gaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 1.0 - (a * b).sum(axis=1)


def test_fp32_gives_pytorchs_vectors_under_the_same_name(embedder: Any,
                                                          torch_embedder: Any) -> None:
    assert isinstance(embedder, OnnxEmbedder)  # the default backend
    assert embedder.name == torch_embedder.name == "all-MiniLM-L6-v2"
    got, want = embedder.embed(TEXTS), torch_embedder.embed(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cosine_gaps(got, want).max() < FP32_COSINE_TOLERANCE
    np.testing.assert_allclose(got, want, atol=1e-4)
    # one text alone (the query path) gives the vector it has in a batch
    np.testing.assert_allclose(embedder.embed([TEXTS[1]])[0], got[1], atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_the_query_path_needs_no_torch(embedder: Any) -> None:
    """Once exported (by the fixture, into this run's MEMORY_HOME), a process embeds with
    the tokenizer, ONNX Runtime and numpy alone."""
    code = ("import sys; from memory.embedding import default_embedder; "
            "v = default_embedder().embed(['where did we stay?']); "
            "print(v.shape, sorted(m for m in ('torch', 'transformers', "
            "'sentence_transformers', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                         capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "(1, 384) []"


def test_int8_is_close_but_another_model(int8: Any, torch_embedder: Any) -> None:
    assert int8.name == "all-MiniLM-L6-v2+int8" and int8.dim == 384
    gaps = cosine_gaps(int8.embed(TEXTS), torch_embedder.embed(TEXTS))
    assert gaps.max() < INT8_COSINE_MAX and gaps.mean() < INT8_COSINE_MEAN
    assert gaps.max() > FP32_COSINE_TOLERANCE  # it is not the same vector space


def test_concurrent_callers_get_the_sequential_vectors(embedder: Any) -> None:
    queries = TEXTS[:8]
    want = [embedder.embed([q])[0] for q in queries]
    got: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(queries))

    def call(i: int) -> None:
        barrier.wait()
        for _ in range(5):
            got[i] = embedder.embed([queries[i]])[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, w in enumerate(want):
        np.testing.assert_array_equal(got[i], w)


def chunk_rows(store: memory.Store) -> list[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT generation, event_position, chunk_index, embedding::text FROM memory_chunks "
            "ORDER BY generation, event_position, chunk_index").fetchall()


def test_a_store_projected_with_one_variant_refuses_the_other_until_reprojected(
        database_url: str, store: memory.Store, embedder: Any, int8: Any,
        torch_embedder: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(4):
        store.append("trip", memory.message("user", f"We booked the ryokan in Kyoto, day {i}."),
                     actor="maya")
    store.project(["chunks"], embedder=embedder)
    before = chunk_rows(store)
    question = dict(actor="maya", session="trip", budget=500)
    assert store.context("Where did we stay?", embedder=embedder, **question).sources

    store.append("trip", memory.message("user", "The onsen was hot."), actor="maya")
    with pytest.raises(ProjectionConfigMismatch, match=r"all-MiniLM-L6-v2\+int8"):
        store.project(["chunks"], embedder=int8)
    with pytest.raises(ProjectionConfigMismatch, match=r"built with 'all-MiniLM-L6-v2'"):
        store.context("Where did we stay?", embedder=int8, **question)
    assert chunk_rows(store) == before  # nothing written
    # PyTorch gives the same vectors under the same name: accepted
    assert store.context("Where did we stay?", embedder=torch_embedder, **question).sources

    assert main(["reproject", "chunks", "--embedder", "onnx-int8", "--url", database_url,
                 "--no-progress"]) == 0
    assert "rebuilt generation 2" in capsys.readouterr().out
    with store.engine.connect() as conn:
        live = live_generation(conn, "chunks")
        assert live is not None and live.config["model"] == "all-MiniLM-L6-v2+int8"
    after = chunk_rows(store)
    assert {r[0] for r in after} == {2} and len(after) == len(before) + 1
    assert store.context("Where did we stay?", embedder=int8, **question).sources
    with pytest.raises(ProjectionConfigMismatch, match=r"\+int8"):
        store.context("Where did we stay?", embedder=embedder, **question)
    store.append("trip", memory.message("user", "And the garden."), actor="maya")
    with pytest.raises(ProjectionConfigMismatch):
        store.project(["chunks"], embedder=embedder)
    assert store.project(["chunks"], embedder=int8)[0].events == 1


def test_backend_is_chosen_by_memory_embedder(monkeypatch: pytest.MonkeyPatch,
                                              embedder: Any, int8: Any) -> None:
    monkeypatch.setenv("MEMORY_EMBEDDER", "onnx-int8")
    assert default_embedder() is int8 and load_embedder() is int8
    monkeypatch.setenv("MEMORY_EMBEDDER", "torch")
    assert isinstance(default_embedder(), SentenceTransformerEmbedder)
    monkeypatch.setenv("MEMORY_EMBEDDER", "onnx")
    assert default_embedder() is embedder
    monkeypatch.setenv("MEMORY_EMBEDDER", "tensorflow")
    with pytest.raises(ConfigurationError, match="MEMORY_EMBEDDER='tensorflow'"):
        default_embedder()


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach another machine fails the test (Unix sockets still work)."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise NetworkUsed(f"network connection attempted to {address!r}")
        return real_connect(self, address)

    def resolve(*args: Any, **kwargs: Any) -> Any:
        raise NetworkUsed(f"name lookup attempted: {args[:2]!r}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    monkeypatch.setattr(socket, "create_connection", resolve)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_export_is_made_offline_once_and_redone_when_its_key_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None,
        int8: Any) -> None:
    cache = tmp_path / "models"
    monkeypatch.setenv("MEMORY_MODEL_CACHE", str(cache))
    fresh = OnnxEmbedder(variant="int8")  # exports fp32, then quantises it
    folders = sorted(p.name for p in cache.iterdir())
    assert [f.split("-")[-2] for f in folders] == ["fp32", "int8"]
    assert all((cache / f / "model.onnx").is_file() and (cache / f / "export.json").is_file()
               for f in folders)
    np.testing.assert_allclose(fresh.embed(TEXTS[:3]), int8.embed(TEXTS[:3]), atol=1e-6)

    def no_export(*args: Any) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_export, "export_fp32", no_export)
    monkeypatch.setattr(onnx_export, "quantize_int8", no_export)
    assert OnnxEmbedder().embed(["cached"]).shape == (1, 384)
    assert OnnxEmbedder(variant="int8").name == "all-MiniLM-L6-v2+int8"
    monkeypatch.setattr(onnx_export, "RECIPE", "another recipe")
    with pytest.raises(AssertionError, match="exported again"):
        OnnxEmbedder()
    assert sorted(p.name for p in cache.iterdir()) == folders  # nothing half-written left


def test_folder_digest_follows_the_model_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(bytes(3 << 20))
    first = onnx_export.folder_digest(tmp_path)
    (tmp_path / "README.md").write_text("docs do not matter")
    assert onnx_export.folder_digest(tmp_path) == first
    data = bytearray(3 << 20)
    data[-1] = 1  # the last bytes of a large file
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    assert onnx_export.folder_digest(tmp_path) != first


def test_default_without_an_exporter_falls_back_to_pytorch_unless_onnx_was_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_MODEL_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(onnx_export, "_version",
                        lambda dist: "-" if dist == "onnxscript" else "1")
    monkeypatch.setattr(selection, "_exporter_present", lambda: False)
    monkeypatch.delenv("MEMORY_EMBEDDER", raising=False)
    fallback = selection._make(None, "onnx", explicit=False)
    assert isinstance(fallback, SentenceTransformerEmbedder)
    assert fallback.name == "all-MiniLM-L6-v2"
    with pytest.raises(ConfigurationError, match=r"memory\[onnx\]"):
        selection._make(None, "onnx", explicit=True)
    with pytest.raises(ConfigurationError, match=r"memory\[onnx\]"):
        selection._make(None, "onnx-int8", explicit=False)
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


def test_models_onnx_cannot_run_are_named_and_left_to_pytorch(tmp_path: Path) -> None:
    from memory.embedding import default_model_path
    from memory.embedding.onnx_backend import unsupported

    assert unsupported(default_model_path()) is None
    (tmp_path / "modules.json").write_text(
        '[{"type": "sentence_transformers.base.modules.transformer.Transformer"},'
        ' {"type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"},'
        ' {"type": "sentence_transformers.base.modules.dense.Dense"}]')
    assert unsupported(tmp_path) == "it has a Dense module"
    (tmp_path / "modules.json").write_text("[]")
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode": "cls"}')
    assert unsupported(tmp_path) == "it pools with ['cls']"
    (tmp_path / "1_Pooling" / "config.json").write_text(
        '{"pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}')
    assert unsupported(tmp_path) is None

"""`memory project` and `memory reproject --model PATH` with a real second model of another
dimension (MiniLM + a Dense layer to 96 dims, built offline into a temporary folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

import memory
from memory.cli import main
from memory.embedding import SentenceTransformerEmbedder, default_embedder
from memory.projections import live_generation


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import Dense
    except ImportError:  # sentence-transformers before 6 keeps it in .models
        from sentence_transformers.models import Dense

    torch.manual_seed(0)
    base = default_embedder("torch")  # the PyTorch modules, to stack a Dense layer on
    dense = Dense(in_features=base.dim, out_features=96,
                         activation_function=torch.nn.Identity())
    model = SentenceTransformer(modules=[*base.model, dense], device="cpu")
    folder = tmp_path_factory.mktemp("models") / "minilm-dense-96"
    model.save(str(folder))
    return folder


def test_project_then_reproject_with_a_model_of_another_dimension(
        database_url: str, store: memory.Store, small_model: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(6):
        store.append("s", memory.message("user", f"Caroline went to a support group, day {i}."),
                     actor="caroline")
    assert main(["project", "--url", database_url, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "chunks: rebuilt generation 1" in out and "summaries:" in out

    assert main(["reproject", "chunks", "--model", str(small_model), "--url", database_url,
                 "--no-progress"]) == 0
    assert "chunks: rebuilt generation 2" in capsys.readouterr().out
    with store.engine.connect() as conn:
        live = live_generation(conn, "chunks")
        assert live is not None and live.config["dim"] == 96
        assert live.config["model"] == "minilm-dense-96"
        dims = conn.exec_driver_sql(
            "SELECT DISTINCT vector_dims(embedding) FROM memory_chunks").scalars().all()
        assert dims == [96]
    small = SentenceTransformerEmbedder(small_model)
    assert small.dim == 96 and small.embed(["x"]).shape == (1, 96)

    # the default model is now refused for chunks, with a message that says what to do
    store.append("s", memory.message("user", "One more."), actor="caroline")
    assert main(["project", "chunks", "--url", database_url, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "minilm-dense-96" in err and "memory reproject chunks --model PATH" in err
    assert main(["project", "chunks", "--model", str(small_model), "--url", database_url,
                 "--no-progress"]) == 0
    assert "1 events, 1 rows" in capsys.readouterr().out

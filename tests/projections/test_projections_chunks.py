"""The chunks and summaries projections against the real database and the real model."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

import memory
from memory.embedding import HashEmbedder
from memory.projections import (
    Chunker,
    ProjectionConfigMismatch,
    Summary,
    Turn,
    check_embedder,
    forget,
    hnsw_index_name,
    live_generation,
    split_sentences,
    summary_at,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def rows(engine: Any, generation: int | None = None) -> list[tuple[Any, ...]]:
    where = "" if generation is None else f"WHERE generation = {generation}"
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT tenant, actor_id, session_id, event_position, event_id, chunk_index, role,"
            f" author, occurred_at, text, embedding::real[] FROM memory_chunks {where} "
            "ORDER BY tenant, event_position, chunk_index").fetchall()


# -- chunking (pure) ----------------------------------------------------------------------

def test_sentences_and_chunks_with_overlap() -> None:
    assert split_sentences("Hi there. How are you? Fine!  Great") == [
        "Hi there.", "How are you?", "Fine!", "Great"]
    chunker = Chunker(max_chars=60, overlap_chars=29)
    text = " ".join(f"Sentence number {i} is here." for i in range(12))
    chunks = chunker.split(text)
    assert len(chunks) > 3
    assert all(len(c) <= 60 for c in chunks)
    for a, b in itertools.pairwise(chunks):
        last = split_sentences(a)[-1]
        assert b.startswith(last)  # the overlap: the previous chunk's last sentence
    # every sentence is somewhere
    for i in range(12):
        assert any(f"number {i} " in c for c in chunks)
    assert chunker.split("   ") == []
    assert chunker.split("short.") == ["short."]
    # a giant word is cut, never dropped
    assert "".join(chunker.split("x" * 150)) == "x" * 150


# -- the chunks projection ------------------------------------------------------------------

def test_catch_up_builds_chunks_with_vectors_and_full_text(store: memory.Store,
                                                            embedder: Any) -> None:
    long = " ".join(f"My sister Ana lives in Lisbon and works as a nurse number {i}."
                    for i in range(40))
    store.append("s1", [
        memory.message("user", "I adopted a cat named Miso last week.", name="Caroline",
                       occurred_at=T0),
        memory.message("assistant", "Congratulations on Miso!", occurred_at=T0),
        memory.tool_call("weather", {"city": "Lisbon"}, call_id="c1", occurred_at=T0),
        memory.tool_result("c1", "Sunny, 21 degrees.", name="weather", occurred_at=T0),
        memory.note(long, occurred_at=T0),
        memory.message("user", "   ", occurred_at=T0),
    ], actor="caroline")
    store.for_tenant("other").append("s1", memory.message("user", "Other tenant text."),
                                     actor="bob")
    summaries = store.project(embedder=embedder)
    assert [s.name for s in summaries] == ["chunks", "summaries"]
    assert [r[0] for r in rows(store.maintenance_engine)].count("other") == 1
    got = rows(store.engine)  # the default tenant's (its role's view)
    by_pos = {}
    for r in got:
        by_pos.setdefault(r[3], []).append(r)
    assert [r[0] for r in got].count("other") == 0
    first = by_pos[1][0]
    assert first[1:3] == ("caroline", "s1")
    assert first[6:8] == ("user", "Caroline")
    assert first[8] == T0
    assert first[9] == "I adopted a cat named Miso last week."
    assert by_pos[4][0][6:8] == ("tool", "weather")
    assert 3 not in by_pos and 6 not in by_pos  # tool_call and blank text: no chunk
    note_chunks = by_pos[5]
    assert len(note_chunks) > 1 and [r[5] for r in note_chunks] == list(
        range(len(note_chunks)))
    assert note_chunks[0][6] == "note"
    vec = np.asarray(first[10], dtype=np.float32)
    assert vec.shape == (384,)
    assert abs(float(np.linalg.norm(vec)) - 1) < 1e-4
    np.testing.assert_allclose(vec, embedder.embed([first[9]])[0], atol=1e-5)
    with store.engine.connect() as conn:
        hit = conn.exec_driver_sql(
            "SELECT event_position FROM memory_chunks WHERE tsv @@ "
            "plainto_tsquery('english', 'adopting cats')").scalars().all()
        assert hit == [1]
        live = live_generation(conn, "chunks")
        assert live is not None and live.config["model"] == "all-MiniLM-L6-v2"
        assert live.config["dim"] == 384
        with store.maintenance_engine.connect() as owner:  # every tenant's head
            assert live.position == owner.exec_driver_sql(
                "SELECT max(position) FROM memory_events").scalar_one()
        indexes = conn.exec_driver_sql(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s",
            (hnsw_index_name(live.generation),)).scalar_one()
        assert "hnsw" in indexes and "vector(384)" in indexes
        # the vector index serves a nearest-neighbour query on the live generation
        query = embedder.embed(["pet cat"])[0]
        from pgvector.psycopg import register_vector
        register_vector(conn.connection.driver_connection)
        cur = conn.connection.driver_connection.cursor()
        cur.execute("SET enable_seqscan = off")
        cur.execute(
            "SELECT event_position FROM memory_chunks WHERE generation = %s ORDER BY "
            "embedding::vector(384) <=> %s::vector(384) LIMIT 1", (live.generation, query))
        assert cur.fetchone()[0] == 1
        check_embedder(conn, embedder)
    # incremental: only the new event is read and applied
    store.append("s1", memory.message("user", "Miso likes tuna."), actor="caroline")
    again = store.project(["chunks"], embedder=embedder)
    assert again[0].events == 1 and again[0].rows == 1
    assert len(rows(store.engine)) == len(got) + 1


def test_model_change_is_refused_and_reprojection_switches(store: memory.Store,
                                                           embedder: Any) -> None:
    for i in range(5):
        store.append(f"s{i % 2}", memory.message("user", f"Fact number {i} about Paris."),
                     actor="a")
    store.project(["chunks"], embedder=embedder)
    before = rows(store.engine)
    other = HashEmbedder(48, name="tiny-hash-48")
    with pytest.raises(ProjectionConfigMismatch, match=r"all-MiniLM-L6-v2.*384.*tiny-hash-48"):
        store.project(["chunks"], embedder=other)
    with pytest.raises(ProjectionConfigMismatch), store.engine.connect() as conn:
        check_embedder(conn, other)
    assert rows(store.engine) == before  # nothing written

    projector = store.projector(embedder=embedder)
    result = projector.reproject("chunks", embedder=other)
    assert result.switched and result.generation == 2
    after = rows(store.engine)
    assert [r[:10] for r in after] == [r[:10] for r in before]
    assert all(len(r[10]) == 48 for r in after)
    with store.engine.connect() as conn:
        live = live_generation(conn, "chunks")
        assert live is not None and live.generation == 2 and live.config["dim"] == 48
        names = conn.exec_driver_sql(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'memory_chunks'"
        ).scalars().all()
        assert hnsw_index_name(2) in names and hnsw_index_name(1) not in names
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM memory_chunks WHERE generation = 1").scalar_one() == 0
    # the old model is now the one refused; the new one keeps the projection up to date
    with pytest.raises(ProjectionConfigMismatch):
        store.project(["chunks"], embedder=embedder)
    store.append("s0", memory.message("user", "One more fact."), actor="a")
    assert projector.catch_up(["chunks"])[0].rows == 1


def test_forget_deletes_derived_rows(store: memory.Store, embedder: Any) -> None:
    a = store.append("s1", [memory.message("user", "Alice's secret is the garden key."),
                            memory.message("user", "Alice likes long walks on Sundays.")],
                     actor="alice")
    store.append("s2", memory.message("user", "Bob plays the cello every evening."),
                 actor="bob")
    store.project(embedder=embedder, summary_every=1)
    with store.engine.begin() as conn:
        n = forget(conn, "default", event_ids=[a[0].event_id])
    assert n >= 2  # the chunk and every summary version drawn from it
    texts = [r[9] for r in rows(store.engine)]
    assert not any("secret" in t for t in texts)
    with store.engine.connect() as conn:
        s = summary_at(conn, "default", "s1")
        assert s is None or "secret" not in s.text
    with store.engine.begin() as conn:
        forget(conn, "default", actor_id="alice")
    assert {r[1] for r in rows(store.engine)} == {"bob"}
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM memory_summaries WHERE "
                                    "actor_id = 'alice'").scalar_one() == 0


# -- summaries ------------------------------------------------------------------------------

class FakeSummarizer:
    """Deterministic: remembers every turn as 'speaker: first word'."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, list[int]]] = []

    def config(self) -> dict[str, Any]:
        return {"style": "first-words"}

    def summarize(self, previous: Summary | None, turns: Sequence[Turn]) -> str:
        self.calls.append((previous.text if previous else None, [t.version for t in turns]))
        words = [f"{t.speaker}:{t.text.split()[0]}" for t in turns]
        return " ".join(([previous.text] if previous else []) + words)


def test_summarizer_plumbing_every_n_quiet_and_as_of(store: memory.Store) -> None:
    fake = FakeSummarizer()
    t = T0
    ids = []
    for i in range(7):  # session A: 7 turns, one minute apart
        ids += store.append("A", memory.message("user", f"w{i} hello", occurred_at=t),
                            actor="x")
        t += timedelta(minutes=1)
    store.append("B", memory.message("user", "b0 later", occurred_at=t + timedelta(hours=2)),
                 actor="y")
    projector = store.projector(summarizer=fake, summary_every=3, quiet_after=3600)
    projector.catch_up(["summaries"])
    # every 3 events, then once more when the log moved 2 h past A's last turn (quiet)
    assert fake.calls == [(None, [1, 2, 3]), ("user:w0 user:w1 user:w2", [4, 5, 6]),
                          ("user:w0 user:w1 user:w2 user:w3 user:w4 user:w5", [7])]
    with store.engine.connect() as conn:
        latest = summary_at(conn, "default", "A")
        assert latest is not None and latest.events_covered == 7
        assert latest.text.endswith("user:w6")
        assert latest.covers_position == ids[6].position
        assert latest.source_event_ids == [a.event_id for a in ids]  # str: conservative
        mid = summary_at(conn, "default", "A", position=ids[4].position)
        assert mid is not None and mid.events_covered == 3
        assert summary_at(conn, "default", "A", position=ids[1].position) is None
        assert summary_at(conn, "default", "B") is None  # not due yet (1 event, not quiet)
        # the summarizer's config is recorded with the generation
        gen = live_generation(conn, "summaries")
        assert gen is not None and gen.config["summarizer"] == "fake"
        assert gen.config["style"] == "first-words"


def test_extractive_summary_is_bounded_and_deduplicated(store: memory.Store,
                                                        embedder: Any) -> None:
    turns = [
        "I moved to Lisbon in March to start a job as a nurse.",
        "My sister Ana lives in Lisbon too.",
        "I moved to Lisbon in March to start a job as a nurse.",
        "ok",
        "We often go hiking in Sintra on weekends with Ana.",
        "The weather was rainy today.",
        "Ana and I are planning a trip to Porto for her birthday.",
    ] * 3
    for i, text in enumerate(turns):
        store.append("s", memory.message("user", text, occurred_at=T0 + timedelta(seconds=i)),
                     actor="me")
    projector = store.projector(embedder=embedder, summary_every=7)
    projector.catch_up(["summaries"])
    with store.engine.connect() as conn:
        s = summary_at(conn, "default", "s")
    assert s is not None and s.events_covered == 21
    lines = s.text.split("\n")
    assert 0 < len(s.text) <= 600
    assert len(lines) == len(set(lines))  # redundancy removed
    assert all(line.startswith("user: ") for line in lines)
    assert "user: ok" not in lines
    assert len(s.source_event_ids) == len(lines)  # line-level provenance
    assert all(isinstance(e, uuid.UUID) for e in s.source_event_ids)


def test_follow_idle_summarizes_sessions_quiet_by_the_clock(store: memory.Store) -> None:
    fake = FakeSummarizer()
    old = datetime.now(UTC) - timedelta(hours=2)
    store.append("B", memory.message("user", "gamma now"), actor="y")  # still active
    store.append("A", [memory.message("user", "alpha one", occurred_at=old),
                       memory.message("user", "beta two", occurred_at=old)], actor="x")
    projector = store.projector(summarizer=fake, summary_every=50, quiet_after=3600)
    projector.catch_up(["summaries"])
    assert fake.calls == []  # nothing due by log time: the log's clock never passed A's
    runner = projector.runner("summaries")
    with store.maintenance_engine.begin() as conn:  # a runner's connection: the owner's
        assert runner.projection.idle(conn, 1) == 1  # what follow() does when idle
    assert fake.calls == [(None, [1, 2])]
    with store.engine.connect() as conn:
        assert summary_at(conn, "default", "A") is not None
        assert summary_at(conn, "default", "B") is None

"""The projection runner: rebuild equals incremental, crash safety, one writer, follow.

Everything runs against the real embedded PostgreSQL and the real model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import new_store

import memory
from memory.projections import (
    Chunker,
    ChunksProjection,
    ProjectionBusy,
    Projector,
    Runner,
    live_generation,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
SENTENCES = [
    "I adopted a cat named Miso.", "My sister lives in Lisbon!", "Do you like jazz?",
    "We went hiking in the Alps last summer and it rained every single day.",
    "The report is due on Friday.", "ok", "Tell me more about the trip.",
    "Caroline started painting again after many years away from the canvas.",
    "Melanie runs a small bakery near the station.", "Why not?",
]


@pytest.fixture
def store(database_url: str) -> Iterator[memory.Store]:
    """A store on the owner's connection (``tenant_roles=False``): these tests run the
    projection runner, the owner's work, on ``store.engine``."""
    with memory.Store.open(database_url, migrate=False, tenant_roles=False) as s:
        yield s


def fresh_store(server_url: str, template_url: str) -> AbstractContextManager[memory.Store]:
    """A new migrated database (for hypothesis examples, which cannot use fixtures)."""
    assert template_url
    return new_store(server_url, "proj")


def chunk_rows(engine: sa.Engine, generation: int) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT tenant, actor_id, session_id, event_position, event_id, chunk_index, role,"
            " author, occurred_at, text, embedding::real[] FROM memory_chunks "
            "WHERE generation = %s ORDER BY tenant, event_position, chunk_index",
            (generation,)).fetchall()


def summary_rows(engine: sa.Engine, generation: int) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT tenant, actor_id, session_id, covers_position, events_covered, text, "
            "source_event_ids FROM memory_summaries WHERE generation = %s "
            "ORDER BY tenant, session_id, covers_position", (generation,)).fetchall()


def assert_same_chunks(a: Sequence[tuple[Any, ...]], b: Sequence[tuple[Any, ...]]) -> None:
    assert [r[:10] for r in a] == [r[:10] for r in b]
    if a:
        # batch composition may change the last bits of a float, never more
        np.testing.assert_allclose(np.array([r[10] for r in a]), np.array([r[10] for r in b]),
                                   atol=2e-5)


def live(engine: sa.Engine, name: str) -> int:
    with engine.connect() as conn:
        g = live_generation(conn, name)
    assert g is not None
    return g.generation


# -- rebuild equals incremental -------------------------------------------------------------

event_strategy = st.tuples(
    st.integers(0, 2),                                   # session (and so actor)
    st.sampled_from(["message", "note", "tool_result", "tool_call"]),
    st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=6),
    st.integers(0, 90),                                  # minutes since the previous event
)


def to_event(kind: str, sentences: list[str], when: datetime, i: int) -> memory.NewEvent:
    text = " ".join(sentences)
    if kind == "message":
        return memory.message("user" if i % 2 else "assistant", text, occurred_at=when,
                              name="Caroline" if i % 3 == 0 else None)
    if kind == "note":
        return memory.note(text, occurred_at=when)
    if kind == "tool_result":
        return memory.tool_result(f"c{i}", text, name="search", occurred_at=when)
    return memory.tool_call("search", {"q": text}, call_id=f"c{i}", occurred_at=when)


@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(events=st.lists(event_strategy, min_size=1, max_size=14),
       append_every=st.integers(1, 5), batch_size=st.integers(1, 4))
def test_rebuild_equals_incremental(server_url: str, template_url: str, embedder: Any,
                                    events: list[tuple[int, str, list[str], int]],
                                    append_every: int, batch_size: int) -> None:
    with fresh_store(server_url, template_url) as store:
        options = dict(embedder=embedder, chunker=Chunker(max_chars=120, overlap_chars=40),
                       summary_every=4, quiet_after=1800)
        live_projector = store.projector(batch_size=batch_size, **options)
        when = T0
        for i, (session, kind, sentences, minutes) in enumerate(events):
            when += timedelta(minutes=minutes)
            store.append(f"s{session}", to_event(kind, sentences, when, i),
                         actor=f"actor{session}")
            if i % append_every == 0:
                live_projector.catch_up()  # live, in small batches, as events arrive
        live_projector.catch_up()
        chunks_live, summaries_live = live(store.engine, "chunks"), live(store.engine,
                                                                         "summaries")
        incremental = (chunk_rows(store.engine, chunks_live),
                       summary_rows(store.engine, summaries_live))

        rebuild_projector = store.projector(batch_size=64, **options)
        for name in ("chunks", "summaries"):
            result = rebuild_projector.rebuild(name)
            assert result.switched
        assert live(store.engine, "chunks") == chunks_live + 1
        rebuilt = (chunk_rows(store.engine, chunks_live + 1),
                   summary_rows(store.engine, summaries_live + 1))
        assert_same_chunks(incremental[0], rebuilt[0])
        assert incremental[1] == rebuilt[1]
        assert chunk_rows(store.engine, chunks_live) == []  # the retired generation's rows


# -- crash safety: SIGKILL mid-batch, restart, same rows as a clean run -----------------------

WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import memory
    from memory.projections import ChunksProjection, Projector

    url, flag = sys.argv[1], Path(sys.argv[2])

    class Stalling(ChunksProjection):
        batches = 0
        def apply(self, conn, generation, events):
            n = super().apply(conn, generation, events)   # rows written, not committed
            Stalling.batches += 1
            if Stalling.batches == 3:
                flag.write_text("in batch 3")
                time.sleep(600)                            # SIGKILL arrives here
            return n

    store = memory.Store.open(url, migrate=False, tenant_roles=False)
    projector = Projector(store.engine, log=store.log, batch_size=8, progress=False,
                          projections=[Stalling()])
    projector.catch_up(["chunks"])
""")


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early: {proc.communicate()}")
        assert time.monotonic() < deadline, "worker did not get there in time"
        time.sleep(0.05)


def _worker(tmp_path: Path, url: str) -> tuple[subprocess.Popen[str], Path]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    flag = tmp_path / "in-batch.flag"
    root = str(Path(__file__).resolve().parents[2])  # the code under test
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, str(script), url, str(flag)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=root)
    return proc, flag


def test_sigkill_mid_batch_then_restart_gives_the_clean_rows(
        tmp_path: Path, database_url: str, store: memory.Store, embedder: Any) -> None:
    for i in range(40):
        store.append(f"s{i % 4}", memory.message("user", f"{SENTENCES[i % 10]} (turn {i})"),
                     actor=f"a{i % 4}")
    proc, flag = _worker(tmp_path, database_url)
    try:
        _wait_for(flag, proc)
        with store.engine.connect() as conn:
            # batch 3 has written its rows but not committed: nobody sees them
            assert conn.exec_driver_sql("SELECT count(*) FROM memory_chunks").scalar_one() == 16
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with store.engine.connect() as conn:
        g = conn.exec_driver_sql("SELECT generation, status, position FROM memory_projections "
                                 "WHERE name = 'chunks'").fetchall()
    assert g == [(1, "building", 16)]  # two batches of 8 committed, with their checkpoint
    # restart: the interrupted first build resumes from its checkpoint and goes live
    resumed = store.project(["chunks"], embedder=embedder, batch_size=8)[0]
    assert resumed.generation == 1 and resumed.events == 24 and resumed.switched
    after_crash = chunk_rows(store.engine, 1)
    assert len(after_crash) == 40
    clean = store.projector(embedder=embedder, batch_size=64).rebuild("chunks")
    assert clean.generation == 2
    assert_same_chunks(after_crash, chunk_rows(store.engine, 2))


def test_follow_stops_cleanly_on_sigterm(store: memory.Store, embedder: Any) -> None:
    """Following (one thread per projection, signals in the main thread, as the CLI runs
    it): SIGTERM ends it after the batch in flight, new event applied, handler restored."""
    store.append("s", memory.message("user", "Before the follower starts."), actor="a")
    store.project(["chunks"], embedder=embedder)
    previous = signal.getsignal(signal.SIGTERM)
    seen: list[float] = []

    def append_then_terminate() -> None:
        time.sleep(0.5)
        start = time.monotonic()
        store.append("s", memory.message("user", "Appended while it follows."), actor="a")
        while len(chunk_rows(store.engine, 1)) < 2 and time.monotonic() - start < 20:
            time.sleep(0.05)
        seen.append(time.monotonic() - start)
        os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=append_then_terminate)
    helper.start()
    projector = store.projector(embedder=embedder)  # what `memory project --follow` runs
    results = projector.follow(["chunks", "summaries"], poll_interval=30)  # NOTIFY wakes it
    helper.join()
    assert seen and seen[0] < 10
    assert [(r.name, r.events) for r in results] == [("chunks", 1), ("summaries", 2)]
    assert signal.getsignal(signal.SIGTERM) is previous


# -- one writer at a time --------------------------------------------------------------------

class SlowEmbedder:
    """The real model, slowed down so runs overlap."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.name, self.dim = inner.name, inner.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(self.delay)
        return self.inner.embed(texts)


def test_two_runners_at_once_never_duplicate(store: memory.Store, embedder: Any) -> None:
    for i in range(24):
        store.append(f"s{i % 3}", memory.message("user", SENTENCES[i % 10]), actor=f"a{i % 3}")
    slow = SlowEmbedder(embedder, 0.15)
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def run(key: str) -> None:
        runner = Runner(store.engine, ChunksProjection(slow), log=store.log, batch_size=4,
                        wait=True, progress=False)
        barrier.wait()
        try:
            results[key] = runner.catch_up()
        except Exception as exc:  # pragma: no cover - reported below
            results[key] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in ("a", "b")]
    for t in threads:
        t.start()
    # while one of them writes, a runner that does not wait is told so at once
    time.sleep(0.6)
    impatient = Runner(store.engine, ChunksProjection(slow), log=store.log, wait=False)
    with pytest.raises(ProjectionBusy, match="being written by another runner"):
        impatient.catch_up()
    for t in threads:
        t.join(60)
    assert all(not isinstance(r, Exception) for r in results.values()), results
    assert sum(r.events for r in results.values()) == 24  # each event applied once
    with store.engine.connect() as conn:
        total, distinct, gens = conn.exec_driver_sql(
            "SELECT count(*), count(DISTINCT (event_position, chunk_index)), "
            "count(DISTINCT generation) FROM memory_chunks").one()
    assert (total, distinct, gens) == (24, 24, 1)


def test_rebuild_beside_live_keeps_serving_and_following(store: memory.Store,
                                                        embedder: Any) -> None:
    for i in range(12):
        store.append("s", memory.message("user", SENTENCES[i % 10]), actor="a")
    store.project(["chunks"], embedder=embedder)
    slow = Projector(store.engine, log=store.log, embedder=SlowEmbedder(embedder, 0.3),
                     batch_size=3, progress=False)
    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(slow.rebuild("chunks")))
    thread.start()
    deadline = time.monotonic() + 30
    while True:  # until the new generation is part-built
        with store.engine.connect() as conn:
            pos = conn.exec_driver_sql("SELECT position FROM memory_projections WHERE "
                                       "name = 'chunks' AND generation = 2").scalar()
        if pos:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # the live generation still serves reads and keeps following the log meanwhile
    assert live(store.engine, "chunks") == 1
    store.append("s", memory.message("user", "A new fact during the rebuild."), actor="a")
    assert store.project(["chunks"], embedder=embedder)[0].events == 1
    served = chunk_rows(store.engine, 1)
    assert len(served) == 13
    thread.join(60)
    assert done and done[0].switched and live(store.engine, "chunks") == 2
    assert_same_chunks(served, chunk_rows(store.engine, 2))  # the new event included


# -- follow ----------------------------------------------------------------------------------

def test_follower_picks_up_new_events_quickly(store: memory.Store, embedder: Any) -> None:
    store.append("s", memory.message("user", "First."), actor="a")
    stop = threading.Event()
    runner = Runner(store.engine, ChunksProjection(embedder), log=store.log, stop=stop,
                    progress=False)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(
        runner.follow(poll_interval=30, handle_signals=False)))
    thread.start()
    try:
        delays = []
        for i in range(3):
            time.sleep(0.3)
            start = time.monotonic()
            store.append("s", memory.message("user", f"Event number {i} while following."),
                         actor="a")
            while len(chunk_rows(store.engine, 1) if _has_live(store) else []) < i + 2:
                assert time.monotonic() - start < 5, "follower too slow"
                time.sleep(0.02)
            delays.append(time.monotonic() - start)
        assert max(delays) < 5
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert result and result[0].events == 4


def _has_live(store: memory.Store) -> bool:
    with store.engine.connect() as conn:
        return live_generation(conn, "chunks") is not None


def test_follower_moves_to_the_new_generation_after_a_rebuild(store: memory.Store,
                                                              embedder: Any) -> None:
    for i in range(3):
        store.append("s", memory.message("user", SENTENCES[i]), actor="a")
    stop = threading.Event()
    runner = Runner(store.engine, ChunksProjection(embedder), log=store.log, stop=stop,
                    progress=False)
    thread = threading.Thread(target=lambda: runner.follow(poll_interval=0.5,
                                                           handle_signals=False))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not _has_live(store) or len(chunk_rows(store.engine, 1)) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # a rebuild beside the follower switches generations under it
        assert store.projector(embedder=embedder).rebuild("chunks").switched
        store.append("s", memory.message("user", "After the switch."), actor="a")
        deadline = time.monotonic() + 60  # generous: CI machines are small and shared
        while len(chunk_rows(store.engine, 2)) < 4:
            assert time.monotonic() < deadline, "the follower did not move to generation 2"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()
    assert chunk_rows(store.engine, 1) == []

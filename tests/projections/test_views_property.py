"""Projections stay views of the log with forks and retractions: a rebuild from position 0
gives the same chunks, summaries and contexts as the incremental path (hypothesis, over
random appends, forks of any session at any version, and retractions)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import new_store
from test_projections_runner import SENTENCES, assert_same_chunks, chunk_rows, live, summary_rows

import memory
from memory.errors import RetractionError
from memory.log.views import NOT_ITEMS
from memory.projections import Chunker

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
QUERIES = ("Tell me about Miso the cat", "Where does the sister live?")

op_strategy = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 9), st.lists(st.sampled_from(SENTENCES),
                                                             min_size=1, max_size=4),
              st.integers(0, 90)),
    st.tuples(st.just("fork"), st.integers(0, 9), st.floats(0, 1)),
    st.tuples(st.just("retract"), st.integers(0, 9), st.sampled_from(["last", "one", "all"]),
              st.integers(0, 20)),
)


def apply_ops(store: memory.Store, ops: list[tuple[Any, ...]], project: Any,
              every: int) -> list[str]:
    sessions = ["s0"]
    store.append("s0", memory.message("user", SENTENCES[0], occurred_at=T0), actor="maya")
    store.append("other", memory.note(SENTENCES[1], occurred_at=T0), actor="maya")
    when = T0
    for i, op in enumerate(ops):
        name = sessions[op[1] % len(sessions)]
        if op[0] == "append":
            when += timedelta(minutes=op[3])
            store.append(name, memory.message("user" if i % 2 else "assistant",
                                              " ".join(op[2]), occurred_at=when),
                         actor="maya")
        elif op[0] == "fork":
            head = store.view(name).version
            new = f"b{len(sessions)}"
            store.fork(name, at_version=max(1, round(op[2] * head)), new_session=new,
                       actor="maya")
            sessions.append(new)
        else:
            items = [e for e in store.read_session(name) if e.type not in NOT_ITEMS]
            try:
                if op[2] == "last":
                    store.retract(name, actor="maya", last=1 + op[3] % 2)
                elif op[2] == "all":
                    store.retract(name, actor="maya", all=True)
                elif items:
                    store.retract(name, actor="maya",
                                  event_ids=[items[op[3] % len(items)].event_id])
            except RetractionError:
                assert not items  # only refused when nothing is visible
        if i % every == 0:
            project()
    return [*sessions, "other"]


class OneByOne:
    """The real model, one text per call: a vector does not depend on the batch it was
    embedded in (padding to the batch's longest text moves its last bits), so memories
    whose scores are nearly tied rank the same on the incremental and the rebuilt path
    and the contexts compare exactly."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return self.inner.embed(texts)
        return np.vstack([self.inner.embed([text]) for text in texts])


def contexts(store: memory.Store, sessions: list[str], embedder: Any) -> list[Any]:
    return [store.context(q, actor="maya", session=s, budget=b, embedder=embedder).messages()
            for s in sessions for q in QUERIES for b in (80, 500)]


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(op_strategy, min_size=1, max_size=12), every=st.integers(2, 5),
       batch_size=st.integers(1, 4))
def test_rebuild_equals_incremental_with_forks_and_retractions(
        server_url: str, template_url: str, embedder: Any, ops: list[tuple[Any, ...]],
        every: int, batch_size: int) -> None:
    assert template_url
    embedder = OneByOne(embedder)
    with new_store(server_url, "views") as store:
        options = dict(embedder=embedder, chunker=Chunker(max_chars=120, overlap_chars=40),
                       summary_every=3, quiet_after=1800)
        live_projector = store.projector(batch_size=batch_size, **options)
        sessions = apply_ops(store, ops, live_projector.catch_up, every)
        live_projector.catch_up()
        chunks_gen, summaries_gen = live(store.engine, "chunks"), live(store.engine,
                                                                       "summaries")
        incremental = (chunk_rows(store.engine, chunks_gen),
                       summary_rows(store.engine, summaries_gen),
                       contexts(store, sessions, embedder))

        rebuilder = store.projector(batch_size=64, **options)
        for name in ("chunks", "summaries"):
            assert rebuilder.rebuild(name).switched
        rebuilt = (chunk_rows(store.engine, chunks_gen + 1),
                   summary_rows(store.engine, summaries_gen + 1),
                   contexts(store, sessions, embedder))
        assert_same_chunks(incremental[0], rebuilt[0])
        assert incremental[1] == rebuilt[1]
        assert incremental[2] == rebuilt[2]
        # no context holds what its view hides: hidden events, an ancestor's events after
        # the fork point, events retracted in their own session
        views = {s: store.view(s) for s in sessions}
        withdrawn = {en.event.event_id for v in views.values() for en in v.hidden
                     if not en.inherited}
        wide = memory.retrieval.RetrievalSettings(include_neighbours=True, recent_share=0.3)
        for s, view in views.items():
            cut = {seg.session_id: seg.upto_position for seg in view.segments[1:]}
            ctx = store.context(" ".join(SENTENCES), actor="maya", session=s, budget=400,
                                settings=wide, embedder=embedder)
            for t in ctx.turns:
                assert t.event_id not in view.hidden_by
            for m in ctx.memories:
                assert m.event_id not in view.hidden_by and m.event_id not in withdrawn
                assert m.session_id not in cut or m.position <= cut[m.session_id]

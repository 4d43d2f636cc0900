"""Sentence vectors and the vocabulary (migration 0009): what the chunks projection writes,
what forgetting leaves (the same as a rebuild), what the cache reads (the same as SQL),
and what the ranker does with them. Real database, real model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

import memory
from memory import message
from memory.pg import tenant_scope
from memory.projections.chunking import sentence_pieces, words_of
from memory.retrieval import RetrievalSettings, ranking, search, wholescope
from memory.retrieval.ranking.expansion import expand, vocabulary

DAY0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)

TURNS = [
    ("Ana", "Morning! I finally signed up for lessons. My teacher says the violin takes years."),
    ("Ben", "That is brave, do you practise every day?"),
    ("Ana", "Every evening after work. The neighbours have not complained yet."),
    ("Ben", "My puppy chewed my shoes again. He is a beagle called Toast."),
    ("Ana", "Ha. Toast sounds like trouble. Is he house trained?"),
    ("Ben", "Mostly. We walk along the canal each morning before breakfast."),
]


def chat(store: memory.Store, actor: str = "ana", turns: list[tuple[str, str]] = TURNS,
         session: str = "s1", day: int = 0) -> list[Any]:
    events = [message("user", text, name=who, occurred_at=DAY0 + timedelta(days=day, minutes=i))
              for i, (who, text) in enumerate(turns)]
    return store.append(f"{actor}-{session}", events, actor=actor)


def words_table(engine: Any, generation: int | None = None) -> list[tuple[Any, ...]]:
    where = "" if generation is None else f"WHERE generation = {generation}"
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            f"SELECT tenant, actor_id, word, lexeme, event_position FROM memory_words {where}"
            " ORDER BY tenant, actor_id, word").fetchall()


def live(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(
            "SELECT generation FROM memory_projections WHERE name = 'chunks'"
            " AND status = 'live'").scalar_one())


def test_pieces_hold_each_sentence_vector(store: memory.Store, embedder: Any) -> None:
    chat(store)
    store.project(["chunks"], embedder=embedder)
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT text, (SELECT array_agg(p::real[]) FROM unnest(pieces) p)"
            " FROM memory_chunks ORDER BY event_position").fetchall()
    assert len(rows) == len(TURNS)
    for text, pieces in rows:
        want = sentence_pieces(text)
        if not want:
            assert pieces is None
            continue
        assert len(pieces) == len(want) >= 2
        assert np.allclose(np.array(pieces), embedder.embed(want), atol=1e-5)


def test_vocabulary_holds_each_word_once_at_its_first_chunk(store: memory.Store,
                                                              embedder: Any) -> None:
    done = chat(store)
    chat(store, actor="ben", turns=[("Ben", "The violin concert was loud.")])
    store.project(["chunks"], embedder=embedder)
    rows = words_table(store.engine)
    ana = {r[2]: r for r in rows if r[1] == "ana"}
    assert ana["violin"][3] == "violin" and ana["violin"][4] == done[0].position
    assert ana["toast"][4] == done[3].position  # first said in turn 4, again in turn 5
    assert ana["practise"][3] == "practis"  # the lexeme Postgres stems to
    assert "the" not in ana and "is" not in ana  # stop words have no lexeme
    every = {w for _, t in TURNS for w in words_of(t)}
    assert set(ana) <= every and len(ana) > 20
    assert {r[2] for r in rows if r[1] == "ben"} == {"violin", "concert", "loud"}
    with store.engine.connect() as conn:
        vec = conn.exec_driver_sql("SELECT embedding::real[] FROM memory_words"
                                   " WHERE actor_id = 'ana' AND word = 'violin'").scalar_one()
    assert np.allclose(vec, embedder.embed(["violin"])[0], atol=1e-5)
    store.project(["chunks"], embedder=embedder)  # nothing new: nothing written twice
    assert words_table(store.engine) == rows


def test_forget_leaves_the_vocabulary_a_rebuild_writes(store: memory.Store,
                                                       embedder: Any) -> None:
    first = chat(store)
    later = chat(store, turns=[("Ana", "Toast ate the violin case. Bad dog!")], session="s2",
                 day=1)
    store.project(["chunks"], embedder=embedder)
    store.forget(event_ids=[first[0].event_id, first[3].event_id])
    rows = {r[2]: r[4] for r in words_table(store.engine)}
    assert "lessons" not in rows and "beagle" not in rows  # only in forgotten turns
    assert rows["violin"] == later[0].position  # moved to the next chunk holding it
    assert rows["toast"] == first[4].position
    before = [r[1:] for r in words_table(store.engine, live(store.engine))]
    projector = store.projector(embedder=embedder)
    projector.rebuild("chunks")
    assert [r[1:] for r in words_table(store.engine, live(store.engine))] == before
    store.forget(actor="ana")
    assert words_table(store.engine) == []


def _finders(store: memory.Store, conn: Any, s: RetrievalSettings, bound: int | None
             ) -> tuple[search.ChunkSearch, search.ChunkSearch]:
    gen = search.live_generations(conn)[search.CHUNKS_PROJECTION]
    head = int(conn.exec_driver_sql(search.HEAD_TENANT, (store.tenant,)).scalar_one())
    b = min(gen.position, head if bound is None else bound)
    scope = search.Scope(store.tenant, "ana", "now", ("ana",))
    return (search.ChunkSearch(conn, scope, gen, b, s),
            search.ChunkSearch(conn, scope, gen, b, s, cache=store.scope_cache))


def test_cache_and_sql_read_the_same_pieces_and_vocabulary(store: memory.Store,
                                                           embedder: Any) -> None:
    chat(store)
    half = chat(store, turns=[("Ana", "The guitar shop closed. I bought strings online.")],
                session="s2", day=2)
    store.project(["chunks"], embedder=embedder)
    s = RetrievalSettings()
    query = "Which musical instrument is Ana learning?"
    qvec = embedder.embed([query])[0]
    for bound in (None, half[0].position - 1):
        with tenant_scope(store.tenant), store.engine.connect() as conn, conn.begin():
            sql, cached = _finders(store, conn, s, bound)
            assert cached.data() is not None and sql.data() is None
            a, b = (wholescope.scope_vectors(f, qvec, 1000) for f in (sql, cached))
            assert a.pieces is not None and b.pieces is not None
            assert np.array_equal(np.isnan(a.pieces), np.isnan(b.pieces))
            assert np.allclose(np.nan_to_num(a.pieces), np.nan_to_num(b.pieces), atol=1e-6)
            assert 0 < int(np.isnan(a.pieces).sum()) < len(a.pieces)
            va, vb = vocabulary(sql), vocabulary(cached)
            assert va.lexemes == vb.lexemes and np.allclose(va.matrix, vb.matrix)
            assert ("guitar" in va.lexemes) == (bound is None)
            ea = expand(sql, query, ["instrument"], {"ana"}, s, embedder.embed)
            eb = expand(cached, query, ["instrument"], {"ana"}, s, embedder.embed)
            assert ea == eb and "violin" in ea
            ra, rb = (ranking.rank_scope(ranking.RankRequest(
                query=query, hits=[], neighbours=f.neighbours, settings=s, now=DAY0,
                query_vec=qvec, finder=f, embed=embedder.embed)) for f in (sql, cached))
            assert [r.hit.key for r in ra] == [r.hit.key for r in rb]
            assert np.allclose([r.score for r in ra], [r.score for r in rb], atol=1e-6)


def test_expansion_adds_the_scope_words_nearest_the_query(store: memory.Store,
                                                          embedder: Any) -> None:
    chat(store)
    store.project(["chunks"], embedder=embedder)
    s = RetrievalSettings()
    with tenant_scope(store.tenant), store.engine.connect() as conn, conn.begin():
        f = _finders(store, conn, s, None)[1]
        added = expand(f, "Which instrument does Ana play?", ["instrument", "play"],
                       {"ana", "ben"}, s, embedder.embed)
        assert set(added) >= {"violin"} and "ana" not in added
        assert all(0 < w <= s.expansion_weight for w in added.values())
        assert "instrument" not in added  # a query term keeps its own weight, 1
        # a query word the vocabulary lacks needs the embedder
        assert expand(f, "Which instrument does Ana play?", [], set(), s, None) == {}
        assert expand(f, "Which instrument?", [], set(), s.replace(expansion_weight=0.0),
                      embedder.embed) == {}


def test_the_best_sentence_lifts_a_long_turn(store: memory.Store, embedder: Any) -> None:
    long_turn = ("We spent the weekend repainting the kitchen and the hallway, which took "
                 "far longer than planned. The cat hid under the bed the whole time. "
                 "My brother flew in from Toronto on Sunday night for the wedding.")
    others = ["I took the train to visit my brother last month.",
              "Toronto was freezing when we were there in January.",
              "The flight home was delayed by two hours.",
              "We had pasta with my brother's friends on Friday.",
              "The airport in Lisbon is small but busy."]
    chat(store, turns=[("Ana", long_turn), *(("Ana", t) for t in others)])
    store.project(["chunks"], embedder=embedder)
    query = "Where did Ana's brother fly in from?"
    qvec = embedder.embed([ranking.vector_query(query, ["Ana"])])[0]
    with tenant_scope(store.tenant), store.engine.connect() as conn, conn.begin():
        f = _finders(store, conn, RetrievalSettings(), None)[1]
        rows = wholescope.scope_vectors(f, qvec, 1000)
        assert rows.pieces is not None and rows.pieces[0] > rows.sims[0] + 0.1
        assert all(np.isnan(rows.pieces[1:]))  # one sentence each: no pieces
        key = (rows.positions[0], rows.indexes[0])
        rank = {}
        for on in (True, False):
            ranked = ranking.rank_scope(ranking.RankRequest(
                query=query, hits=[], neighbours=f.neighbours,
                settings=RetrievalSettings(sentence_max=on), now=DAY0, query_vec=qvec,
                finder=f, embed=embedder.embed))
            rank[on] = [r.hit.key for r in ranked].index(key)
        assert rank[True] == 0 < rank[False]


def test_recordings_without_the_new_knobs_replay_without_them() -> None:
    old = RetrievalSettings().to_dict()
    for k in ("sentence_max", "expansion_weight", "expansion_min_cosine",
              "expansion_per_word"):
        old.pop(k)
    s = RetrievalSettings.from_dict(old)
    assert s.sentence_max is False and s.expansion_weight == 0.0
    assert RetrievalSettings.from_dict(RetrievalSettings().to_dict()) == RetrievalSettings()


def test_a_projection_without_pieces_and_words_still_ranks(store: memory.Store,
                                                           embedder: Any) -> None:
    from memory.projections import ChunksProjection

    chat(store)
    projector = store.projector(embedder=embedder, projections=[
        ChunksProjection(embedder, pieces=False, words=False)])
    projector.catch_up(["chunks"])
    projector.reproject("chunks", embedder=embedder)  # the options survive a reprojection
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM memory_chunks WHERE pieces IS NOT"
                                    " NULL").scalar_one() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM memory_words").scalar_one() == 0
    ctx = store.context("Which instrument is Ana learning?", actor="ana", session="later",
                        budget=500, embedder=embedder)
    assert any("violin" in m.text for m in ctx.memories)


def test_an_entry_cached_without_its_parts_reads_them_when_asked(store: memory.Store,
                                                                 embedder: Any) -> None:
    chat(store)
    store.project(["chunks"], embedder=embedder)
    store.scope_cache.clear()
    qvec = embedder.embed(["Which instrument is Ana learning?"])[0]
    with tenant_scope(store.tenant), store.engine.connect() as conn, conn.begin():
        # a scope above scope_rank_max_chunks is cached without sentence vectors and words
        big = _finders(store, conn, RetrievalSettings(scope_rank_max_chunks=0), None)[1]
        data = big.data()
        assert data is not None and data.pieces is None and data.words is None
        assert store.scope_cache.nbytes == data.nbytes
        sql, cached = _finders(store, conn, RetrievalSettings(), None)
        assert cached.data() is data  # the same entry, now asked for its parts
        a, b = (wholescope.scope_vectors(f, qvec, 1000) for f in (sql, cached))
        assert data.pieces is not None and data.words is not None
        assert np.allclose(np.nan_to_num(a.pieces), np.nan_to_num(b.pieces), atol=1e-6)
        assert vocabulary(cached).lexemes == vocabulary(sql).lexemes
        assert store.scope_cache.nbytes == data.nbytes  # their bytes are counted


def test_a_store_projected_before_pieces_and_words_is_told_to_reproject(
        store: memory.Store, embedder: Any) -> None:
    import json

    import pytest

    from memory.projections import ProjectionConfigMismatch

    chat(store)
    store.project(["chunks"], embedder=embedder)
    with store.maintenance_engine.begin() as conn:  # as a version-1 generation recorded it
        config = conn.exec_driver_sql("SELECT config FROM memory_projections"
                                      " WHERE name = 'chunks'").scalar_one()
        old = {k: v for k, v in config.items() if k not in ("pieces", "words")}
        conn.exec_driver_sql("UPDATE memory_projections SET config = %s WHERE name = 'chunks'",
                             (json.dumps({**old, "version": 1}),))
    with pytest.raises(ProjectionConfigMismatch) as err:
        store.project(["chunks"], embedder=embedder)
    message = str(err.value)
    assert "version 1 -> 2" in message and "pieces (none) -> true" in message
    assert "`memory reproject chunks`" in message and "--model" not in message
    store.projector(embedder=embedder).reproject("chunks")
    assert words_table(store.engine, live(store.engine))

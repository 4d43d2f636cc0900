"""The whole-scope ranker's date matching and session prior (memory/retrieval/ranking/):
the pure parts on their own, then through Store.context against the real database and
model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import memory
from memory import message
from memory.retrieval import RetrievalSettings, search, wholescope
from memory.retrieval.ranking.dates import date_match, day_number, query_dates
from memory.retrieval.ranking.scope import is_aggregate, rank_in_session, session_prior
from memory.retrieval.settings import DEFAULT_SETTINGS


def day(y: int, m: int, d: int) -> float:
    return day_number(datetime(y, m, d, tzinfo=UTC))


@pytest.mark.parametrize(("query", "want"), [
    ("What did she do on 8 May, 2023?", [(day(2023, 5, 8), day(2023, 5, 8))]),
    ("What happened on May 8th, 2023?", [(day(2023, 5, 8), day(2023, 5, 8))]),
    ("What happened on October 13, 2023?", [(day(2023, 10, 13), day(2023, 10, 13))]),
    ("Where did they go in June 2023?", [(day(2023, 6, 1), day(2023, 6, 30))]),
    ("Where did they go in Sept. 2022?", [(day(2022, 9, 1), day(2022, 9, 30))]),
    ("How often in 2022?", [(day(2022, 1, 1), day(2022, 12, 31))]),
    ("What happened on 31 February, 2023?",  # no such day: the month, no error
     [(day(2023, 2, 1), day(2023, 2, 28))]),
    ("What did he plan in July?", [(day(2022, 7, 1), day(2022, 7, 31)),
                                   (day(2023, 7, 1), day(2023, 7, 31))]),
])
def test_query_dates(query: str, want: list[tuple[float, float]]) -> None:
    assert query_dates(query, [2022, 2023]) == want


@pytest.mark.parametrize("query", [
    "May I ask what she likes?",      # "may" alone is a verb, not a month
    "What did she paint?",
    "Call 555 1234",
])
def test_query_without_dates(query: str) -> None:
    assert query_dates(query, [2023]) == []


def test_date_match_decays_with_distance() -> None:
    lo, hi = day(2023, 6, 1), day(2023, 6, 30)
    days = np.array([day(2023, 6, 15), day(2023, 7, 14), day(2023, 5, 18), day(2024, 6, 15)])
    got = date_match(days, [(lo, hi)], 14.0)
    assert got[0] == 1.0                                  # inside the month
    assert got[1] == pytest.approx(np.exp(-1.0))          # 14 days after it
    assert got[2] == pytest.approx(np.exp(-1.0))          # 14 days before it
    assert got[3] < 1e-10                                 # a year away
    assert date_match(days, [], 14.0).tolist() == [0.0] * 4


def test_session_prior_scores_whole_sessions() -> None:
    # two sessions; the query term is only in session 1, whose turns are also closer
    session = np.array([0, 0, 0, 1, 1])
    sims = np.array([0.1, 0.2, 0.1, 0.5, 0.4])
    tf = np.array([[0.0], [0.0], [0.0], [1.0], [0.0]])
    prior = session_prior(sims, tf, session, DEFAULT_SETTINGS)
    assert prior.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    # no query terms: the mean cosine alone (half the weight)
    prior = session_prior(sims, np.zeros((5, 0)), session, DEFAULT_SETTINGS)
    assert prior.tolist() == [0.0, 0.0, 0.0, 0.5, 0.5]


def test_old_recordings_replay_without_the_new_knobs() -> None:
    old = DEFAULT_SETTINGS.to_dict()
    del old["date_boost"], old["session_prior"]
    s = RetrievalSettings.from_dict(old)
    assert s.date_boost == 0.0 and s.session_prior == 0.0
    assert RetrievalSettings.from_dict(DEFAULT_SETTINGS.to_dict()) == DEFAULT_SETTINGS


def test_a_date_in_the_query_finds_the_session_of_that_date(store: memory.Store,
                                                            embedder) -> None:  # type: ignore[no-untyped-def]
    # the same activity on three dates; only the date tells them apart
    for i, when in enumerate([datetime(2023, 3, 4, 10, tzinfo=UTC),
                              datetime(2023, 6, 10, 10, tzinfo=UTC),
                              datetime(2023, 9, 2, 10, tzinfo=UTC)]):
        store.append(f"s{i}", [
            message("user", "Went to the lake with the kids, we had a picnic.", name="Ann",
                    occurred_at=when),
            message("user", "That sounds lovely!", name="Bo",
                    occurred_at=when + timedelta(minutes=1)),
        ], actor="ann")
    store.project(embedder=embedder)
    question = "What did Ann do on 10 June, 2023?"
    ctx = store.context(question, actor="ann", session="q", budget=400, embedder=embedder)
    memories = sorted((s for s in ctx.sources if s.kind == "memory"),
                      key=lambda s: s.parts["rank"])
    assert memories and memories[0].parts["date"] > 0.4
    assert memories[0].session_id == "s1"
    assert "date the query names" in memories[0].reason
    # without date matching the three picnics tie on everything but position
    off = store.context(question, actor="ann", session="q", budget=400, embedder=embedder,
                        settings=DEFAULT_SETTINGS.replace(date_boost=0.0))
    top = min((s for s in off.sources if s.kind == "memory"), key=lambda s: s.parts["rank"])
    assert top.parts.get("date", 0.0) == 0.0


def test_a_turn_that_asks_ranks_below_the_one_that_tells(store: memory.Store,
                                                         embedder) -> None:  # type: ignore[no-untyped-def]
    when = datetime(2024, 5, 1, 9, tzinfo=UTC)
    store.append("s", [
        message("user", "Do you still play the cello in the city orchestra?", name="Bo",
                occurred_at=when),
        message("user", "Nothing new here, the weather is grey.", name="Ann",
                occurred_at=when + timedelta(minutes=1)),
        message("user", "Yes, I still play the cello in the city orchestra.", name="Ann",
                occurred_at=when + timedelta(minutes=2)),
        message("user", "Lovely. See you soon.\n", name="Bo",
                occurred_at=when + timedelta(minutes=3)),
    ], actor="ann")
    store.project(embedder=embedder)
    q = "Which instrument does Ann play in the orchestra?"

    def ranked(settings: RetrievalSettings) -> list[tuple[int, float]]:
        ctx = store.context(q, actor="ann", session="q", budget=400, embedder=embedder,
                            settings=settings)
        mem = sorted((s for s in ctx.sources if s.kind == "memory"),
                     key=lambda s: s.parts["rank"])
        return [(s.position, s.parts.get("asks", 0.0)) for s in mem]

    on = ranked(DEFAULT_SETTINGS)
    assert on[0] == (3, 0.0)                     # the answer first
    assert (1, -DEFAULT_SETTINGS.question_penalty) in on
    assert len(on) == len(ranked(DEFAULT_SETTINGS.replace(question_penalty=0.0)))


def _searches_without_and_with_the_cache(store: memory.Store, actor: str
                                        ) -> Iterator[search.ChunkSearch]:
    """The actor's chunk search at the live generation, read from SQL, then from the
    store's scope cache (memory/retrieval/scopecache.py), in one transaction."""
    with store.engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("SELECT set_config('memory.tenant', %s, true)", (store.tenant,))
        gen = search.live_generations(conn)[search.CHUNKS_PROJECTION]
        scope = search.Scope(store.tenant, actor, "q", (actor,))
        for cache in (None, store.scope_cache):
            yield search.ChunkSearch(conn, scope, gen, gen.position, DEFAULT_SETTINGS,
                                     cache=cache)


def test_scope_rows_agree_on_dates_and_questions_with_and_without_the_cache(
        store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]

    when = datetime(2024, 5, 1, 9, tzinfo=UTC)
    store.append("s", [
        message("user", "Is it raining? \t\n", occurred_at=when),
        message("user", "It is. Why?  [image: a photo of rain]", occurred_at=when),
        message("user", "¿Qué tal?", occurred_at=when + timedelta(days=1)),
    ], actor="a")
    store.project(embedder=embedder)
    vec = embedder.embed(["rain"])[0]
    got = []
    for f in _searches_without_and_with_the_cache(store, "a"):
        rows = wholescope.scope_vectors(f, vec, 100)
        got.append((rows.positions, rows.asks, rows.occurred))
    assert got[0] == got[1]
    assert got[0][1] == [True, False, True]


def test_old_recordings_replay_without_the_third_round_knobs() -> None:
    old = DEFAULT_SETTINGS.to_dict()
    del old["aggregate_session_penalty"], old["vector_window_kind"]
    s = RetrievalSettings.from_dict(old)
    assert s.aggregate_session_penalty == 0.0 and s.vector_window_kind == "mean_cosine"
    assert DEFAULT_SETTINGS.aggregate_session_penalty > 0
    assert DEFAULT_SETTINGS.vector_window_kind == "mean_vector"


@pytest.mark.parametrize(("query", "want"), [
    ("What has Melanie painted?", True),
    ("Where HAVE they been on road trips?", True),
    ("What did Melanie paint last week?", False),
    ("Who is Hasan?", False),  # a word holding "has" is not the verb
])
def test_aggregate_questions(query: str, want: bool) -> None:
    assert is_aggregate(query, DEFAULT_SETTINGS.aggregate_pattern) is want
    assert not is_aggregate(query, "")


def test_rank_in_session_counts_each_sessions_turns_in_rank_order() -> None:
    assert rank_in_session(np.array([3, 3, 1, 3, 1, 2])).tolist() == [0, 1, 0, 2, 1, 0]
    assert rank_in_session(np.array([], dtype=int)).tolist() == []


PAINTER = [("s1", "I painted a sunset over the lake with watercolours."),
           ("s1", "Painting the sunset took me all weekend, the watercolours kept running."),
           ("s1", "I love painting sunsets, the colours of the sky are so calming."),
           ("s1", "My sunset painting is hanging in the kitchen now."),
           ("s1", "Anyway, how is work going for you?"),
           ("s2", "The weather has been grey all week."),
           ("s2", "I painted a portrait of my horse, it came out well."),
           ("s2", "Do you like horses?")]


def _painter(store: memory.Store) -> list[int]:
    """Ann paints in two sessions: four turns about it in the first, one in the second.
    Returns the turns' positions (in the order of PAINTER)."""
    when = datetime(2024, 3, 1, 9, tzinfo=UTC)
    out = []
    for k, sid in enumerate(("s1", "s2")):
        turns = [text for s, text in PAINTER if s == sid]
        out += [a.position for a in store.append(sid, [
            message("user", text, name="Ann",
                    occurred_at=when + timedelta(days=30 * k, minutes=i))
            for i, text in enumerate(turns)], actor="ann")]
    return out


def _memories(store: memory.Store, embedder, query: str,  # type: ignore[no-untyped-def]
              settings: RetrievalSettings) -> list:
    ctx = store.context(query, actor="ann", session="q", budget=1000, embedder=embedder,
                        settings=settings)
    return sorted((s for s in ctx.sources if s.kind == "memory"),
                  key=lambda s: s.parts["rank"])


def test_a_question_that_gathers_facts_reaches_past_the_best_session(
        store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    positions = _painter(store)
    store.project(embedder=embedder)
    q = "What has Ann painted?"
    off = _memories(store, embedder, q, DEFAULT_SETTINGS.replace(aggregate_session_penalty=0))
    on = _memories(store, embedder, q, DEFAULT_SETTINGS.replace(aggregate_session_penalty=1))
    horse = positions[6]
    assert [m.session_id for m in off[:4]] == ["s1"] * 4  # the sunsets fill the top
    assert all(m.parts["session_cap"] == 0.0 for m in off)
    # with the cap, each session's best turn comes first; the k-th turn loses k x penalty
    assert [m.session_id for m in on[:2]] == ["s1", "s2"] or \
        [m.session_id for m in on[:2]] == ["s2", "s1"]
    assert horse in [m.position for m in on[:2]]
    for m in on:
        earlier = [x for x in on if x.session_id == m.session_id
                   and x.parts["fused"] + x.parts["neighbour"] + x.parts["speaker"]
                   + x.parts["date"] + x.parts["asks"]
                   > m.parts["fused"] + m.parts["neighbour"] + m.parts["speaker"]
                   + m.parts["date"] + m.parts["asks"]]
        assert m.parts["session_cap"] == pytest.approx(-1.0 * len(earlier))
    assert any("gathers facts across sessions" in m.reason for m in on)
    # the same question without the present perfect is not re-ordered
    plain = _memories(store, embedder, "What did Ann paint?",
                      DEFAULT_SETTINGS.replace(aggregate_session_penalty=1))
    assert all(m.parts["session_cap"] == 0.0 for m in plain)
    assert len(on) == len(off)  # moved down, never out


def test_windows_score_by_their_mean_vector(store: memory.Store,
                                           embedder) -> None:  # type: ignore[no-untyped-def]
    from memory.retrieval.ranking import vector_query

    _painter(store)
    store.project(embedder=embedder)
    q = "What has Ann painted?"
    got = {}
    for kind in ("mean_vector", "mean_cosine"):
        mem = _memories(store, embedder, q, DEFAULT_SETTINGS.replace(
            vector_window_kind=kind, aggregate_session_penalty=0.0))
        got[kind] = {m.position: m.parts["vector"] for m in mem}
    assert got["mean_vector"] != got["mean_cosine"]
    # the norms of the windows' summed unit vectors: from the cache and from SQL alike,
    # and as numpy computes them from the texts' embeddings
    texts = [text for _s, text in PAINTER]
    unit = np.asarray(embedder.embed(texts), dtype=np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    session = np.array([0] * 5 + [1] * 3)
    want = []
    for i in range(len(texts)):
        near = [j for j in range(max(0, i - 1), min(len(texts), i + 2))
                if session[j] == session[i]]
        want.append(np.linalg.norm(unit[near].sum(0)))
    vec = embedder.embed([vector_query(q, ["Ann"])])[0]
    norms = []
    for f in _searches_without_and_with_the_cache(store, "ann"):
        rows = wholescope.scope_vectors(f, vec, 100)
        codes = {s: i for i, s in enumerate(dict.fromkeys(rows.sessions))}
        norms.append(wholescope.window_norms(
            f, np.array([codes[s] for s in rows.sessions]), 1, 100))
    assert norms[0] == pytest.approx(norms[1], abs=1e-5)
    assert norms[0] == pytest.approx(np.array(want), abs=1e-4)

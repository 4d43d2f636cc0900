"""The scope cache (memory/retrieval/scopecache.py, each store's own) and the cheaper context
call: the cache gives what SQL gives, and is never stale (new chunks, forgetting, a
generation switch, another tenant, as_of); token counts remembered line by line stay exact;
the number of memories follows the budget. Real database, real model."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memory
from memory import message, note
from memory.pg import tenant_scope
from memory.projections.chunking import Chunker
from memory.retrieval import (
    RetrievalSettings,
    default_counter,
    ranking,
    scopecache,
    scopedata,
    search,
    wholescope,
)

DAY0 = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)

TOPICS = ["Kyoto temples", "tofu recipes", "the border collie Biscuit", "piano lessons",
          "the marathon in Lisbon", "my sister Zoë in Montréal", "the garden tomatoes",
          "a job interview at the bakery", "the broken bike", "a birthday cake 🎂"]


def chat(store: memory.Store, actor: str, sessions: int = 4, turns: int = 8,
         start: int = 0) -> None:
    for s in range(sessions):
        events = []
        for t in range(turns):
            topic = TOPICS[(s * turns + t + start) % len(TOPICS)]
            who = "Maya" if t % 2 == 0 else "Leo"
            events.append(message("user", f"Turn {t} of session {s + start}: we talked about "
                                          f"{topic}.", name=who,
                                  occurred_at=DAY0 + timedelta(days=s + start, minutes=t)))
        store.append(f"{actor}-s{s + start}", events, actor=actor)


def finders(store: memory.Store, conn, actor: str, s: RetrievalSettings,  # type: ignore[no-untyped-def]
            bound: int | None = None) -> tuple[search.ChunkSearch, search.ChunkSearch]:
    gen = search.live_generations(conn)[search.CHUNKS_PROJECTION]
    head = int(conn.exec_driver_sql(search.HEAD_TENANT, (store.tenant,)).scalar_one())
    b = min(gen.position, head if bound is None else bound)
    scope = search.Scope(store.tenant, actor, "now", (actor,))
    return (search.ChunkSearch(conn, scope, gen, b, s),
            search.ChunkSearch(conn, scope, gen, b, s, cache=store.scope_cache))


def key_of(store: memory.Store, actor: str) -> tuple[object, ...]:
    with store.engine.connect() as conn:
        return scopecache.cache_key(conn, store.tenant, (actor,))


@pytest.mark.parametrize("as_of", [False, True])
def test_cache_gives_what_sql_gives(store: memory.Store, embedder, as_of: bool) -> None:  # type: ignore[no-untyped-def]
    chat(store, "maya")
    store.project(embedder=embedder)
    s = RetrievalSettings()
    query = "What did Maya say about the dog Biscuit?"
    qvec = embedder.embed([ranking.vector_query(query, ["Maya", "Leo"])])[0]
    with tenant_scope(store.tenant), store.engine.connect() as conn, conn.begin():
        bound = None
        if as_of:  # half the log: the cached entry holds more rows than the bound shows
            bound = int(conn.exec_driver_sql(search.HEAD_TENANT, (store.tenant,))
                        .scalar_one()) // 2
        sql, cached = finders(store, conn, "maya", s, bound)
        assert cached.data() is not None and sql.data() is None
        assert cached.scope_size() == sql.scope_size() > 0
        assert wholescope.scope_authors(cached) == wholescope.scope_authors(sql) == ["Leo", "Maya"]
        a, b = (wholescope.scope_vectors(f, qvec, 1000) for f in (sql, cached))
        assert (a.positions, a.indexes, a.sessions, a.authors, a.lengths, a.occurred) == \
            (b.positions, b.indexes, b.sessions, b.authors, b.lengths, b.occurred)
        assert a.occurred is not None and len(a.occurred) == len(a.positions)
        assert a.asks == b.asks and a.asks is not None and len(a.asks) == len(a.positions)
        again = wholescope.scope_vectors(cached, qvec, 1000)  # from the entry's kept columns
        assert (again.positions, again.sessions, again.asks) == \
            (b.positions, b.sessions, b.asks)
        assert np.allclose(a.sims, b.sims, atol=1e-6)
        terms = search.query_lexemes(sql, query)
        assert sorted(wholescope.scope_terms(sql, terms)) == sorted(wholescope.scope_terms(cached,
                                                                                   terms))
        va, vb = sql.vector(qvec, exact=True), cached.vector(qvec, exact=True)
        assert [h.key for h in va] == [h.key for h in vb]
        assert np.allclose([h.parts["vector_sim"] for h in va],
                           [h.parts["vector_sim"] for h in vb], atol=1e-6)
        assert [(h.event_id, h.text, h.occurred_at, h.author) for h in va] == \
            [(h.event_id, h.text, h.occurred_at, h.author) for h in vb]
        na, nb = sql.neighbours(va[:10], 2), cached.neighbours(vb[:10], 2)
        assert {k: [h.key for h in v] for k, v in na.items()} == \
            {k: [h.key for h in v] for k, v in nb.items()}
        # the whole-scope ranker: same order, same scores
        ra, rb = (ranking.rank_scope(ranking.RankRequest(
            query=query, hits=[], neighbours=f.neighbours, settings=s, now=DAY0,
            query_vec=qvec, finder=f)) for f in (sql, cached))
        assert [r.hit.key for r in ra] == [r.hit.key for r in rb]
        assert np.allclose([r.score for r in ra], [r.score for r in rb], atol=1e-6)


def test_new_chunks_grow_the_entry(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    chat(store, "maya", sessions=2)
    store.project(embedder=embedder)
    q = "what about the volcano in Iceland?"
    store.context(q, actor="maya", session="now", budget=400, embedder=embedder)
    entry = store.scope_cache.peek(key_of(store, "maya"))
    assert entry is not None
    n = entry.n
    store.append("maya-iceland", message("user", "We hiked up the volcano in Iceland.",
                                         name="Maya"), actor="maya")
    store.project(embedder=embedder)
    grown_before = store.scope_cache.stats["grown"]
    ctx = store.context(q, actor="maya", session="now", budget=400, embedder=embedder)
    assert "volcano in Iceland" in ctx.text()
    assert store.scope_cache.stats["grown"] == grown_before + 1
    entry = store.scope_cache.peek(key_of(store, "maya"))
    assert entry is not None and entry.n == n + 1
    # and a call with nothing new takes the entry as it is
    hits = store.scope_cache.stats["hits"]
    store.context(q, actor="maya", session="now", budget=400, embedder=embedder)
    assert store.scope_cache.stats["hits"] == hits + 1


def test_forgotten_chunks_never_come_from_the_cache(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    chat(store, "maya", sessions=2)
    secret = store.append("maya-secret", [
        message("user", "My passport number is X9-BLUEFIN-77.", name="Maya"),
        message("user", "The weather was fine.", name="Maya")], actor="maya")
    store.project(embedder=embedder)
    q = "what is my passport number?"
    before = store.context(q, actor="maya", session="now", budget=600, embedder=embedder)
    assert "BLUEFIN" in before.text()
    assert store.scope_cache.peek(key_of(store, "maya")) is not None
    store.forget(event_ids=[secret[0].event_id])
    after = store.context(q, actor="maya", session="now", budget=600, embedder=embedder)
    assert "BLUEFIN" not in after.text()
    assert "weather was fine" in after.text() or after.memories  # the rest is still there
    entry = store.scope_cache.peek(key_of(store, "maya"))
    assert entry is not None and not any("BLUEFIN" in t for t in entry.texts)
    # a forget and a new chunk between two calls (the row count alone would not change)
    chat(store, "maya", sessions=1, turns=1, start=7)
    store.project(embedder=embedder)
    again = store.append("maya-secret2", message("user", "Locker code is 4417-ORCA.",
                                                 name="Maya"), actor="maya")
    store.project(embedder=embedder)
    store.context("locker code?", actor="maya", session="now", budget=600, embedder=embedder)
    store.forget(event_ids=[again[0].event_id])
    chat(store, "maya", sessions=1, turns=1, start=8)
    store.project(embedder=embedder)
    last = store.context("locker code?", actor="maya", session="now", budget=2000,
                         embedder=embedder)
    assert "ORCA" not in last.text()
    # forgetting the actor: nothing at all
    store.forget(actor="maya")
    gone = store.context(q, actor="maya", session="now", budget=600, embedder=embedder)
    assert not gone.memories


def test_forget_drops_the_entry_at_once(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    chat(store, "maya", sessions=1)
    chat(store, "ines", sessions=1)
    store.project(embedder=embedder)
    for actor in ("maya", "ines"):
        store.context("the garden", actor=actor, session="now", budget=600, embedder=embedder)
        assert store.scope_cache.peek(key_of(store, actor)) is not None
    store.forget(actor="maya")
    assert store.scope_cache.peek(key_of(store, "maya")) is None  # no plaintext left behind
    assert store.scope_cache.peek(key_of(store, "ines")) is not None  # others untouched


def test_generation_switch_reloads(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    long = ("Biscuit the border collie learned to open the garden gate. "
            "Then he ate the birthday cake on the kitchen table. "
            "Zoë laughed so hard she dropped her piano sheets.")
    store.append("maya-dog", message("user", long, name="Maya"), actor="maya")
    store.project(embedder=embedder)
    q = "what did Biscuit eat?"
    ctx = store.context(q, actor="maya", session="now", budget=600, embedder=embedder)
    assert {m.chunk_index for m in ctx.memories} == {0}
    old = store.scope_cache.peek(key_of(store, "maya"))
    assert old is not None
    # re-chunk into small pieces: a new generation with other rows at the same positions
    store.projector(embedder=embedder, chunker=Chunker(max_chars=60, overlap_chars=0)
                    ).rebuild("chunks")
    ctx = store.context(q, actor="maya", session="now", budget=600, embedder=embedder)
    assert max(m.chunk_index for m in ctx.memories) > 0
    new = store.scope_cache.peek(key_of(store, "maya"))
    assert new is not None and new.generation != old.generation


def test_tenants_never_share_an_entry(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    other = store.for_tenant("acme")
    store.append("a1", message("user", "My locker code is 1234-TANGERINE"), actor="maya")
    other.append("x1", message("user", "My locker code is 9876-WALRUS"), actor="maya")
    store.project(embedder=embedder)
    q = "what is my locker code?"
    for _ in range(2):  # cold, then from the cache
        mine = store.context(q, actor="maya", session="n", budget=400, embedder=embedder)
        theirs = other.context(q, actor="maya", session="n", budget=400, embedder=embedder)
        assert "TANGERINE" in mine.text() and "WALRUS" not in mine.text()
        assert "WALRUS" in theirs.text() and "TANGERINE" not in theirs.text()
    a = store.scope_cache.peek(key_of(store, "maya"))
    b = other.scope_cache.peek(key_of(other, "maya"))
    assert a is not None and b is not None and a is not b


def test_each_store_owns_its_cache(store: memory.Store, embedder, database_url: str  # type: ignore[no-untyped-def]
                                   ) -> None:
    chat(store, "maya", sessions=1)
    store.project(embedder=embedder)
    q = "the garden tomatoes"
    with memory.Store.open(database_url, tenant=store.tenant, migrate=False) as second:
        assert second.scope_cache is not store.scope_cache
        store.context(q, actor="maya", session="now", budget=400, embedder=embedder)
        assert store.scope_cache.peek(key_of(store, "maya")) is not None
        assert second.scope_cache.peek(key_of(second, "maya")) is None  # not shared
        assert len(second.scope_cache.lexemes) == 0
        ctx = second.context(q, actor="maya", session="now", budget=400, embedder=embedder)
        assert ctx.memories and second.scope_cache.peek(key_of(second, "maya")) is not None
        assert len(second.scope_cache.lexemes) > 0
        second.forget(actor="maya", erase=False)
        assert second.scope_cache.peek(key_of(second, "maya")) is None
    assert store.for_tenant("acme").scope_cache is store.scope_cache  # one database, one store


def test_as_of_from_a_newer_entry(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    chat(store, "maya", sessions=2)
    store.project(embedder=embedder)
    q = "tell me about the marathon and the garden"
    then = store.context(q, actor="maya", session="now", budget=800, embedder=embedder)
    chat(store, "maya", sessions=2, start=5)
    store.project(embedder=embedder)
    store.context(q, actor="maya", session="now", budget=800, embedder=embedder)  # grows
    again = store.context(q, actor="maya", session="now", budget=800, embedder=embedder,
                          as_of=then.position)
    assert again.messages() == then.messages()
    assert all(m.position <= then.position for m in again.memories)


def test_cache_off_gives_the_same_context(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    chat(store, "maya")
    store.project(embedder=embedder)
    q = "which city does Zoë live in?"
    on = store.context(q, actor="maya", session="now", budget=700, embedder=embedder)
    store.scope_cache.forget(store.tenant, "maya")
    off_settings = RetrievalSettings(scope_cache_bytes=0)
    off = store.context(q, actor="maya", session="now", budget=700, embedder=embedder,
                        settings=off_settings)
    assert off.messages() == on.messages()
    assert store.scope_cache.peek(key_of(store, "maya")) is None  # nothing kept


def test_cache_is_bounded_by_bytes() -> None:
    cache = scopecache.ScopeCache()
    cols = {k: [] for k in ("positions", "indexes", "event_ids", "sessions", "actor_ids",
                            "roles", "authors", "occurred", "texts", "lengths")}
    n = 100
    cols.update(positions=list(range(n)), indexes=[0] * n, event_ids=[uuid.uuid4()] * n,
                sessions=["s"] * n, actor_ids=["a"] * n, roles=["user"] * n,
                authors=[None] * n, occurred=[DAY0] * n, texts=["x"] * n, lengths=[1] * n)
    entries = [scopedata.ScopeData(("db", "t", (f"a{i}",)), 1, "c", n, dict(cols),
                                   np.ones((n, 8), dtype=np.float32)) for i in range(3)]
    limit = entries[0].nbytes * 2 + 1
    for e in entries:
        cache.put(e, limit)
    assert cache.nbytes <= limit and len(cache) == 2
    assert cache.peek(entries[0].key) is None  # least recently used went first
    cache.put(entries[0], 0)
    assert cache.peek(entries[0].key) is None  # larger than the limit: not kept


def test_memories_follow_the_budget(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    chat(store, "maya", sessions=6, turns=10)
    store.project(embedder=embedder)
    q = "what did we talk about?"
    ctx = store.context(q, actor="maya", session="now", budget=2000, embedder=embedder)
    assert len(ctx.memories) > 20  # no fixed cap of 20 by default
    assert ctx.tokens <= 2000
    capped = store.context(q, actor="maya", session="now", budget=2000, embedder=embedder,
                           settings=RetrievalSettings(max_memories=5))
    assert len(capped.memories) == 5


LINES = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINES, min_size=1, max_size=6))
def test_line_by_line_counts_are_exact(parts: list[str]) -> None:
    """The counter counts line by line (and remembers lines): the same as counting the
    whole text in one go with the tokenizer."""
    counter = default_counter()
    text = "\n".join(parts)
    assert counter.count(text) == counter._encode_counts([text])[0]
    assert counter.count_many(parts) == counter._encode_counts(parts)


def test_note_and_emoji_counts_are_stable() -> None:
    counter = default_counter()
    text = note("🎉 Zoë's naïve café — " + "x" * 120).payload["text"]
    first = counter.count(text)
    assert counter.count(text) == first == counter._encode_counts([text])[0]


def _cols(positions: list[int], sessions: list[str]) -> dict[str, list[object]]:
    n = len(positions)
    return {"positions": positions, "indexes": [0] * n,
            "event_ids": [uuid.uuid4() for _ in range(n)], "sessions": sessions,
            "actor_ids": ["a"] * n, "roles": ["user"] * n, "authors": [None] * n,
            "occurred": [DAY0] * n, "texts": [f"t{p}" for p in positions], "lengths": [3] * n}


def test_a_grown_entry_equals_a_fresh_read() -> None:
    """Growing carries the old rows' derived arrays over; the result must be the entry a
    fresh read of all rows gives, and growing one entry twice must not disturb the first
    grown one (they share the vector buffer while they can)."""
    rng = np.random.default_rng(3)
    n = 300
    m = rng.standard_normal((n + 3, 16)).astype(np.float32)
    base_cols = _cols(list(range(1, n + 1)), [f"s{i // 7}" for i in range(n)])
    base = scopedata.ScopeData(("k",), 1, "c", n, base_cols, m[:n])
    one = base.grow(_cols([n + 5], ["s3"]), m[n:n + 1], n + 5)
    two = one.grow(_cols([n + 6], ["new"]), m[n + 1:n + 2], n + 6)
    other = one.grow(_cols([n + 7], ["zz"]), m[n + 2:n + 3], n + 7)
    all_cols = {k: base_cols[k] + _cols([n + 5], ["s3"])[k] + _cols([n + 6], ["new"])[k]
                for k in base_cols}
    all_cols["event_ids"] = two.event_ids
    fresh = scopedata.ScopeData(("k",), 1, "c", n + 6, all_cols, m[:n + 2])
    for name in ("positions", "indexes", "lengths", "norms", "session_codes", "order",
                 "matrix"):
        assert np.array_equal(getattr(two, name), getattr(fresh, name)), name
    assert two.key_index == fresh.key_index and two.texts == fresh.texts
    assert np.array_equal(other.matrix[-1], m[n + 2]) and np.array_equal(two.matrix[-1],
                                                                         m[n + 1])
    assert base.n == n and np.array_equal(base.matrix, m[:n])
    q = m[0]
    assert np.array_equal(two.sims(q, None), fresh.sims(q, None))
    assert np.array_equal(two.sims(q, None)[:n], base.sims(q, None))  # row-count independent

"""``Store.search`` (and ``AsyncStore.search``) against a real Postgres and the real model:
the actor's most relevant memories across its sessions, with their sources, at most
``limit`` of them, never another actor's or a withdrawn event, bad arguments refused
before anything is read or written."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

import memory
from memory import message, note
from memory.aio import AsyncStore

DAY0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def at(days: float) -> datetime:
    return DAY0 + timedelta(days=days)


def remember(store: memory.Store) -> dict[str, memory.Appended]:
    trip = store.append("trip", [
        message("user", "I'm planning a trip to Kyoto in April.", occurred_at=at(0)),
        message("assistant", "Lovely! Temples or food?", occurred_at=at(0)),
        message("user", "Mostly food. I'm vegetarian, so tofu places please.",
                occurred_at=at(0.01)),
    ], actor="alice")
    pets = store.append("pets", [
        message("user", "We adopted a border collie puppy called Biscuit.", occurred_at=at(5)),
        note("Alice's sister Zoe lives in Montreal.", occurred_at=at(6)),
    ], actor="alice")
    store.append("bob", message("user", "Bob's dog is a poodle called Biscuit too.",
                                occurred_at=at(7)), actor="bob")
    return {"kyoto": trip[0], "tofu": trip[2], "puppy": pets[0], "zoe": pets[1]}


def test_search_returns_the_memory_with_its_source_and_honours_the_limit(
        store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    said = remember(store)
    store.project(embedder=embedder)
    found = store.search("What is the name of our puppy?", actor="alice", limit=3,
                         embedder=embedder)
    assert 1 <= len(found) <= 3
    best = found[0]
    assert (best.event_id, best.session_id, best.position, best.chunk_index) == (
        said["puppy"].event_id, "pets", said["puppy"].position, 0)
    assert "Biscuit" in best.text and best.actor_id == "alice" and best.kind == "memory"
    assert [m.rank for m in found] == list(range(1, len(found) + 1))
    assert [m.score for m in found] == sorted((m.score for m in found), reverse=True)
    assert all(m.tokens > 0 and m.reasons for m in found)
    # never another actor's memory, and exactly `limit` when there are more
    everything = store.search("Biscuit", actor="alice", limit=50, embedder=embedder)
    assert {m.actor_id for m in everything} == {"alice"}
    assert len(store.search("Biscuit", actor="alice", limit=1, embedder=embedder)) == 1
    assert len(everything) == 5
    # other actors only when asked for
    both = store.search("Biscuit", actor="alice", actors=["bob"], limit=50,
                        embedder=embedder)
    assert {m.actor_id for m in both} == {"alice", "bob"}


def test_search_leaves_out_withdrawn_events_and_reads_as_of(
        store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    said = remember(store)
    store.project(embedder=embedder)
    before = store.head()
    store.retract("trip", actor="alice", event_ids=[said["tofu"].event_id], reason="typo")
    ids = {m.event_id for m in store.search("vegetarian tofu", actor="alice", limit=50,
                                            strong=True, embedder=embedder)}
    assert said["tofu"].event_id not in ids and said["kyoto"].event_id in ids
    # as the log stood before the retraction, the event was a memory
    then = store.search("vegetarian tofu", actor="alice", limit=1, as_of=before,
                        embedder=embedder)
    assert [m.event_id for m in then] == [said["tofu"].event_id]


def test_search_on_an_empty_or_unprojected_store_finds_nothing(store: memory.Store) -> None:
    assert store.search("anything", actor="alice") == []
    store.append("s", message("user", "not projected yet"), actor="alice")
    assert store.search("projected", actor="alice") == []


@pytest.mark.parametrize("kwargs, field", [
    ({"limit": 0}, "limit"), ({"limit": True}, "limit"), ({"limit": 1001}, "limit"),
    ({"limit": "3"}, "limit"), ({"actor": ""}, "actor"), ({"query": None}, "query"),
    ({"as_of": -1}, "as_of"), ({"actors": [""]}, "actors"),
])
def test_bad_arguments_are_refused_before_anything_is_read(
        store: memory.Store, kwargs: dict[str, object], field: str) -> None:
    args = {"query": "q", "actor": "alice", **kwargs}
    query, actor = args.pop("query"), args.pop("actor")
    with pytest.raises(memory.ValidationError) as raised:
        store.search(query, actor=actor, strong=True, **args)  # type: ignore[arg-type]
    assert raised.value.field == field
    assert list(store.read()) == []
    with store.maintenance_engine.connect() as conn:  # strong=True projected nothing
        assert conn.exec_driver_sql("SELECT count(*) FROM memory_projections").scalar() == 0


def test_the_async_face_searches_off_the_loop(store: memory.Store,
                                              embedder) -> None:  # type: ignore[no-untyped-def]
    said = remember(store)
    store.project(embedder=embedder)

    async def main() -> list[memory.Memory]:
        face = AsyncStore(store, owns_store=False)
        try:
            return await face.search("Where does Zoe live?", actor="alice", limit=2,
                                     embedder=embedder)
        finally:
            await face.close()

    found = asyncio.run(main())
    assert found[0].event_id == said["zoe"].event_id and len(found) <= 2

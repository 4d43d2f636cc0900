"""LangGraph on the store: the checkpointer passes LangGraph's own conformance suite, the item
store behaves like LangGraph's stores, and a compiled graph uses both across processes."""

from __future__ import annotations

import asyncio

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.store.base import InvalidNamespaceError

import memory
from memory.errors import ConfigurationError
from memory.integrations.langgraph import MemoryCheckpointer, MemoryStore


def test_checkpointer_passes_the_conformance_suite(store: memory.Store) -> None:
    @checkpointer_test(name="MemoryCheckpointer")
    async def make():  # type: ignore[no-untyped-def]
        yield MemoryCheckpointer(store, actor="graph")

    report = asyncio.run(validate(make))
    failures = {name: r.failures for name, r in report.results.items() if r.passed is False}
    assert failures == {}
    passed = {name for name, r in report.results.items() if r.passed}
    assert passed == {"put", "put_writes", "get_tuple", "list", "delete_thread",
                      "delete_for_runs", "copy_thread"}


# -- the item store ------------------------------------------------------------------------


def test_store_put_replaces_and_delete_removes_as_events(store: memory.Store) -> None:
    items = MemoryStore(store, actor="alice")
    items.put(("users", "alice"), "prefs", {"theme": "dark"})
    first = items.get(("users", "alice"), "prefs")
    items.put(("users", "alice"), "prefs", {"theme": "light"})
    item = items.get(("users", "alice"), "prefs")
    assert item is not None and first is not None
    assert item.value == {"theme": "light"}
    assert item.created_at == first.created_at and item.updated_at > first.updated_at
    items.delete(("users", "alice"), "prefs")
    assert items.get(("users", "alice"), "prefs") is None
    types = [e.type for e in store.read(actor="alice")]
    assert types.count("langgraph_item") == 2 and types.count("langgraph_item_deleted") == 1
    # a second face on the same store (another process, say) reads the same state
    again = MemoryStore(store, actor="alice")
    assert again.get(("users", "alice"), "prefs") is None
    items.put(("users", "alice"), "prefs", {"theme": "blue"})
    assert again.get(("users", "alice"), "prefs").value == {"theme": "blue"}  # type: ignore[union-attr]


def test_store_search_ranks_with_the_library_and_honours_filter_limit_offset(
        store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    items = MemoryStore(store, actor="alice", index={"fields": ["text"]}, embedder=embedder)
    docs = {"d1": ("The user's dog is a beagle named Biscuit.", "pets"),
            "d2": ("The user works as a nurse at the city hospital.", "work"),
            "d3": ("The user is allergic to peanuts.", "health"),
            "d4": ("The user adopted a second dog, a poodle.", "pets")}
    for key, (text, kind) in docs.items():
        items.put(("memories", "alice"), key, {"text": text, "kind": kind})
    items.put(("memories", "bob"), "b1", {"text": "Bob's dog is a terrier.", "kind": "pets"})

    hits = items.search(("memories", "alice"), query="what is the beagle called?")
    assert [h.key for h in hits][:1] == ["d1"]
    assert {h.key for h in items.search(("memories", "alice"), query="dogs", limit=2)} \
        == {"d1", "d4"}
    assert items.search(("memories", "alice"), query="hospital job")[0].key == "d2"
    assert {h.key for h in hits} == {"d1", "d2", "d3", "d4"}  # bob's namespace is not searched
    scored = [h.score for h in hits if h.score is not None]
    assert scored == sorted(scored, reverse=True) and len(scored) >= 2
    assert all(h.score is None for h in hits[len(scored):])  # unranked ones follow

    pets = items.search(("memories",), query="dog", filter={"kind": "pets"})
    assert {h.key for h in pets} == {"d1", "d4", "b1"}
    assert items.search(("memories",), query="dog", filter={"kind": {"$ne": "pets"}},
                        limit=1)[0].key in {"d2", "d3"}
    full = [h.key for h in items.search(("memories", "alice"), query="dog")]
    assert [h.key for h in items.search(("memories", "alice"), query="dog",
                                        limit=2, offset=1)] == full[1:3]

    # a replaced item is found by its new text only; a deleted one not at all
    items.put(("memories", "alice"), "d1", {"text": "The user sold the piano.", "kind": "music"})
    items.delete(("memories", "alice"), "d4")
    dog = items.search(("memories", "alice"), query="beagle dog Biscuit")
    assert "d4" not in {h.key for h in dog}
    assert dog[0].key != "d1" or dog[0].value["kind"] == "music"
    piano = items.search(("memories", "alice"), query="piano")
    assert piano[0].key == "d1"


def test_store_namespaces_and_index_configuration(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    items = MemoryStore(store, actor="alice")
    for ns in [("a", "b", "c"), ("a", "b", "d"), ("a", "x"), ("z", "b", "c")]:
        items.put(ns, "k", {"v": 1})
    assert items.list_namespaces() == [("a", "b", "c"), ("a", "b", "d"), ("a", "x"),
                                       ("z", "b", "c")]
    assert items.list_namespaces(prefix=("a",), max_depth=2) == [("a", "b"), ("a", "x")]
    assert items.list_namespaces(suffix=("c",)) == [("a", "b", "c"), ("z", "b", "c")]
    assert items.list_namespaces(prefix=("*", "b")) == [("a", "b", "c"), ("a", "b", "d"),
                                                        ("z", "b", "c")]
    assert items.list_namespaces(limit=1, offset=1) == [("a", "b", "d")]
    with pytest.raises(ConfigurationError, match="embed"):
        MemoryStore(store, actor="alice",
                    index={"dims": 384, "embed": "openai:text-embedding-3-small"})
    with pytest.raises(ConfigurationError, match="dims"):
        MemoryStore(store, actor="alice", index={"dims": 1536}, embedder=embedder)
    assert MemoryStore(store, actor="alice", index={"dims": embedder.dim, "fields": ["t"]},
                       embedder=embedder).fields == ["t"]
    with pytest.raises(InvalidNamespaceError):
        items.put(("a.b",), "k", {"v": 1})


def test_store_async_face(store: memory.Store) -> None:
    items = MemoryStore(store, actor="alice")

    async def run() -> list[str]:
        await items.aput(("n",), "k1", {"v": 1})
        await items.aput(("n",), "k2", {"v": 2})
        await items.adelete(("n",), "k1")
        return [i.key for i in await items.asearch(("n",))]

    assert asyncio.run(run()) == ["k2"]

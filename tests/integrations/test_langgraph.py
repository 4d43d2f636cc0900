"""LangGraph on the store: the checkpointer passes LangGraph's own conformance suite, the item
store behaves like LangGraph's stores, and a compiled graph uses both across processes."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.store.base import InvalidNamespaceError
from langgraph.types import Command

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
                      "delete_for_runs", "copy_thread", "prune"}



def test_checkpoints_are_typed_events_read_back_byte_equal_and_deleted_by_forget(
        store: memory.Store) -> None:
    saver = MemoryCheckpointer(store, actor="graph")
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"notes": ["é", b"\x00\xff"]}
    checkpoint["channel_versions"] = {"notes": saver.get_next_version(None, None)}
    stored = saver.put(config, checkpoint, {"source": "input", "step": -1},
                       checkpoint["channel_versions"])
    saver.put_writes(stored, [("notes", "x")], task_id="task-1")
    [event, writes] = store.read_session("langgraph:t")
    assert (event.type, writes.type) == ("langgraph_checkpoint", "langgraph_writes")
    typed = saver.serde.dumps_typed({k: v for k, v in checkpoint.items()
                                     if k != "channel_values"})
    assert event.payload["checkpoint"] == {"type": typed[0],
                                           "data": base64.b64encode(typed[1]).decode()}
    got = saver.get_tuple(config)
    assert got is not None and got.checkpoint["channel_values"] == {"notes": ["é", b"\x00\xff"]}
    assert got.pending_writes == [("task-1", "notes", "x")]

    saver.delete_thread("t")
    assert saver.get_tuple(config) is None
    assert all(e.forgotten and e.payload == {} for e in store.read_session("langgraph:t"))
    assert [e.type for e in store.read() if e.type == "forgotten"] == ["forgotten"]


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


# -- a compiled graph using both, across processes -----------------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langgraph_memory.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langgraph_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(database_url: str) -> dict[str, str]:
    return {**os.environ, "MEMORY_DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1"}


def test_graph_is_interrupted_resumed_elsewhere_and_travels_back(
        store: memory.Store, database_url: str, embedder) -> None:  # type: ignore[no-untyped-def]
    ex = _example()
    graph = ex.build(MemoryCheckpointer(store, actor=ex.ACTOR),
                     MemoryStore(store, actor=ex.ACTOR, embedder=embedder))
    graph.store.put(("memories", "ada"), "dog", {"text": "Ada's dog is a beagle, Biscuit."})
    graph.store.put(("memories", "ada"), "job", {"text": "Ada works night shifts."})
    out = graph.invoke({"messages": [HumanMessage("What is my dog called?")]}, ex.CONFIG)
    assert "Biscuit" in out["__interrupt__"][0].value["draft"]
    assert graph.get_state(ex.CONFIG).next == ("review",)
    kinds = {e.type for e in store.read_session("langgraph:support-1")}
    assert {"langgraph_checkpoint", "langgraph_writes"} <= kinds

    # another process resumes the interrupted thread from the log
    run = subprocess.run([sys.executable, str(EXAMPLE), "--resume"], env=_env(database_url),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resuming at: ('review',)" in run.stdout
    assert "answer: From what I remember: Ada's dog is a beagle, Biscuit." in run.stdout
    done = graph.get_state(ex.CONFIG)
    assert done.next == () and "Biscuit" in done.values["messages"][-1].content
    finished_id = done.config["configurable"]["checkpoint_id"]

    # time travel: replay from the checkpoint before `chat` ran, after the memory changed
    history = list(graph.get_state_history(ex.CONFIG))
    before_chat = next(h for h in history if h.next == ("chat",))
    graph.store.put(("memories", "ada"), "dog", {"text": "Ada's dog is now called Rex."})
    start_id = before_chat.config["configurable"]["checkpoint_id"]
    travel = {"configurable": {**ex.CONFIG["configurable"], "checkpoint_id": start_id}}
    replay = graph.invoke(None, travel)
    assert "Rex" in replay["__interrupt__"][0].value["draft"]
    branch = graph.get_state(ex.CONFIG)
    assert branch.next == ("review",)
    path, at = [], branch
    while at.parent_config is not None:  # the new branch grows from the travelled-to checkpoint
        path.append(at.parent_config["configurable"]["checkpoint_id"])
        at = graph.get_state({"configurable": {**ex.CONFIG["configurable"],
                                               "checkpoint_id": path[-1]}})
    assert start_id in path and finished_id not in path
    assert len(branch.values["messages"]) == 2  # the question, the new draft
    # the first branch is still there, whole
    old = graph.get_state({"configurable": {**ex.CONFIG["configurable"],
                                            "checkpoint_id": finished_id}})
    assert "Biscuit" in old.values["messages"][-1].content
    final = graph.invoke(Command(resume="reject"), ex.CONFIG)
    assert final["messages"][-1].content == "(answer withdrawn)"


def test_the_example_runs_offline(database_url: str) -> None:
    run = subprocess.run([sys.executable, str(EXAMPLE)], env=_env(database_url),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "stopped for review: From what I remember: Ada's dog is a beagle, Biscuit." \
        in run.stdout
    assert "resuming at: ('review',)" in run.stdout
    assert "answer: From what I remember: Ada's dog is a beagle, Biscuit." in run.stdout

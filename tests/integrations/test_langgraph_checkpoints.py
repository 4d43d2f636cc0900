"""The checkpointer finds a thread's latest checkpoint and a checkpoint by id by derived event
ids: right after many puts, after delete_for_runs, copy_thread and prune, across a fresh
Store, through forks and retractions of the session; and without reading the thread."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langgraph.checkpoint.base import CheckpointTuple, empty_checkpoint

import memory
from memory.errors import InvalidArgument
from memory.integrations.langgraph import MemoryCheckpointer


class Reads:
    """Counts the events the log hands out, whichever read asked."""

    def __init__(self, store: memory.Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events = 0
        for name in ("read_session", "read_ids"):
            original = getattr(store.log, name)
            monkeypatch.setattr(store.log, name, self._counted(original))
        self.fold = 0
        read_session = store.read_session

        def counted_view(*a: Any, **kw: Any) -> list[memory.RecordedEvent]:
            self.fold += 1
            return read_session(*a, **kw)
        monkeypatch.setattr(store, "read_session", counted_view)

    def _counted(self, fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> list[memory.RecordedEvent]:
            found = fn(*a, **kw)
            self.events += len(found)
            return found
        return wrapper

    def reset(self) -> None:
        self.events = self.fold = 0


def build(saver: MemoryCheckpointer, thread: str, n: int, *, run: str = "run-a",
          ns: str = "", after: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``n`` checkpoints as a graph makes them: ``step`` changes every time, ``docs``
    every fifth, ``fixed`` only in the first; one pending write at each. Returns what
    each checkpoint must read back as."""
    config = {"configurable": {**(after or {}).get("configurable", {}), "thread_id": thread,
                               "checkpoint_ns": ns}}
    versions: dict[str, Any] = {}
    made = []
    for i in range(n):
        new = {"step": saver.get_next_version(versions.get("step"), None)}
        if i % 5 == 0:
            new["docs"] = saver.get_next_version(versions.get("docs"), None)
        if "fixed" not in versions:
            new["fixed"] = saver.get_next_version(None, None)
        versions.update(new)
        cp = empty_checkpoint()
        values = {"step": i, "docs": f"docs-{i // 5 * 5}-{run}", "fixed": b"\x00\xff"}
        cp["channel_values"] = values
        cp["channel_versions"] = dict(versions)
        config = saver.put(config, cp, {"source": "loop", "step": i, "run_id": run}, new)
        saver.put_writes(config, [("step", i + 1)], task_id=f"task-{i}")
        made.append({"id": cp["id"], "values": values, "config": config})
    return made


def check(got: CheckpointTuple | None, want: dict[str, Any]) -> None:
    assert got is not None
    assert got.checkpoint["id"] == want["id"]
    assert got.checkpoint["channel_values"] == want["values"]
    assert [w[1:] for w in got.pending_writes or []] == [("step", want["values"]["step"] + 1)]


def config(thread: str, checkpoint_id: str | None = None, ns: str = "") -> Any:
    conf = {"thread_id": thread, "checkpoint_ns": ns}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


@pytest.fixture
def saver(store: memory.Store) -> Iterator[MemoryCheckpointer]:
    yield MemoryCheckpointer(store, actor="graph", erase=False)


def test_latest_and_by_id_after_many_puts_read_a_few_events_not_the_thread(
        store: memory.Store, saver: MemoryCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = build(saver, "long", 120)
    reads = Reads(store, monkeypatch)
    check(saver.get_tuple(config("long")), made[-1])
    latest_reads = reads.events
    for want in (made[0], made[1], made[57], made[-2]):
        reads.reset()
        check(saver.get_tuple(config("long", want["id"])), want)
        # the checkpoint, the namespace's first, two value sources, one write
        assert reads.events <= 6 and reads.fold == 0
    # the thread holds 240 events; the latest reads the first page back and a few ids
    assert latest_reads <= 40 and reads.fold == 0
    reads.reset()
    assert saver.get_tuple(config("long", ns="child:never")) is None
    assert reads.events <= 40 and reads.fold == 0
    assert saver.get_tuple(config("long", "1ef00000-0000-6000-8000-000000000000")) is None
    assert saver.get_tuple(config("nobody")) is None

    async def both() -> tuple[CheckpointTuple | None, CheckpointTuple | None]:
        return (await saver.aget_tuple(config("long")),
                await saver.aget_tuple(config("long", made[3]["id"])))
    latest, third = asyncio.run(both())
    check(latest, made[-1])
    check(third, made[3])


def test_delete_for_runs_and_copy_thread_keep_latest_and_by_id_right(
        store: memory.Store, saver: MemoryCheckpointer) -> None:
    first = build(saver, "t", 12, run="run-a")
    second = build(saver, "t", 8, run="run-b", after=first[-1]["config"])
    saver.copy_thread("t", "copy")
    check(saver.get_tuple(config("copy")), second[-1])
    check(saver.get_tuple(config("copy", first[2]["id"])), first[2])
    copied = store.read_session("langgraph:copy")
    assert {e.session_id for e in copied} == {"langgraph:copy"}
    # copying into a thread that has checkpoints already: its own stay, and the greatest
    # id is the latest (here the target's own, made after the source's)
    before = build(saver, "busy", 3, run="run-c")
    saver.copy_thread("t", "busy")
    check(saver.get_tuple(config("busy")), before[-1])
    check(saver.get_tuple(config("busy", before[1]["id"])), before[1])
    check(saver.get_tuple(config("busy", second[3]["id"])), second[3])

    # run-b's checkpoints go from every thread (the copies carry its run id)
    saver.delete_for_runs(["run-b"])
    for thread in ("t", "copy", "busy"):
        assert saver.get_tuple(config(thread, second[0]["id"])) is None
        check(saver.get_tuple(config(thread, first[5]["id"])), first[5])
    check(saver.get_tuple(config("t")), first[-1])
    check(saver.get_tuple(config("copy")), first[-1])
    # the copy is its own history: erasing the source leaves its values readable
    saver.delete_thread("t")
    assert saver.get_tuple(config("t")) is None
    check(saver.get_tuple(config("copy")), first[-1])
    check(saver.get_tuple(config("copy", first[8]["id"])), first[8])


def test_a_fresh_store_reads_the_same_checkpoints(database_url: str,
                                                  saver: MemoryCheckpointer) -> None:
    made = build(saver, "t", 15)
    with memory.Store.open(database_url, migrate=False) as fresh:
        again = MemoryCheckpointer(fresh, actor="graph")
        check(again.get_tuple(config("t")), made[-1])
        check(again.get_tuple(config("t", made[7]["id"])), made[7])
        more = build(again, "t", 2, after=made[-1]["config"])
    check(saver.get_tuple(config("t")), more[-1])


def test_forks_and_retractions_of_the_session_are_honoured(
        store: memory.Store, saver: MemoryCheckpointer) -> None:
    made = build(saver, "t", 10)
    view = store.read_session("langgraph:t")
    fork_at = next(e for e in view if e.payload.get("checkpoint_id") == made[5]["id"])
    # the branch sees the parent up to checkpoint 5 and its write
    store.fork("langgraph:t", at_version=fork_at.version + 1, new_session="langgraph:b",
               actor="graph")
    check(saver.get_tuple(config("b")), made[5])
    assert saver.get_tuple(config("b", made[6]["id"])) is None
    grown = build(saver, "b", 3, after=made[5]["config"])
    check(saver.get_tuple(config("b")), grown[-1])
    check(saver.get_tuple(config("b", made[2]["id"])), made[2])
    check(saver.get_tuple(config("t")), made[-1])  # the parent is unchanged

    # a retraction of the newest checkpoint hides it: the one before is the latest
    store.retract("langgraph:t", actor="graph", event_ids=[
        e.event_id for e in view if e.payload.get("checkpoint_id") == made[-1]["id"]])
    check(saver.get_tuple(config("t")), made[-2])
    assert saver.get_tuple(config("t", made[-1]["id"])) is None


def test_prune_keeps_the_latest_with_every_value_by_appending_events(
        store: memory.Store, saver: MemoryCheckpointer) -> None:
    made = build(saver, "t", 9)
    child = build(saver, "t", 3, ns="child:1")
    head = store.head()
    saver.prune(["t"], strategy="keep_latest")
    # `docs` and `fixed` were held by older checkpoints: the kept one holds them now
    check(saver.get_tuple(config("t")), made[-1])
    check(saver.get_tuple(config("t", made[-1]["id"])), made[-1])
    check(saver.get_tuple(config("t", ns="child:1")), child[-1])
    assert saver.get_tuple(config("t", made[3]["id"])) is None
    assert [t.checkpoint["id"] for t in saver.list(config("t"))] == [made[-1]["id"]]
    # nothing rewritten: the log as it stood still shows every checkpoint
    before = store.view("langgraph:t", as_of=head).events
    assert sum(e.type == "langgraph_checkpoint" for e in before) == 12
    more = build(saver, "t", 2, after=made[-1]["config"])
    check(saver.get_tuple(config("t")), more[-1])

    saver.prune(["t"], strategy="delete")
    assert saver.get_tuple(config("t")) is None and list(saver.list(config("t"))) == []
    # the same checkpoint put again after it was hidden is visible again
    cp = empty_checkpoint()
    cp["id"] = more[-1]["id"]
    again = saver.put(config("t"), cp, {"source": "update", "step": 99}, {})
    got = saver.get_tuple(again)
    assert got is not None and got.metadata["step"] == 99
    assert saver.get_tuple(config("t")).metadata["step"] == 99  # type: ignore[union-attr]
    saver.prune(["t"], strategy="delete")
    with pytest.raises(InvalidArgument, match="strategy"):
        saver.prune(["t"], strategy="everything")
    # delete_thread erases the pruned (hidden) events as well
    saver.delete_thread("t")
    gone = [e for e in store.view("langgraph:t").all_events
            if e.type in ("langgraph_checkpoint", "langgraph_writes")]
    assert gone and all(e.forgotten for e in gone)


def test_parallel_tasks_write_at_one_checkpoint_at_once(saver: MemoryCheckpointer) -> None:
    made = build(saver, "t", 1)
    at = made[0]["config"]

    def write(k: int) -> None:
        saver.put_writes(at, [("step", k), ("other", f"v{k}")], task_id=f"parallel-{k}")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    got = saver.get_tuple(at)
    assert got is not None
    tasks = {w[0] for w in got.pending_writes or []}
    assert tasks == {"task-0"} | {f"parallel-{k}" for k in range(8)}
    assert len(got.pending_writes or []) == 17


def test_a_thread_written_before_ids_were_derived_is_read_by_folding(
        store: memory.Store, saver: MemoryCheckpointer) -> None:
    made = build(saver, "src", 12)
    # the same events as the checkpointer wrote them before: library-made ids, no value
    # sources, no latest
    old = [memory.NewEvent(e.type, {k: v for k, v in e.payload.items()
                                    if k not in ("sources", "latest")})
           for e in store.read_session("langgraph:src")]
    store.append("langgraph:old", old, actor="graph")
    store.append("langgraph:old", [memory.note(f"n{i}") for i in range(10)], actor="graph")
    check(saver.get_tuple(config("old")), made[-1])
    check(saver.get_tuple(config("old", made[4]["id"])), made[4])
    assert saver.get_tuple(config("old", "1ef00000-0000-6000-8000-000000000000")) is None
    assert saver.get_tuple(config("old", ns="child:never")) is None
    more = build(saver, "old", 2, after=made[-1]["config"])
    check(saver.get_tuple(config("old")), more[-1])
    check(saver.get_tuple(config("old", made[0]["id"])), made[0])
    saver.copy_thread("old", "new")
    check(saver.get_tuple(config("new")), more[-1])
    check(saver.get_tuple(config("new", made[6]["id"])), made[6])

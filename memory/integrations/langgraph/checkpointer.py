"""``MemoryCheckpointer``: LangGraph checkpoints and pending writes as events in the log.

A thread is a session of one actor (``session_prefix + thread_id``). ``put`` appends a
``langgraph_checkpoint`` event (the checkpoint and its metadata serialized by the saver's
serde, with the values of the channels it updated), ``put_writes`` a ``langgraph_writes``
event; reads fold the session's view (``Store.read_session``), so a retraction or a fork of
the session shows in the graph's state too. ``delete_thread`` and ``delete_for_runs`` erase
through ``Store.forget``: the events' keys are destroyed, the log is never rewritten.

The async methods run the sync ones in a worker thread (``asyncio.to_thread``) over the
sync :class:`memory.Store`.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from ...errors import InvalidArgument
from ...log import NewEvent, RecordedEvent
from . import events

_TYPES = (events.CHECKPOINT, events.WRITES)
_BATCH = 500


@dataclass
class _Thread:
    """One thread's checkpoints, channel values and pending writes, folded from its view."""

    checkpoints: dict[str, dict[str, RecordedEvent]] = field(default_factory=dict)
    blobs: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)
    writes: dict[tuple[str, str], dict[tuple[str, int], tuple[str, str, dict[str, str], str]]] \
        = field(default_factory=dict)
    events: list[RecordedEvent] = field(default_factory=list)


def _version_key(version: Any) -> str:
    return f"{type(version).__name__}:{version}"


def _fold(view: Sequence[RecordedEvent]) -> _Thread:
    thread = _Thread()
    for e in view:
        if e.forgotten or e.type not in _TYPES:
            continue
        thread.events.append(e)
        p = e.payload
        ns = p["checkpoint_ns"]
        if e.type == events.CHECKPOINT:
            thread.checkpoints.setdefault(ns, {})[p["checkpoint_id"]] = e
            for c in p["channels"]:
                thread.blobs[(ns, c["channel"], _version_key(c["version"]))] = c["value"]
            continue
        stored = thread.writes.setdefault((ns, p["checkpoint_id"]), {})
        for w in p["writes"]:
            inner = (p["task_id"], w["idx"])
            if inner[1] >= 0 and inner in stored:
                continue  # a regular write is written once; special ones are replaced
            stored[inner] = (p["task_id"], w["channel"], w["value"], p["task_path"])
    return thread


class MemoryCheckpointer(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on a :class:`memory.Store`: pass it to
    ``graph.compile(checkpointer=...)``. Every thread is a session of ``actor``."""

    def __init__(self, store: Any, *, actor: str, session_prefix: str = "langgraph:",
                 serde: SerializerProtocol | None = None, erase: bool = True) -> None:
        super().__init__(serde=serde)
        if not isinstance(actor, str) or not actor:
            raise InvalidArgument("actor must be a non-empty string")
        self.store = store
        self.actor = actor
        self.session_prefix = session_prefix
        self.erase = erase
        """Whether deletes also erase the freed bytes from the data files (``forget``'s
        ``erase``); off, the keys are still destroyed and nothing is readable."""
        events.register(store.registry)

    # -- mapping threads to sessions ---------------------------------------------------

    def session_of(self, thread_id: Any) -> str:
        """The session that holds ``thread_id``'s checkpoints."""
        if thread_id is None or str(thread_id) == "":
            raise InvalidArgument("a LangGraph config needs configurable.thread_id")
        return f"{self.session_prefix}{thread_id}"

    def _thread(self, thread_id: Any) -> _Thread:
        return _fold(self.store.read_session(self.session_of(thread_id)))

    def _thread_ids(self) -> list[str]:
        """Every thread of the actor, in the order each first appeared in the log."""
        seen: dict[str, None] = {}
        for e in self.store.read(actor=self.actor):
            if e.type in _TYPES and e.session_id.startswith(self.session_prefix):
                seen.setdefault(e.session_id[len(self.session_prefix):], None)
        return list(seen)

    # -- reading -----------------------------------------------------------------------

    def _tuple(self, thread_id: str, thread: _Thread, e: RecordedEvent) -> CheckpointTuple:
        p = e.payload
        ns, cid = p["checkpoint_ns"], p["checkpoint_id"]
        checkpoint: Checkpoint = self.serde.loads_typed(events.decode(p["checkpoint"]))
        values: dict[str, Any] = {}
        for channel, version in checkpoint["channel_versions"].items():
            blob = thread.blobs.get((ns, channel, _version_key(version)))
            if blob is not None and blob["type"] != "empty":
                values[channel] = self.serde.loads_typed(events.decode(blob))
        stored = thread.writes.get((ns, cid), {})
        ordered = sorted(stored, key=lambda k: writes_sort_key(stored[k][3], *k))
        parent = p["parent_checkpoint_id"]
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                     "checkpoint_id": cid}},
            checkpoint={**checkpoint, "channel_values": values},
            metadata=self.serde.loads_typed(events.decode(p["metadata"])),
            parent_config=({"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                             "checkpoint_id": parent}} if parent else None),
            pending_writes=[(stored[k][0], stored[k][1],
                             self.serde.loads_typed(events.decode(stored[k][2])))
                            for k in ordered],
        )

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        ns = conf.get("checkpoint_ns", "")
        thread = self._thread(thread_id)
        checkpoints = thread.checkpoints.get(ns)
        if not checkpoints:
            return None
        cid = get_checkpoint_id(config) or max(checkpoints)
        e = checkpoints.get(cid)
        return None if e is None else self._tuple(str(thread_id), thread, e)

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None
             ) -> Iterator[CheckpointTuple]:
        conf = config["configurable"] if config else {}
        thread_ids = [str(conf["thread_id"])] if conf.get("thread_id") is not None \
            else self._thread_ids()
        want_ns = conf.get("checkpoint_ns")
        want_id = conf.get("checkpoint_id")
        before_id = get_checkpoint_id(before) if before else None
        for thread_id in thread_ids:
            thread = self._thread(thread_id)
            for ns, checkpoints in thread.checkpoints.items():
                if want_ns is not None and ns != want_ns:
                    continue
                for cid in sorted(checkpoints, reverse=True):
                    if (want_id and cid != want_id) or (before_id and cid >= before_id):
                        continue
                    e = checkpoints[cid]
                    if filter:
                        metadata = self.serde.loads_typed(events.decode(e.payload["metadata"]))
                        if not all(metadata.get(k) == v for k, v in filter.items()):
                            continue
                    if limit is not None and limit <= 0:
                        return
                    if limit is not None:
                        limit -= 1
                    yield self._tuple(thread_id, thread, e)

    # -- writing -----------------------------------------------------------------------

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        ns = conf.get("checkpoint_ns", "")
        c = dict(checkpoint)
        values: dict[str, Any] = c.pop("channel_values", {})  # type: ignore[assignment]
        full = get_checkpoint_metadata(config, metadata)
        run_id = full.get("run_id")
        channels = [{"channel": k, "version": v,
                     "value": events.encode(self.serde.dumps_typed(values[k]) if k in values
                                            else ("empty", b""))}
                    for k, v in new_versions.items()]
        payload = {"checkpoint_ns": ns, "checkpoint_id": checkpoint["id"],
                   "parent_checkpoint_id": conf.get("checkpoint_id"),
                   "checkpoint": events.encode(self.serde.dumps_typed(c)),
                   "metadata": events.encode(self.serde.dumps_typed(full)),
                   "run_id": run_id if isinstance(run_id, str) else None,
                   "channels": channels}
        self.store.append(self.session_of(thread_id), NewEvent(events.CHECKPOINT, payload),
                          actor=self.actor)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                 "checkpoint_id": checkpoint["id"]}}

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        conf = config["configurable"]
        if not writes:
            return
        payload = {"checkpoint_ns": conf.get("checkpoint_ns", ""),
                   "checkpoint_id": conf["checkpoint_id"], "task_id": task_id,
                   "task_path": task_path,
                   "writes": [{"idx": WRITES_IDX_MAP.get(channel, idx), "channel": channel,
                               "value": events.encode(self.serde.dumps_typed(value))}
                              for idx, (channel, value) in enumerate(writes)]}
        self.store.append(self.session_of(conf["thread_id"]), NewEvent(events.WRITES, payload),
                          actor=self.actor)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Zero-padded so versions compare as strings, with a random tail as LangGraph's own
        savers do."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # -- copying and deleting ----------------------------------------------------------

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Append copies of the source thread's checkpoints and writes to the target's
        session (the target's own history, independent of the source from now on)."""
        copies = [NewEvent(e.type, e.payload) for e in self._thread(source_thread_id).events]
        target = self.session_of(target_thread_id)
        for start in range(0, len(copies), _BATCH):
            self.store.append(target, copies[start:start + _BATCH], actor=self.actor)

    def _forget(self, ids: Sequence[uuid.UUID]) -> None:
        if ids:
            self.store.forget(event_ids=ids, erase=self.erase)

    def delete_thread(self, thread_id: str) -> None:
        """Forget every checkpoint and write of the thread (``Store.forget``)."""
        session = self.session_of(thread_id)
        self._forget([e.event_id for e in self._thread(thread_id).events
                      if e.session_id == session])

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Forget the checkpoints made by ``run_ids``, and the writes made at them."""
        runs = set(run_ids)
        if not runs:
            return
        ids: list[uuid.UUID] = []
        for thread_id in self._thread_ids():
            session = self.session_of(thread_id)
            thread = self._thread(thread_id)
            gone = {(e.payload["checkpoint_ns"], e.payload["checkpoint_id"])
                    for e in thread.events
                    if e.type == events.CHECKPOINT and e.payload["run_id"] in runs}
            ids += [e.event_id for e in thread.events if e.session_id == session
                    and (e.payload["checkpoint_ns"], e.payload["checkpoint_id"]) in gone]
        self._forget(ids)

    # -- the async face: the sync methods in a worker thread ----------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None
                    ) -> AsyncIterator[CheckpointTuple]:
        found = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in found:
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions
                   ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

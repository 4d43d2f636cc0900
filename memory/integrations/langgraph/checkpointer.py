"""``MemoryCheckpointer``: LangGraph checkpoints and pending writes as events in the log.

A thread is a session of one actor (``session_prefix + thread_id``). ``put`` appends a
``langgraph_checkpoint`` event (the checkpoint and its metadata serialized by the saver's
serde, with the values of the channels it updated), ``put_writes`` a ``langgraph_writes``
event. Every event's id is derived from what it holds, so ``get_tuple`` finds one
checkpoint, its values and its pending writes with a few index probes whatever the
thread's length (memory/integrations/langgraph/threads.py); ``list`` and ``copy_thread``
fold the whole view. Both honour the session's view (memory/log/views.py), so a retraction
or a fork of the session shows in the graph's state too. ``delete_thread`` and
``delete_for_runs`` erase through ``Store.forget``: the events' keys are destroyed, the log
is never rewritten. ``prune`` hides checkpoints with a retraction (an event of the same
session; ``Store.view(..., as_of=...)`` still shows them, ``delete_thread`` erases them).

The async methods run the sync ones in a worker thread (``asyncio.to_thread``) over the
sync :class:`memory.Store`.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
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

from ...errors import IdempotencyConflict, InvalidArgument
from ...log import NewEvent, RecordedEvent
from . import events
from .copies import Copies
from .threads import (
    TYPES,
    NeedsFold,
    Thread,
    ThreadReader,
    checkpoint_id,
    first_id,
    fold,
    sources_for,
    version_key,
    writes_id,
)

_BATCH = 500
_RETRACT = 2000
_ATTEMPTS = 3
_HINTS = 4096
_WRITERS = 64
"""Tasks of one step write at the same checkpoint at once; each conflict means another
task's write landed, so this many parallel writers always get through."""
PRUNE_STRATEGIES = ("keep_latest", "delete")


class MemoryCheckpointer(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on a :class:`memory.Store`: pass it to
    ``graph.compile(checkpointer=...)``. Every thread is a session of ``actor``."""

    def __init__(self, store: Any, *, actor: str, session_prefix: str = "langgraph:",
                 serde: SerializerProtocol | None = None, erase: bool = True) -> None:
        super().__init__(serde=serde)
        if not isinstance(actor, str) or not actor:
            raise InvalidArgument("actor", "must be a non-empty string")
        self.store = store
        self.actor = actor
        self.session_prefix = session_prefix
        self.erase = erase
        """Whether deletes also erase the freed bytes from the data files (``forget``'s
        ``erase``); off, the keys are still destroyed and nothing is readable."""
        self._next_writes: dict[tuple[str, str, str], int] = {}
        """The writes counter to try first at a checkpoint: a hint (a taken one is probed
        for the next free), so nothing read depends on it."""
        events.register(store.registry)

    # -- mapping threads to sessions ---------------------------------------------------

    def session_of(self, thread_id: Any) -> str:
        """The session that holds ``thread_id``'s checkpoints."""
        if thread_id is None or str(thread_id) == "":
            raise InvalidArgument("thread_id", "a LangGraph config needs "
                                               "configurable.thread_id")
        return f"{self.session_prefix}{thread_id}"

    def _thread(self, thread_id: Any) -> Thread:
        return fold(self.store.read_session(self.session_of(thread_id)))

    def _own_events(self, thread_id: Any) -> list[RecordedEvent]:
        """The thread's own checkpoint and writes events, hidden ones included."""
        session = self.session_of(thread_id)
        return [e for e in self.store.view(session).all_events
                if e.session_id == session and e.type in TYPES and not e.forgotten]

    def _thread_ids(self) -> list[str]:
        """Every thread of the actor, in the order each first appeared in the log."""
        seen: dict[str, None] = {}
        for e in self.store.read(actor=self.actor):
            if e.type in TYPES and e.session_id.startswith(self.session_prefix):
                seen.setdefault(e.session_id[len(self.session_prefix):], None)
        return list(seen)

    # -- reading -----------------------------------------------------------------------

    def _tuple(self, thread_id: str, thread: Thread, e: RecordedEvent,
               checkpoint: Checkpoint | None = None) -> CheckpointTuple:
        p = e.payload
        ns, cid = p["checkpoint_ns"], p["checkpoint_id"]
        if checkpoint is None:
            checkpoint = self.serde.loads_typed(events.decode(p["checkpoint"]))
        values: dict[str, Any] = {}
        for channel, version in checkpoint["channel_versions"].items():
            blob = thread.blobs.get((ns, channel, version_key(version)))
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
        """The checkpoint ``checkpoint_id`` of the thread and namespace, or its latest
        (the greatest id): a few index probes, however long the thread."""
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        ns = conf.get("checkpoint_ns", "")
        cid = get_checkpoint_id(config)
        try:
            reader = ThreadReader(self.store, self.session_of(thread_id))
            e = reader.checkpoint(ns, cid) if cid else reader.latest(ns)
            if e is None:
                return None
            checkpoint = self.serde.loads_typed(events.decode(e.payload["checkpoint"]))
            thread = reader.state(e, checkpoint["channel_versions"])
        except NeedsFold:
            return self._folded_tuple(thread_id, ns, cid)
        return self._tuple(str(thread_id), thread, e, checkpoint)

    def _folded_tuple(self, thread_id: Any, ns: str, cid: str | None
                      ) -> CheckpointTuple | None:
        """``get_tuple`` from the whole view (what the derived ids could not answer)."""
        thread = self._thread(thread_id)
        checkpoints = thread.checkpoints.get(ns)
        if not checkpoints:
            return None
        e = checkpoints.get(cid or max(checkpoints))
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
        session = self.session_of(thread_id)
        cid = checkpoint["id"]
        c = dict(checkpoint)
        values: dict[str, Any] = c.pop("channel_values", {})  # type: ignore[assignment]
        full = get_checkpoint_metadata(config, metadata)
        run_id = full.get("run_id")
        channels = [{"channel": k, "version": v,
                     "value": events.encode(self.serde.dumps_typed(values[k]) if k in values
                                            else ("empty", b""))}
                    for k, v in new_versions.items()]
        reader = ThreadReader(self.store, session)
        parent_id = conf.get("checkpoint_id")
        try:
            newest = reader.newest(ns)
            parent = newest if newest is not None and parent_id == \
                newest.payload["checkpoint_id"] else (reader.checkpoint(ns, parent_id)
                                                      if parent_id else None)
        except NeedsFold:
            newest, parent = self._folded(thread_id, ns, parent_id)
        greatest = cid if newest is None else \
            max(cid, newest.payload.get("latest") or newest.payload["checkpoint_id"])
        payload = {"checkpoint_ns": ns, "checkpoint_id": cid,
                   "parent_checkpoint_id": parent_id,
                   "checkpoint": events.encode(self.serde.dumps_typed(c)),
                   "metadata": events.encode(self.serde.dumps_typed(full)),
                   "run_id": run_id if isinstance(run_id, str) else None,
                   "channels": channels,
                   "sources": sources_for(checkpoint["channel_versions"], new_versions, parent),
                   "latest": greatest}
        # a derived newest of this session means its namespace's first id is taken
        derived = newest is not None and newest.session_id == session \
            and newest.event_id.version == 5
        self._append_checkpoint(reader, session, payload,
                                checkpoint_id(session, ns, cid, 0) if derived else None)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                 "checkpoint_id": cid}}

    def _folded(self, thread_id: Any, ns: str, cid: str | None
                ) -> tuple[RecordedEvent | None, RecordedEvent | None]:
        """The greatest checkpoint of ``ns`` and checkpoint ``cid``, from the whole view."""
        checkpoints = self._thread(thread_id).checkpoints.get(ns, {})
        return (checkpoints[max(checkpoints)] if checkpoints else None,
                checkpoints.get(cid) if cid else None)

    def _append_checkpoint(self, reader: ThreadReader, session: str,
                           payload: dict[str, Any], guess: uuid.UUID | None = None) -> None:
        """Append under the derived id: ``guess`` first (the first generation, when the
        namespace has a checkpoint of this session already), else the one the ids in the
        log leave free. A guess that is taken (a re-put) and a concurrent put of the same
        id probe and take the next."""
        ns, cid = payload["checkpoint_ns"], payload["checkpoint_id"]
        event_id, probed = guess, False
        for attempt in range(_ATTEMPTS):
            if event_id is None:
                has_first, generation = reader.generations(session, ns, cid)
                event_id = checkpoint_id(session, ns, cid, generation) if has_first \
                    else first_id(session, ns)
                probed = True
            try:
                [landed] = self.store.append(session, NewEvent(
                    events.CHECKPOINT, payload, event_id=event_id), actor=self.actor)
            except IdempotencyConflict:
                if attempt == _ATTEMPTS - 1:
                    raise
            else:
                if probed or not landed.duplicate:
                    return
            event_id = None

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        conf = config["configurable"]
        if not writes:
            return
        ns, cid = conf.get("checkpoint_ns", ""), conf["checkpoint_id"]
        session = self.session_of(conf["thread_id"])
        payload = {"checkpoint_ns": ns, "checkpoint_id": cid, "task_id": task_id,
                   "task_path": task_path,
                   "writes": [{"idx": WRITES_IDX_MAP.get(channel, idx), "channel": channel,
                               "value": events.encode(self.serde.dumps_typed(value))}
                              for idx, (channel, value) in enumerate(writes)]}
        reader = ThreadReader(self.store, session)
        key = (session, ns, cid)
        k, probed = self._next_writes.get(key, 0), False
        for attempt in range(_WRITERS):
            try:
                [landed] = self.store.append(session, NewEvent(
                    events.WRITES, payload, event_id=writes_id(session, ns, cid, k)),
                    actor=self.actor)
            except IdempotencyConflict:  # a parallel task took the same counter
                if attempt == _WRITERS - 1:
                    raise
            else:
                if probed or not landed.duplicate:
                    if len(self._next_writes) >= _HINTS:
                        self._next_writes.clear()
                    self._next_writes[key] = k + 1
                    return
            k, probed = reader.next_writes(ns, cid), True

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

    # -- copying, deleting, pruning ----------------------------------------------------

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Append copies of the source thread's checkpoints and writes to the target's
        session (the target's own history, independent of the source from now on), each
        under the id derived for the target, its value sources pointing at the copies."""
        source = self._thread(source_thread_id)
        target = self.session_of(target_thread_id)
        copies = Copies(ThreadReader(self.store, target), target,
                        lambda ns: self._folded(target_thread_id, ns, None)[0])
        batch = [copies.copy(e) for e in source.events]
        for start in range(0, len(batch), _BATCH):
            self.store.append(target, batch[start:start + _BATCH], actor=self.actor)

    def _forget(self, ids: Sequence[uuid.UUID]) -> None:
        if ids:
            self.store.forget(event_ids=ids, erase=self.erase)

    def delete_thread(self, thread_id: str) -> None:
        """Forget every checkpoint and write of the thread, pruned ones too
        (``Store.forget``)."""
        self._forget([e.event_id for e in self._own_events(thread_id)])

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Forget the checkpoints made by ``run_ids``, and the writes made at them."""
        runs = set(run_ids)
        if not runs:
            return
        ids: list[uuid.UUID] = []
        for thread_id in self._thread_ids():
            own = self._own_events(thread_id)
            gone = {(e.payload["checkpoint_ns"], e.payload["checkpoint_id"])
                    for e in own
                    if e.type == events.CHECKPOINT and e.payload["run_id"] in runs}
            ids += [e.event_id for e in own
                    if (e.payload["checkpoint_ns"], e.payload["checkpoint_id"]) in gone]
        self._forget(ids)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep each namespace's latest checkpoint (with every channel
        value it needs, appended again when some were held by older checkpoints) and its
        pending writes; ``delete``: keep none. What is not kept is hidden by a
        retraction: an event, nothing rewritten or erased (``delete_thread`` erases)."""
        if strategy not in PRUNE_STRATEGIES:
            raise InvalidArgument("strategy", f"must be one of {PRUNE_STRATEGIES}, got "
                                              f"{strategy!r:.40}")
        for thread_id in thread_ids:
            session = self.session_of(thread_id)
            thread = self._thread(thread_id)
            keep: set[uuid.UUID] = set()
            if strategy == "keep_latest":
                for ns, checkpoints in thread.checkpoints.items():
                    cid = max(checkpoints)
                    keep.add(self._whole(session, thread, checkpoints[cid]))
                    keep |= {e.event_id for e in thread.events if e.type == events.WRITES
                             and (e.payload["checkpoint_ns"], e.payload["checkpoint_id"])
                             == (ns, cid)}
            hide = [e.event_id for e in thread.events if e.event_id not in keep]
            for start in range(0, len(hide), _RETRACT):
                self.store.retract(session, actor=self.actor,
                                   event_ids=hide[start:start + _RETRACT],
                                   reason="langgraph prune")

    def _whole(self, session: str, thread: Thread, e: RecordedEvent) -> uuid.UUID:
        """Checkpoint event ``e``, or a copy of it appended with every channel value it
        needs (when older events held some): the id of the one that holds them all."""
        p = e.payload
        ns = p["checkpoint_ns"]
        checkpoint = self.serde.loads_typed(events.decode(p["checkpoint"]))
        own = {c["channel"]: version_key(c["version"]) for c in p["channels"]}
        versions = checkpoint["channel_versions"]
        if all(own.get(ch) == version_key(v) for ch, v in versions.items()):
            return e.event_id
        channels = [{"channel": ch, "version": v, "value": blob}
                    for ch, v in versions.items()
                    if (blob := thread.blobs.get((ns, ch, version_key(v)))) is not None]
        whole = {**p, "channels": channels, "sources": {}, "latest": p["checkpoint_id"]}
        reader = ThreadReader(self.store, session)
        self._append_checkpoint(reader, session, whole)
        found = reader.checkpoint(ns, p["checkpoint_id"])
        return e.event_id if found is None else found.event_id

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

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest"
                     ) -> None:
        await asyncio.to_thread(self.prune, list(thread_ids), strategy=strategy)


"""A thread's checkpoints as the checkpointer finds them: by derived event ids, not by
reading the thread.

Why ids: payloads are sealed, so the database cannot look inside an event for a checkpoint
id; an event's id is clear and uniquely indexed. The checkpointer therefore derives the id
of every event it appends from what it stores (``uuid5`` of the session, namespace,
checkpoint id and a counter) and reads one checkpoint with a few index probes
(``Log.read_ids``), whatever the thread's length:

* the first checkpoint ever put in a (session, namespace) is :func:`first_id`: finding it
  says the namespace has checkpoints at all, so asking for an unused namespace (what a
  subgraph does when it starts) costs one probe;
* any other is :func:`checkpoint_id` with a generation ``g`` (0, 1, ...): putting the same
  checkpoint id again takes the next one, and the visible one latest in the log wins;
* the ``k``-th pending-writes event at a checkpoint is :func:`writes_id`.

A checkpoint event also carries ``sources`` (for each channel value it does not hold, the
event that does, with the value's version) and ``latest`` (the greatest checkpoint id of
its namespace when it was put): the latest checkpoint is the newest visible checkpoint
event of the namespace, found by reading the session backwards a page at a time, then
its ``latest``.

Reads honour the session's view (memory/log/views.py): an event counts when it lies in
one of the view's segments (a fork's ancestors up to their fork points), is not hidden by a
retraction and is not forgotten. Whatever these ids cannot answer (a value whose source is
unknown, a ``latest`` that is gone) raises :class:`NeedsFold`: the caller folds the whole
view instead, as :func:`fold` does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ...log import RecordedEvent, ViewFilter, views
from . import events

TYPES = (events.CHECKPOINT, events.WRITES)
_ROOT = uuid.UUID("6f1c2a52-93a4-4f57-9a43-5c0b6f4a2e11")
_GENERATIONS = 4
_WRITES = 16
_FIRST_PAGE = 8
_MAX_PAGE = 1024


def _derived(*parts: object) -> uuid.UUID:
    return uuid.uuid5(_ROOT, json.dumps(parts, ensure_ascii=False, separators=(",", ":")))


def first_id(session: str, ns: str) -> uuid.UUID:
    """The event id of the first checkpoint put in ``session`` and namespace ``ns``."""
    return _derived("first", session, ns)


def checkpoint_id(session: str, ns: str, cid: str, generation: int) -> uuid.UUID:
    """The event id of checkpoint ``cid`` put for the ``generation``-th time (0 first)
    when it is not the first checkpoint of its namespace."""
    return _derived("checkpoint", session, ns, cid, generation)


def writes_id(session: str, ns: str, cid: str, k: int) -> uuid.UUID:
    """The event id of the ``k``-th pending-writes event at checkpoint ``cid``."""
    return _derived("writes", session, ns, cid, k)


def version_key(version: Any) -> str:
    """A channel version as a key: its type counts (``1`` and ``"1"`` differ)."""
    return f"{type(version).__name__}:{version}"


class NeedsFold(Exception):
    """The derived ids cannot answer; read the whole view instead."""


# -- a thread's state, folded from events -------------------------------------------------


@dataclass
class Thread:
    """Checkpoints, channel values and pending writes of one thread, from some of its
    events (the whole view, or the few a lookup needed)."""

    checkpoints: dict[str, dict[str, RecordedEvent]] = field(default_factory=dict)
    blobs: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)
    writes: dict[tuple[str, str], dict[tuple[str, int], tuple[str, str, dict[str, str], str]]] \
        = field(default_factory=dict)
    events: list[RecordedEvent] = field(default_factory=list)

    def add_checkpoint(self, e: RecordedEvent) -> None:
        p = e.payload
        ns = p["checkpoint_ns"]
        self.checkpoints.setdefault(ns, {})[p["checkpoint_id"]] = e
        self.add_blobs(e)

    def add_blobs(self, e: RecordedEvent) -> None:
        ns = e.payload["checkpoint_ns"]
        for c in e.payload["channels"]:
            self.blobs[(ns, c["channel"], version_key(c["version"]))] = c["value"]

    def add_writes(self, e: RecordedEvent) -> None:
        p = e.payload
        stored = self.writes.setdefault((p["checkpoint_ns"], p["checkpoint_id"]), {})
        for w in p["writes"]:
            inner = (p["task_id"], w["idx"])
            if inner[1] >= 0 and inner in stored:
                continue  # a regular write is written once; special ones are replaced
            stored[inner] = (p["task_id"], w["channel"], w["value"], p["task_path"])


def fold(view: Iterable[RecordedEvent]) -> Thread:
    """The thread from its whole view, in order (forgotten events and other types
    skipped)."""
    thread = Thread()
    for e in view:
        if e.forgotten or e.type not in TYPES:
            continue
        thread.events.append(e)
        if e.type == events.CHECKPOINT:
            thread.add_checkpoint(e)
        else:
            thread.add_writes(e)
    return thread


def value_sources(e: RecordedEvent) -> dict[str, tuple[str, str]]:
    """Where each channel value of checkpoint event ``e`` lives: channel -> (event id,
    version key), its own values included."""
    found = {c: (str(s[0]), str(s[1])) for c, s in (e.payload.get("sources") or {}).items()}
    for c in e.payload["channels"]:
        found[c["channel"]] = (str(e.event_id), version_key(c["version"]))
    return found


def sources_for(channel_versions: dict[str, Any], new_versions: dict[str, Any],
                parent: RecordedEvent | None) -> dict[str, list[str]]:
    """Where the values a new checkpoint does not hold live: its parent's, for each
    channel still at the parent's version. A channel found nowhere is left out (a read
    then folds the view)."""
    held = {ch: version_key(v) for ch, v in new_versions.items()}
    inherited = value_sources(parent) if parent is not None else {}
    out: dict[str, list[str]] = {}
    for ch, v in channel_versions.items():
        key = version_key(v)
        if held.get(ch) == key:
            continue
        found = inherited.get(ch)
        if found is not None and found[1] == key:
            out[ch] = [found[0], found[1]]
    return out


# -- reading by derived ids -----------------------------------------------------------------


class ThreadReader:
    """One thread's view as derived ids see it: built per call (the view's shape is read
    once, in one statement), so nothing is cached between calls."""

    def __init__(self, store: Any, session: str) -> None:
        self.store = store
        self.session = session

    @cached_property
    def shape(self) -> ViewFilter:
        """What shapes the view: read once, on first need (a writes counter needs none)."""
        return ViewFilter.read(self.store.log, self.store.tenant, self.session)

    @property
    def segments(self) -> tuple[views.Segment, ...]:
        return self.shape.segments

    @property
    def hidden(self) -> frozenset[str]:
        return self.shape.hidden

    @cached_property
    def upto(self) -> dict[str, int | None]:
        return {s.session_id: s.upto for s in self.segments}

    @property
    def sessions(self) -> list[str]:
        return [s.session_id for s in self.segments]

    @cached_property
    def legacy(self) -> bool:
        """Whether the thread began before event ids were derived (its first checkpoint
        or writes event has a library-made id, not a ``uuid5``): what the derived ids do
        not find there may still be in it, so a miss folds the view instead."""
        root = self.segments[-1].session_id
        for e in self.store.log.read_session(self.store.tenant, root, 1, 16):
            if e.type in TYPES:
                return e.event_id.version != 5
        return False

    def visible(self, e: RecordedEvent) -> bool:
        if e.forgotten or str(e.event_id) in self.hidden or e.session_id not in self.upto:
            return False
        upto = self.upto[e.session_id]
        return upto is None or e.version <= upto

    def read_ids(self, ids: Sequence[uuid.UUID]) -> list[RecordedEvent]:
        found: list[RecordedEvent] = []
        for start in range(0, len(ids), 5000):
            found += self.store.log.read_ids(self.store.tenant, ids[start:start + 5000])
        return found

    # -- one checkpoint ----------------------------------------------------------------

    def generations(self, session: str, ns: str, cid: str) -> tuple[bool, int]:
        """Whether ``session`` has a first checkpoint in ``ns``, and the next free
        generation of ``cid`` there (for a put)."""
        has_first, used, start = False, -1, 0
        while True:
            ids = [checkpoint_id(session, ns, cid, g)
                   for g in range(start, start + _GENERATIONS)]
            found = {e.event_id for e in self.read_ids([first_id(session, ns), *ids])}
            has_first = has_first or first_id(session, ns) in found
            used = max([start + i for i, x in enumerate(ids) if x in found], default=used)
            if ids[-1] not in found:
                return has_first, used + 1
            start += _GENERATIONS

    def checkpoint(self, ns: str, cid: str) -> RecordedEvent | None:
        """The visible checkpoint event of ``cid`` in ``ns`` (the latest put of it)."""
        best: RecordedEvent | None = None
        start = 0
        while True:
            ids = [checkpoint_id(s, ns, cid, g) for s in self.sessions
                   for g in range(start, start + _GENERATIONS)]
            firsts = [first_id(s, ns) for s in self.sessions] if start == 0 else []
            found = self.read_ids(firsts + ids)
            for e in found:
                if (e.type == events.CHECKPOINT and self.visible(e)
                        and e.payload["checkpoint_ns"] == ns
                        and e.payload["checkpoint_id"] == cid
                        and (best is None or e.position > best.position)):
                    best = e
            last = {checkpoint_id(s, ns, cid, start + _GENERATIONS - 1) for s in self.sessions}
            if not last & {e.event_id for e in found}:
                if best is None and self.legacy:
                    raise NeedsFold(f"checkpoint {cid} not found by id in an older thread")
                return best
            start += _GENERATIONS

    def newest(self, ns: str) -> RecordedEvent | None:
        """The newest visible checkpoint event of ``ns``: the view read backwards, a
        page at a time (the first page holds it, as a rule)."""
        asked_first = False
        for segment in self.segments:
            top = segment.upto if segment.upto is not None else \
                self.store.log.session_version(self.store.tenant, segment.session_id)
            page = _FIRST_PAGE
            while top >= 1:
                low = max(1, top - page + 1)
                rows = self.store.log.read_session(self.store.tenant, segment.session_id,
                                                   low, top - low + 1)
                for e in reversed(rows):
                    if (e.type == events.CHECKPOINT and self.visible(e)
                            and e.payload["checkpoint_ns"] == ns):
                        return e
                top = low - 1
                if not asked_first and top >= 1:
                    asked_first = True
                    firsts = [first_id(s, ns) for s in self.sessions]
                    if not self.read_ids(firsts):
                        if self.legacy:
                            raise NeedsFold(f"no first checkpoint of {ns!r} by id in an "
                                            "older thread")
                        return None  # the namespace never had a checkpoint here
                page = min(page * 2, _MAX_PAGE)
        return None

    def latest(self, ns: str) -> RecordedEvent | None:
        """The visible checkpoint of ``ns`` with the greatest id."""
        newest = self.newest(ns)
        if newest is None:
            return None
        greatest = newest.payload.get("latest") or newest.payload["checkpoint_id"]
        if greatest == newest.payload["checkpoint_id"]:
            return newest
        found = self.checkpoint(ns, greatest)
        if found is None:
            raise NeedsFold(f"the latest checkpoint {greatest} of {ns!r} is gone")
        return found

    # -- what a checkpoint needs: values and pending writes -----------------------------

    def state(self, e: RecordedEvent, channel_versions: dict[str, Any]) -> Thread:
        """The values of checkpoint event ``e``'s channels (``channel_versions``, from
        its checkpoint) and its pending writes, as a :class:`Thread` holding only
        those."""
        p = e.payload
        ns, cid = p["checkpoint_ns"], p["checkpoint_id"]
        thread = Thread()
        thread.add_blobs(e)
        sources = value_sources(e)
        wanted: dict[str, tuple[str, str]] = {}
        for channel, version in channel_versions.items():
            source = sources.get(channel)
            if source is None or source[1] != version_key(version):
                raise NeedsFold(f"no source for channel {channel!r} of {cid}")
            if source[0] != str(e.event_id):
                wanted[channel] = source
        writes: list[RecordedEvent] = []
        start = 0
        source_ids = [uuid.UUID(s[0]) for s in wanted.values()]
        while True:
            ids = [writes_id(s, ns, cid, k) for s in self.sessions
                   for k in range(start, start + _WRITES)]
            found = self.read_ids(source_ids + ids)
            source_ids = []
            by_id = {e.event_id: e for e in found}
            for x in found:
                if x.type == events.CHECKPOINT and self.visible(x):
                    thread.add_blobs(x)
                elif (x.type == events.WRITES and self.visible(x)
                      and x.payload["checkpoint_ns"] == ns
                      and x.payload["checkpoint_id"] == cid):
                    writes.append(x)
            if not any(writes_id(s, ns, cid, start + _WRITES - 1) in by_id
                       for s in self.sessions):
                break
            start += _WRITES
        for w in sorted(writes, key=lambda x: x.position):
            thread.add_writes(w)
        return thread

    def next_writes(self, ns: str, cid: str) -> int:
        """The next free writes counter of checkpoint ``cid`` in this session."""
        start = 0
        while True:
            ids = [writes_id(self.session, ns, cid, k) for k in range(start, start + _WRITES)]
            found = {e.event_id for e in self.read_ids(ids)}
            used = [start + i for i, x in enumerate(ids) if x in found]
            if ids[-1] not in found:
                return max(used, default=start - 1) + 1
            start += _WRITES

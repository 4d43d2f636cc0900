"""Copies of one thread's events for another thread (``copy_thread``).

A copy is the target's own event: its id is derived for the target session
(memory/integrations/langgraph/threads.py), its value sources point at the copies rather
than at the source thread (which may be deleted later), and its ``latest`` is what the
target will hold once the copy is appended.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from ...log import NewEvent, RecordedEvent
from . import events
from .threads import NeedsFold, ThreadReader, checkpoint_id, first_id, writes_id


class Copies:
    """Copies of one thread's events for a target session: derived ids for the target,
    value sources pointing at the copies, ``latest`` as the target will see it."""

    def __init__(self, reader: ThreadReader, target: str,
                 folded: Callable[[str], RecordedEvent | None]) -> None:
        self.reader = reader
        self.target = target
        self.folded = folded  # the greatest checkpoint of a namespace from the whole view
        self.fresh = reader.store.log.session_version(reader.store.tenant, target) == 0
        self.ids: dict[str, str] = {}
        self.latest: dict[str, str] = {}
        self.generations: dict[tuple[str, str], int] = {}
        self.writes: dict[tuple[str, str], int] = {}
        self.firsts: set[str] = set()

    def copy(self, e: RecordedEvent) -> NewEvent:
        p = dict(e.payload)
        ns, cid = p["checkpoint_ns"], p["checkpoint_id"]
        if e.type == events.WRITES:
            k = self.writes.get((ns, cid))
            if k is None:
                k = 0 if self.fresh else self.reader.next_writes(ns, cid)
            self.writes[(ns, cid)] = k + 1
            return NewEvent(e.type, p, event_id=writes_id(self.target, ns, cid, k))
        if ns not in self.latest:
            newest = None if self.fresh else self._newest(ns)
            self.latest[ns] = "" if newest is None else \
                (newest.payload.get("latest") or newest.payload["checkpoint_id"])
        self.latest[ns] = max(self.latest[ns], cid)
        p["latest"] = self.latest[ns]
        if "sources" in p:
            p["sources"] = {ch: [self.ids[s[0]], s[1]] for ch, s in p["sources"].items()
                            if s[0] in self.ids}
        event_id = self._checkpoint_id(ns, cid)
        self.ids[str(e.event_id)] = str(event_id)
        return NewEvent(e.type, p, event_id=event_id)

    def _newest(self, ns: str) -> RecordedEvent | None:
        try:
            return self.reader.newest(ns)
        except NeedsFold:
            return self.folded(ns)

    def _checkpoint_id(self, ns: str, cid: str) -> uuid.UUID:
        generation = self.generations.get((ns, cid))
        if generation is None:
            if self.fresh:
                has_first, generation = ns in self.firsts, 0
            else:
                has_first, generation = self.reader.generations(self.target, ns, cid)
            if not has_first and ns not in self.firsts:
                self.firsts.add(ns)
                self.generations[(ns, cid)] = 0
                return first_id(self.target, ns)
        self.firsts.add(ns)
        self.generations[(ns, cid)] = generation + 1
        return checkpoint_id(self.target, ns, cid, generation)

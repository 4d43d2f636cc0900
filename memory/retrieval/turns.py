"""Reading the session's recent turns verbatim from the log, newest first, a page at a
time, each counted in tokens (and cut to fit when one alone is over the budget)."""

from __future__ import annotations

import sqlalchemy as sa

from ..log import RecordedEvent
from . import render, search
from .result import Turn
from .search import Scope
from .settings import RetrievalSettings
from .store_view import StoreView
from .tokens import TokenCounter


class TurnReader:
    """The session's turns from the log, newest first, a page at a time."""

    def __init__(self, conn: sa.Connection, store: StoreView, scope: Scope, bound: int,
                 s: RetrievalSettings, counter: TokenCounter) -> None:
        self.conn, self.store, self.scope, self.bound = conn, store, scope, bound
        self.s, self.counter = s, counter
        self.buffer: list[Turn] = []
        self.before = 2**31 - 1
        self.done = False

    def _fill(self) -> None:
        while not self.buffer and not self.done:
            events = search.session_tail(self.conn, self.store.log, self.scope,
                                         self.bound, self.before, self.s.recent_page)
            if len(events) < self.s.recent_page:
                self.done = True
            if events:
                self.before = events[-1].version
            turns = [_turn(e) for e in events]
            turns = [t for t in turns if t is not None]
            counts = self.counter.count_many([t[1] for t in turns])
            self.buffer = [
                Turn(event_id=e.event_id, position=e.position, version=e.version,
                     type=e.type, role=role, content=content, occurred_at=e.occurred_at,
                     tokens=n)
                for (e, content, role), n in zip(turns, counts, strict=True)]
            self.buffer.reverse()  # pop() from the end gives the newest

    def peek(self) -> Turn | None:
        self._fill()
        return self.buffer[-1] if self.buffer else None

    def pop(self) -> Turn:
        return self.buffer.pop()


def _turn(e: RecordedEvent) -> tuple[RecordedEvent, str, str] | None:
    if not e.payload:
        return None  # a sealed (forgotten) payload shows nothing
    role, content = render.turn_role_and_content(e.type, e.payload)
    if not content.strip():
        return None
    return e, content, role


def truncate_turn(turn: Turn, limit: int, counter: TokenCounter) -> Turn | None:
    if limit <= 0:
        return None
    text = counter.truncate(turn.content, limit)
    if not text.strip():
        return None
    return Turn(turn.event_id, turn.position, turn.version, turn.type, turn.role, text,
                turn.occurred_at, counter.count(text), truncated=True)

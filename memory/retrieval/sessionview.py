"""Retrieval follows the session's view (memory/log/views.py): what a context call reads of
a branch or of a session with retractions.

* Recent turns are the view's, newest first and segment by segment (:class:`ViewTail`): a
  branch's own turns, then its parent's up to the fork point, and so on; never a parent's
  turns after the fork point; hidden events are never turns.
* Memories leave out the view's hidden events, the ancestors' events after the fork point,
  and any event retracted in its own session (:meth:`ContextView.keeps`); memories from the
  actor's other sessions stay eligible.
* The session's summary loses the lines drawn from events out of view
  (:meth:`ContextView.summary`).

A session without forks or retractions in view costs no statement of its own: the
statement a call starts with (memory/retrieval/search/callstate.py) also says whether a
fork or a retraction at or below the bound may shape the view, and only then is the view
read (:meth:`ContextView.load`, one statement); otherwise the call uses
:meth:`ContextView.plain` and reads as a session without views.
"""

from __future__ import annotations

import dataclasses
from typing import Self

import sqlalchemy as sa

from ..log import MAX_VERSION, Log, RecordedEvent, ViewFilter
from .search import Hit, Scope, SummaryRow, session_tail


class ContextView(ViewFilter):
    """The session's view as a context call at ``bound`` reads it."""

    @classmethod
    def load(cls, conn: sa.Connection, scope: Scope, bound: int) -> Self:
        return cls.query(conn, scope.tenant, scope.session, scope.actors, bound)

    @classmethod
    def plain(cls, scope: Scope) -> Self:
        """The view of a session no fork or retraction shapes (what :meth:`load` returns
        when ``memory.log.sql.view_may_filter`` is false), without a statement."""
        return cls.from_rows(scope.session, ())

    def keeps(self, hit: Hit) -> bool:
        """Whether a chunk may be a memory of this context."""
        return self.keeps_event(hit.event_id, hit.session_id, hit.event_position)

    def summary(self, row: SummaryRow | None) -> SummaryRow | None:
        """The session's summary without the lines drawn from events out of view (None
        when it cannot be cut line by line and cites one)."""
        if row is None:
            return None
        kept = self.kept_lines(row.text, row.source_event_ids)
        if kept is None:
            return None
        if kept[1] == tuple(row.source_event_ids):
            return row
        return dataclasses.replace(row, text=kept[0], source_event_ids=kept[1])

    def tail(self) -> ViewTail:
        return ViewTail(self)


class ViewTail:
    """The view's turn events, newest first, a page at a time, segment by segment (each
    page one indexed statement on one session, as for an unforked session)."""

    def __init__(self, view: ViewFilter) -> None:
        self.view = view
        self.segment = 0
        self.before: int | None = None

    def page(self, conn: sa.Connection, log: Log, scope: Scope, bound: int, limit: int
             ) -> tuple[list[RecordedEvent], bool]:
        """(visible turn events of the next page, whether the view is exhausted)."""
        while self.segment < len(self.view.segments):
            seg = self.view.segments[self.segment]
            before = self.before if self.before is not None else (
                (seg.upto + 1) if seg.upto is not None else MAX_VERSION + 1)
            events = session_tail(conn, log, dataclasses.replace(
                scope, session=seg.session_id), bound, before, limit)
            if len(events) < limit:
                self.segment += 1
                self.before = None
            else:
                self.before = events[-1].version
            visible = [e for e in events if str(e.event_id) not in self.view.hidden]
            if visible:
                return visible, self.segment >= len(self.view.segments)
        return [], True

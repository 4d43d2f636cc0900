"""The summary of a session's view (memory/log/views.py): what a summary refresh of a branch,
or of a session with retractions, starts from.

A branch's first summary starts from its parent's summary at the fork point (the newest one
covering no event after it), so the parent's prefix is not summarized again; lines drawn
from events out of the view (hidden, withdrawn in their own session) are dropped from the
summary built on; the turns added are the view's after that summary, segment by segment,
hidden ones left out. A plain session (no fork, no retraction in view) is summarized from
its own turns alone (:func:`summary_inputs` returns None).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..log import MAX_VERSION, ViewFilter
from ..log import sql as log_sql

PARENT_SUMMARY = """
SELECT covers_position, events_covered, text, source_event_ids FROM memory_summaries
 WHERE tenant = %s AND generation = %s AND session_id = %s AND covers_position <= %s
 ORDER BY covers_position DESC LIMIT 1
"""


@dataclass(frozen=True)
class Seed:
    """The summary a refresh builds on."""

    covers_position: int
    events_covered: int
    text: str
    source_event_ids: tuple[Any, ...]


def summary_inputs(conn: sa.Connection, opener: Callable[[sa.Connection, Sequence[Any]],
                                                          list[Any]],
                   tenant: str, actor: str, session_id: str, generation: int,
                   last_position: int, previous: Any, max_turns: int
                   ) -> tuple[ViewFilter, Any, list[Any], bool] | None:
    """What a summary refresh of a session with a view (a branch, or one with
    retractions) starts from, or None for a plain session. Returns (the view, the
    previous summary to build on, the view's turn rows after it (opened by ``opener``,
    oldest first, hidden ones left out), whether the previous summary changed: lines out
    of view dropped, or a branch's first summary seeded from its parent's at the fork
    point). ``previous`` and the result have ``text``, ``source_event_ids`` and
    ``covers_position``."""
    view = ViewFilter.query(conn, tenant, session_id, [actor], last_position)
    if not view.filters:
        return None
    changed = False
    seed = previous
    if seed is None and len(view.segments) > 1:
        parent = view.segments[1]
        r = conn.exec_driver_sql(PARENT_SUMMARY, (tenant, generation, parent.session_id,
                                                  parent.upto_position)).fetchone()
        if r is not None:
            seed = Seed(r[0], r[1], r[2], tuple(r[3] or ()))
            changed = True
    if seed is not None:
        cleaned = view.kept_lines(seed.text, tuple(seed.source_event_ids))
        if cleaned is None:
            seed, changed = None, True
        elif cleaned[0] != seed.text:
            seed = Seed(seed.covers_position, seed.events_covered, *cleaned)
            changed = True
    after = seed.covers_position if seed is not None else 0
    rows: list[Any] = []
    for seg in view.segments:
        if len(rows) >= max_turns:
            break
        upto = seg.upto if seg.upto is not None else MAX_VERSION
        rows += conn.exec_driver_sql(log_sql.SEGMENT_AFTER, (
            tenant, seg.session_id, upto, after, last_position,
            max_turns - len(rows))).fetchall()
    gone = view.gone
    events = [e for e in opener(conn, rows[::-1]) if str(e.event_id) not in gone]
    return view, seed, events, changed

"""What a call reads of the session itself: its recent turns, straight from the log (so an
append is visible at once), and the newest summary of its older part.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import sqlalchemy as sa

from ...log import Log, RecordedEvent
from ...log import sql as log_sql
from .scope import Generation, Scope

TURN_TYPES = ("message", "tool_call", "tool_result", "note")
"""Event types shown as turns of a session (a ``context_assembled`` event is not)."""

HEAD_TENANT = log_sql.HEAD_TENANT

SESSION_TAIL = f"""
SELECT {log_sql.EVENT_COLUMNS} FROM memory_events
 WHERE tenant = %s AND session_id = %s AND actor_id = %s AND position <= %s
   AND version < %s AND type = ANY(%s)
 ORDER BY version DESC LIMIT %s
"""


def session_tail(conn: sa.Connection, log: Log, scope: Scope, bound: int,
                 before_version: int, limit: int) -> list[RecordedEvent]:
    """The session's turn events at or before ``bound``, newest first, older than
    ``before_version``: straight from the log, so an append is visible at once. Sealed
    payloads are opened by the log (a forgotten one comes back empty)."""
    rows = conn.exec_driver_sql(SESSION_TAIL, (
        scope.tenant, scope.session, scope.actor, bound, before_version, list(TURN_TYPES),
        limit)).fetchall()
    opener = getattr(log, "recorded_events", None)
    if opener is not None:
        return list(opener(conn, rows))
    return [log_sql.to_recorded(r, log.registry) for r in rows]


SUMMARY = """
SELECT covers_position, events_covered, text, source_event_ids
  FROM memory_summaries
 WHERE tenant = %s AND generation = %s AND session_id = %s AND actor_id = %s
   AND covers_position <= %s
 ORDER BY covers_position DESC LIMIT 1
"""


@dataclass(frozen=True)
class SummaryRow:
    """The summary of a session's events up to ``covers_position``, and its sources."""

    covers_position: int
    events_covered: int
    text: str
    source_event_ids: tuple[UUID, ...]


def session_summary(conn: sa.Connection, scope: Scope, gen: Generation, bound: int
                    ) -> SummaryRow | None:
    """The newest summary version of the session that covers no event after ``bound``."""
    row = conn.exec_driver_sql(SUMMARY, (scope.tenant, gen.generation, scope.session,
                                         scope.actor, bound)).fetchone()
    if row is None:
        return None
    return SummaryRow(row[0], row[1], row[2], tuple(row[3] or ()))

"""Session summaries: the projection that keeps a rolling summary per session, stored as
versions by log position.

When it is refreshed (all in *log* terms, so a rebuild gives the same versions as
following the log live, whatever the batch boundaries):

* every ``every`` new events of the session (counted by session version);
* when the session goes quiet: the log shows an event ``quiet_after`` seconds (by
  ``occurred_at``) after the session's last event, and the session has events its summary
  does not cover yet.

``Runner.follow()`` adds one wall-clock rule when the log itself is idle: a session whose
last event is older than ``quiet_after`` is summarized then (the only rule that depends on
when the runner runs).

A refresh gives the summarizer (memory/projections/summarizer.py; the default is
extractive and needs no language model) the previous version (if any) and the session's
turns since it, and stores the result tagged with the position of the session's last
covered event. :func:`summary_at` reads the summary as it stood at any position.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..log import Log, RecordedEvent, SchemaRegistry
from ..log import sql as log_sql
from .chunks import event_text
from .generations import live_generation_sql
from .projection import BaseProjection
from .quarantine import is_poison
from .summarizer import ExtractiveSummarizer, Summarizer, Summary, Turn


@dataclass(frozen=True)
class SummaryVersion:
    tenant: str
    actor_id: str
    session_id: str
    generation: int
    covers_position: int
    events_covered: int
    text: str
    source_event_ids: list[Any]


@dataclass
class _Session:
    tenant: str
    actor_id: str
    session_id: str
    last_position: int
    last_version: int
    last_occurred_at: datetime
    summarized_version: int = 0
    dirty: bool = False

    @property
    def pending(self) -> bool:
        return self.last_version > self.summarized_version


@dataclass
class _Batch:
    """Working state of one apply call."""

    sessions: dict[tuple[str, str], _Session] = field(default_factory=dict)
    heap: list[tuple[datetime, str, str, int]] = field(default_factory=list)
    latest: dict[tuple[str, str], SummaryVersion | None] = field(default_factory=dict)
    written: int = 0


_READ_TURNS = f"""
SELECT {log_sql.EVENT_COLUMNS} FROM memory_events
 WHERE tenant = %s AND session_id = %s AND version > %s AND version <= %s
 ORDER BY version DESC LIMIT %s
"""


class SummariesProjection(BaseProjection):
    """Rolling session summaries (``memory_summaries``), see the module docstring."""

    name = "summaries"
    version = 1

    def __init__(self, summarizer: Summarizer | None = None, *, every: int = 20,
                 quiet_after: float = 1800.0, max_turns: int = 200,
                 log: Log | None = None, registry: SchemaRegistry | None = None) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self.summarizer = summarizer if summarizer is not None else ExtractiveSummarizer()
        self.every = every
        self.quiet_after = timedelta(seconds=quiet_after)
        self.max_turns = max_turns
        self.log = log  # reads (and opens) the turns it summarizes
        self.registry = registry

    def config(self) -> dict[str, Any]:
        return {"summarizer": self.summarizer.name, **self.summarizer.config(),
                "every": self.every, "quiet_after_s": self.quiet_after.total_seconds(),
                "max_turns": self.max_turns}

    # -- state -----------------------------------------------------------------------

    def _load(self, conn: sa.Connection, generation: int, batch: _Batch,
              events: Sequence[RecordedEvent]) -> datetime | None:
        rows = conn.exec_driver_sql(
            "SELECT tenant, actor_id, session_id, last_position, last_version, "
            "last_occurred_at, summarized_version FROM memory_summary_state "
            "WHERE generation = %s AND last_version > summarized_version", (generation,))
        for r in rows:
            s = _Session(*r)
            batch.sessions[(s.tenant, s.session_id)] = s
            heapq.heappush(batch.heap, (s.last_occurred_at, s.tenant, s.session_id,
                                        s.last_version))
        keys = {(e.tenant, e.session_id) for e in events} - batch.sessions.keys()
        if keys:
            tenants = [k[0] for k in keys]
            sessions = [k[1] for k in keys]
            rows = conn.exec_driver_sql(
                "SELECT s.tenant, s.actor_id, s.session_id, s.last_position, s.last_version,"
                " s.last_occurred_at, s.summarized_version FROM memory_summary_state s "
                "JOIN unnest(%s::text[], %s::text[]) AS k(tenant, session_id) "
                "ON s.tenant = k.tenant AND s.session_id = k.session_id "
                "WHERE s.generation = %s", (tenants, sessions, generation))
            for r in rows:
                batch.sessions[(r[0], r[2])] = _Session(*r)
        return conn.exec_driver_sql(
            "SELECT max(last_occurred_at) FROM memory_summary_state WHERE generation = %s",
            (generation,)).scalar()

    def _save(self, conn: sa.Connection, generation: int, batch: _Batch) -> None:
        dirty = [s for s in batch.sessions.values() if s.dirty]
        if not dirty:
            return
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.executemany(
                "INSERT INTO memory_summary_state (generation, tenant, actor_id, session_id, "
                "last_position, last_version, last_occurred_at, summarized_version) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant, generation, session_id) DO UPDATE SET "
                "last_position = excluded.last_position, last_version = excluded.last_version,"
                " last_occurred_at = excluded.last_occurred_at, "
                "summarized_version = excluded.summarized_version",
                [(generation, s.tenant, s.actor_id, s.session_id, s.last_position,
                  s.last_version, s.last_occurred_at, s.summarized_version) for s in dirty])

    # -- applying --------------------------------------------------------------------

    def apply(self, conn: sa.Connection, generation: int,
              events: Sequence[RecordedEvent]) -> int:
        batch = _Batch()
        clock = self._load(conn, generation, batch, events)
        for ev in events:
            if clock is None or ev.occurred_at > clock:
                clock = ev.occurred_at
                self._flush_quiet(conn, generation, batch, clock - self.quiet_after)
            key = (ev.tenant, ev.session_id)
            s = batch.sessions.get(key)
            if s is not None and ev.version <= s.last_version:
                # a quarantined event applied late (a retry): the session's next refresh
                # reads its turn from the log like any other
                continue
            if s is None:
                s = batch.sessions[key] = _Session(ev.tenant, ev.actor_id, ev.session_id,
                                                   ev.position, ev.version, ev.occurred_at)
            s.last_position, s.last_version = ev.position, ev.version
            s.last_occurred_at = ev.occurred_at
            s.dirty = True
            if s.last_version - s.summarized_version >= self.every:
                self._refresh(conn, generation, batch, s)
            else:
                heapq.heappush(batch.heap, (s.last_occurred_at, s.tenant, s.session_id,
                                            s.last_version))
        self._save(conn, generation, batch)
        return batch.written

    def _flush_quiet(self, conn: sa.Connection, generation: int, batch: _Batch,
                     before: datetime) -> None:
        while batch.heap and batch.heap[0][0] < before:
            _, tenant, session_id, version = heapq.heappop(batch.heap)
            s = batch.sessions.get((tenant, session_id))
            if s is None or s.last_version != version or not s.pending:
                continue  # stale heap entry
            self._refresh(conn, generation, batch, s)

    def idle(self, conn: sa.Connection, generation: int) -> int:
        """Summarize sessions quiet for ``quiet_after`` by the wall clock."""
        batch = _Batch()
        self._load(conn, generation, batch, [])
        now = conn.exec_driver_sql("SELECT now()").scalar_one()
        self._flush_quiet(conn, generation, batch, now - self.quiet_after)
        self._save(conn, generation, batch)
        return batch.written

    def _latest(self, conn: sa.Connection, generation: int, batch: _Batch, s: _Session
                ) -> SummaryVersion | None:
        key = (s.tenant, s.session_id)
        if key not in batch.latest:
            r = conn.exec_driver_sql(
                "SELECT covers_position, events_covered, text, source_event_ids "
                "FROM memory_summaries WHERE tenant = %s AND generation = %s AND "
                "session_id = %s ORDER BY covers_position DESC LIMIT 1",
                (s.tenant, generation, s.session_id)).first()
            batch.latest[key] = None if r is None else SummaryVersion(
                s.tenant, s.actor_id, s.session_id, generation, r[0], r[1], r[2], list(r[3]))
        return batch.latest[key]

    def _turns(self, conn: sa.Connection, s: _Session, after_version: int) -> list[Turn]:
        rows = conn.exec_driver_sql(
            _READ_TURNS, (s.tenant, s.session_id, after_version, s.last_version,
                          self.max_turns)).fetchall()[::-1]
        turns: list[Turn] = []
        for ev in self.recorded_events(conn, rows):
            try:
                found = event_text(ev)
            except Exception as exc:  # a malformed turn was quarantined as an event
                if not is_poison(exc):
                    raise
                continue
            if found is not None:
                turns.append(Turn(ev.event_id, ev.position, ev.version, found[1], found[2],
                                  found[0], ev.occurred_at))
        return turns

    def recorded_events(self, conn: sa.Connection, rows: Sequence[Any]) -> list[RecordedEvent]:
        """Rows as events, through the log when it can open sealed payloads."""
        opener = getattr(self.log, "recorded_events", None)
        if opener is not None:
            try:
                return list(opener(conn, rows))
            except Exception as exc:
                if not is_poison(exc):
                    raise
            # a turn that cannot be opened was quarantined when it was read as an event
            # (memory/projections/quarantine.py): summarize the others without it
            readable: list[RecordedEvent] = []
            for r in rows:
                try:
                    readable.extend(opener(conn, [r]))
                except Exception as exc:
                    if not is_poison(exc):
                        raise
            return readable
        if self.registry is None:
            self.registry = self.log.registry if self.log is not None \
                else SchemaRegistry.default()
        return [log_sql.to_recorded(r, self.registry) for r in rows]

    def _refresh(self, conn: sa.Connection, generation: int, batch: _Batch,
                 s: _Session) -> None:
        previous = self._latest(conn, generation, batch, s)
        after = previous.events_covered if previous is not None else 0
        turns = self._turns(conn, s, after) if s.last_version > after else []
        s.summarized_version = s.last_version
        s.dirty = True
        if not turns:
            return
        prev = None if previous is None else Summary(previous.text,
                                                     tuple(previous.source_event_ids))
        result = self.summarizer.summarize(prev, turns)
        if isinstance(result, str):
            ids = list(prev.source_event_ids) if prev else []
            known = set(ids)
            ids += [t.event_id for t in turns if t.event_id not in known]
            result = Summary(result, tuple(ids))
        if not result.text.strip():
            return
        version = SummaryVersion(s.tenant, s.actor_id, s.session_id, generation,
                                 s.last_position, s.last_version, result.text,
                                 [e for e in result.source_event_ids if e is not None])
        conn.exec_driver_sql(
            "INSERT INTO memory_summaries (generation, tenant, actor_id, session_id, "
            "covers_position, events_covered, text, source_event_ids) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s::uuid[])",
            (generation, s.tenant, s.actor_id, s.session_id, version.covers_position,
             version.events_covered, version.text,
             [str(e) for e in version.source_event_ids]))
        batch.latest[(s.tenant, s.session_id)] = version
        batch.written += 1

    # -- lifecycle -------------------------------------------------------------------

    def drop(self, conn: sa.Connection, generation: int) -> None:
        conn.exec_driver_sql("DELETE FROM memory_summaries WHERE generation = %s",
                             (generation,))
        conn.exec_driver_sql("DELETE FROM memory_summary_state WHERE generation = %s",
                             (generation,))

    def forget(self, conn: sa.Connection, tenant: str, *, actor_id: str | None = None,
               event_ids: Sequence[Any] | None = None) -> int:
        return forget_summaries(conn, tenant, actor_id=actor_id, event_ids=event_ids)


def forget_summaries(conn: sa.Connection, tenant: str, *, actor_id: str | None = None,
                     event_ids: Sequence[Any] | None = None) -> int:
    """Delete the summaries of an actor, and every summary version drawn from any of
    ``event_ids``, in every generation. The next refresh of such a session starts from
    its latest remaining version (or from scratch)."""
    deleted = 0
    if actor_id is not None:
        deleted += conn.exec_driver_sql(
            "DELETE FROM memory_summaries WHERE tenant = %s AND actor_id = %s",
            (tenant, actor_id)).rowcount
        conn.exec_driver_sql(
            "DELETE FROM memory_summary_state WHERE tenant = %s AND actor_id = %s",
            (tenant, actor_id))
    if event_ids:
        deleted += conn.exec_driver_sql(
            "DELETE FROM memory_summaries WHERE tenant = %s AND "
            "source_event_ids && %s::uuid[]",
            (tenant, [str(e) for e in event_ids])).rowcount
    return deleted


def summary_at(conn: sa.Connection, tenant: str, session_id: str,
               position: int | None = None) -> SummaryVersion | None:
    """The live summary of a session as it stood at log ``position`` (latest if None)."""
    sql = ("SELECT tenant, actor_id, session_id, generation, covers_position, events_covered,"
           " text, source_event_ids FROM memory_summaries WHERE tenant = %s AND "
           f"session_id = %s AND generation = {live_generation_sql('summaries')}")
    params: tuple[Any, ...] = (tenant, session_id)
    if position is not None:
        sql += " AND covers_position <= %s"
        params += (position,)
    r = conn.exec_driver_sql(sql + " ORDER BY covers_position DESC LIMIT 1", params).first()
    if r is None:
        return None
    return SummaryVersion(r[0], r[1], r[2], r[3], r[4], r[5], r[6], list(r[7]))

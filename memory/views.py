"""Session views: branches and withdrawals that are themselves events of the log.

Nothing in the log is rewritten, so a session's *view* is computed from two event types:

* ``session_forked`` (schemas/session_forked.v1.json), version 1 of a branch: the branch's
  view is its parent's view up to the parent's own version N (recursively, so forks of
  forks work), then the branch's own events. Nothing is copied: the inherited events are
  the parent's rows and keep their origin (``session_id``, ``version``).
* ``events_retracted`` (schemas/events_retracted.v1.json): hides the events it names,
  own or inherited, from the view in which it appears, from its position on.

Why these two are written in clear (not sealed like other payloads): the database
computes views from them (the chain of forks, the hidden ids) in one statement, without
opening ciphertexts in Python first. They hold session ids, versions and event ids, which
are clear columns of the log anyway, and a retraction's ``reason``, which is therefore
documented as not for personal data (``forget`` does not erase it).

Why position order is view order: a branch's fork event is appended after the parent's
version N, so every inherited event has a lower position than the branch's own events;
by induction the whole view, read by position, is in view order. A view bounded by a log
position (``as_of``) is then simply the view's events at or below it, and a retraction
only hides events before it.

Reading a view is one statement: a recursive CTE walks the chain of fork events (one
index probe per ancestor, on the unique ``(tenant, session_id, version)`` index), and
the events of each (session, version range) segment are read by that index; the hidden
ids come from the retractions of the same segments (a partial index, alembic 0013).

What the retriever does with a view (memory/retrieval/context.py calls
:meth:`ContextView.load`): the recent turns are the view's (newest first, segment by
segment), never the parent's turns after the fork point; memories exclude the view's
hidden events, the ancestors' events after the fork point, and any event retracted in its
own session (a withdrawal by the session that wrote it holds for every context from its
position on; a branch that retracts an inherited event hides it in its own view only).
The summaries projection summarizes a session's view (:func:`summary_inputs`).

Faces: the statements are module constants and the decisions are functions of what they
return (:func:`view_of`, :func:`fork_event`, :func:`retraction_event`), so an async face
runs the same statements on its own connection and calls the same functions; the sync
:func:`read_view`, :func:`fork` and :func:`retract` only execute.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import log_sql
from .errors import (
    ConcurrencyError,
    ForkPointError,
    InvalidArgument,
    RetractionError,
    SessionExists,
    SessionOwnershipError,
    UnknownSession,
    ValidationError,
    ViewError,
)
from .events import (
    MAX_POSITION,
    MAX_VERSION,
    Appended,
    NewEvent,
    RecordedEvent,
    check_id,
    check_int,
    parse_event_id,
)
from .log import NO_STREAM, Log
from .security import tenant_scope

if TYPE_CHECKING:
    from .retrieval.search import Hit, Scope, SummaryRow

FORK_TYPE = "session_forked"
RETRACT_TYPE = "events_retracted"
CONTROL_TYPES = (FORK_TYPE, RETRACT_TYPE)
"""Event types that shape a view. They appear in ``read_session`` (they are the session's
own versions, so ``expected_version`` arithmetic stays plain) but are never items,
turns, chunks or memories."""
NOT_ITEMS = (*CONTROL_TYPES, "context_assembled")
"""Types a retraction by ``last=``/``all=`` never counts or hides."""
MAX_DEPTH = 64
"""Forks of forks: at most this many ancestors (a fork deeper than that is refused)."""
MAX_REASON = 1000

_NO_BOUND = MAX_POSITION

# The chain of a session: itself (depth 0, no upper version), then each ancestor with the
# version and position its child's view stops at. A fork event counts only when it is
# version 1 of its session, clear (a sealed one has a NULL payload), at or below the
# bound, and names an event of the same actor written before it: whatever was appended
# below the library, a view never reaches another actor or the parent's later events.
# Casts that cannot fail, whatever a payload below the library holds (a fork's version
# that is no integer, ids that are no array of uuids): such an event shapes nothing.
_VERSION = """CASE WHEN pg_input_is_valid(f.payload->>'parent_version', 'integer')
                     THEN (f.payload->>'parent_version')::integer END"""
_IDS = """CASE WHEN jsonb_typeof(r.payload->'event_ids') = 'array'
                                            THEN r.payload->'event_ids' END"""
_ID = "CASE WHEN pg_input_is_valid(x.id, 'uuid') THEN x.id::uuid END"

_CHAIN = f"""
WITH RECURSIVE chain(depth, session_id, upto, upto_pos) AS (
  SELECT 0, %(session)s::text, NULL::bigint, NULL::bigint
  UNION ALL
  SELECT c.depth + 1, p.session_id, p.version::bigint, p.position
    FROM chain c
    CROSS JOIN LATERAL (SELECT f.type, f.payload, f.position, f.actor_id
                          FROM memory_events f
                         WHERE f.tenant = %(tenant)s AND f.session_id = c.session_id
                           AND f.version = 1 LIMIT 1) f
    CROSS JOIN LATERAL (SELECT p.session_id, p.version, p.position, p.actor_id
                          FROM memory_events p
                         WHERE p.tenant = %(tenant)s
                           AND p.session_id = f.payload->>'parent_session_id'
                           AND p.version = {_VERSION}
                         LIMIT 1) p
   WHERE c.depth < {MAX_DEPTH} AND f.type = '{FORK_TYPE}' AND f.position <= %(bound)s
     AND p.position < f.position AND p.actor_id = f.actor_id
)"""
# (Each step is two probes of the unique (tenant, session_id, version) index, written as
# LATERAL ... LIMIT 1 so the planner cannot turn them into scans: as plain joins it
# scanned the actor's events by position for each ancestor, 2 ms a step at 10k events.)

# The whole view, each event with its secret.
READ_VIEW = f"""{_CHAIN}
{log_sql.SELECT_EVENTS}
  JOIN chain c ON c.session_id = e.session_id
 WHERE e.tenant = %(tenant)s AND e.position <= %(bound)s
   AND (c.upto IS NULL OR e.version <= c.upto)
"""
# (No ORDER BY: a sort of a long view spilled to disk at the default work_mem and cost 7 %
# of the read; the rows come segment by segment in version order and view_of sorts them,
# which is linear on input already in order.)

# What a context call (or a summary refresh) needs of a view, in one round trip: the
# chain ('c'), the ids hidden by the view's retractions ('h'), and the events retracted
# in their own session among the searched actors' sessions ('w'). Both retraction reads
# go by the partial indexes of alembic 0013, the named events by (tenant, event_id).
CONTEXT_VIEW = f"""{_CHAIN}
SELECT 'c', c.session_id, c.upto, c.upto_pos, NULL::text FROM chain c
UNION ALL
SELECT 'h', NULL, NULL, NULL, x.id
  FROM chain c
 CROSS JOIN LATERAL (SELECT r.payload FROM memory_events r
                      WHERE r.tenant = %(tenant)s AND r.session_id = c.session_id
                        AND r.type = '{RETRACT_TYPE}' AND r.position <= %(bound)s
                        AND (c.upto IS NULL OR r.version <= c.upto)) r
 CROSS JOIN LATERAL jsonb_array_elements_text({_IDS}) x(id)
UNION ALL
SELECT 'w', NULL, NULL, NULL, t.event_id::text
  FROM memory_events r
 CROSS JOIN LATERAL jsonb_array_elements_text({_IDS}) x(id)
 CROSS JOIN LATERAL (SELECT t.event_id FROM memory_events t
                      WHERE t.tenant = r.tenant AND t.event_id = {_ID}
                        AND t.session_id = r.session_id LIMIT 1) t
 WHERE r.tenant = %(tenant)s AND r.actor_id = ANY(%(actors)s)
   AND r.type = '{RETRACT_TYPE}' AND r.position <= %(bound)s
"""

# What a fork checks, in one statement: the parent's actor and head version, the new
# session's head version (NULL: it has no events), how many sessions the parent's chain
# holds (itself included).
FORK_STATE = f"""{_CHAIN}
SELECT (SELECT actor_id FROM memory_events WHERE tenant = %(tenant)s
           AND session_id = %(session)s ORDER BY version DESC LIMIT 1),
       (SELECT max(version) FROM memory_events WHERE tenant = %(tenant)s
           AND session_id = %(session)s),
       (SELECT max(version) FROM memory_events WHERE tenant = %(tenant)s
           AND session_id = %(new)s),
       (SELECT count(*) FROM chain)
"""

# A segment's events newer than a position, newest first (summaries of a view).
SEGMENT_AFTER = f"""
SELECT {log_sql.EVENT_COLUMNS} FROM memory_events
 WHERE tenant = %s AND session_id = %s AND version <= %s AND position > %s
   AND position <= %s
 ORDER BY version DESC LIMIT %s
"""

PARENT_SUMMARY = """
SELECT covers_position, events_covered, text, source_event_ids FROM memory_summaries
 WHERE tenant = %s AND generation = %s AND session_id = %s AND covers_position <= %s
 ORDER BY covers_position DESC LIMIT 1
"""


# -- reading a view --------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """A part of a view: ``session_id``'s own versions up to ``upto`` (None: all), which
    end at log position ``upto_position``."""

    session_id: str
    upto: int | None
    upto_position: int | None


@dataclass(frozen=True)
class ViewEntry:
    """One event of a view. ``event.session_id`` is its origin; ``inherited`` says it
    comes from an ancestor; ``hidden_by`` is the retraction that hides it (or None)."""

    event: RecordedEvent
    inherited: bool
    hidden_by: RecordedEvent | None = None

    @property
    def hidden(self) -> bool:
        return self.hidden_by is not None


class SessionView:
    """A session's view at log position ``bound``: every event in view order
    (``all_events``), the retraction hiding each hidden one (``hidden_by``, by event id).
    ``segments`` go from the session itself to its oldest ancestor."""

    def __init__(self, session_id: str, bound: int, all_events: Sequence[RecordedEvent],
                 hidden_by: dict[uuid.UUID, RecordedEvent]) -> None:
        self.session_id = session_id
        self.bound = bound
        self.all_events = tuple(all_events)
        self.hidden_by = hidden_by

    @property
    def events(self) -> list[RecordedEvent]:
        """The visible events (control events included), in order."""
        if not self.hidden_by:
            return list(self.all_events)
        return [e for e in self.all_events if e.event_id not in self.hidden_by]

    @property
    def entries(self) -> tuple[ViewEntry, ...]:
        """Every event with its origin and what hides it."""
        return tuple(ViewEntry(e, e.session_id != self.session_id,
                               self.hidden_by.get(e.event_id)) for e in self.all_events)

    @property
    def hidden(self) -> list[ViewEntry]:
        return [en for en in self.entries if en.hidden]

    @property
    def own(self) -> list[RecordedEvent]:
        return [e for e in self.all_events if e.session_id == self.session_id]

    @property
    def version(self) -> int:
        """The session's own head version (what ``expected_version`` compares with)."""
        for e in reversed(self.all_events):
            if e.session_id == self.session_id:
                return e.version
        return 0

    @property
    def actor_id(self) -> str | None:
        return self.all_events[-1].actor_id if self.all_events else None

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The segments, from the events themselves (each ancestor's last event)."""
        last: dict[str, RecordedEvent] = {}
        for e in self.all_events:
            last[e.session_id] = e
        order = [Segment(self.session_id, None, None)]
        for sid, e in sorted(last.items(), key=lambda kv: -kv[1].position):
            if sid != self.session_id:
                order.append(Segment(sid, e.version, e.position))
        return tuple(order)

    def items(self) -> list[RecordedEvent]:
        """Visible events a retraction may name: not control events, not recorded
        contexts."""
        return [e for e in self.events if e.type not in NOT_ITEMS]


def _bound(as_of: int | None) -> int:
    check_int(as_of, "as_of", 0, MAX_POSITION, none=True)
    return _NO_BOUND if as_of is None else as_of


def read_view(log: Log, tenant: str, session_id: str, *, as_of: int | None = None,
              conn: sa.Connection | None = None) -> SessionView:
    """The view of ``session_id`` as the log stood at ``as_of`` (the head if None)."""
    check_id(session_id, "session_id", log.limits)
    bound = _bound(as_of)
    params = {"tenant": tenant, "session": session_id, "bound": bound}
    if conn is None:
        with tenant_scope(tenant), log.engine.connect() as own:
            return _view(log, own, session_id, bound, params)
    return _view(log, conn, session_id, bound, params)


def _view(log: Log, conn: sa.Connection, session_id: str, bound: int,
          params: dict[str, Any]) -> SessionView:
    rows = conn.exec_driver_sql(READ_VIEW, params).fetchall()
    # sealed payloads opened as Log.read_session opens them
    return view_of(session_id, bound, log._recorded(conn, rows))


def view_of(session_id: str, bound: int, events: Sequence[RecordedEvent]) -> SessionView:
    """The view from :data:`READ_VIEW`'s rows as events, in any order (any face: sync or
    async)."""
    ordered = sorted(events, key=_position)  # already in order, as a rule: linear
    hidden_by: dict[uuid.UUID, RecordedEvent] = {}
    for e in ordered:
        if e.type == RETRACT_TYPE:
            named = (e.payload or {}).get("event_ids")
            for eid in named if isinstance(named, list) else ():
                try:
                    hidden_by.setdefault(uuid.UUID(str(eid)), e)
                except ValueError:
                    continue  # written below the library: names nothing
    return SessionView(session_id, bound, ordered, hidden_by)


def _position(e: RecordedEvent) -> int:
    return e.position


# -- writing: fork and retract -----------------------------------------------------------------


def _clear(log: Log) -> Log:
    """A face of the same log that appends in clear (the control events), sharing its
    engine, registry, limits and append connections."""
    return Log(log.engine, log.registry, log.limits, encrypt=False)


def fork(log: Log, tenant: str, actor: str, session_id: str, *, at_version: int,
         new_session: str, event_id: uuid.UUID | str | None = None) -> Appended:
    """Start ``new_session`` with the view of ``session_id`` up to its own version
    ``at_version``: appends the ``session_forked`` event as the new session's version 1.
    Refused (nothing written) when the parent has no events, belongs to another actor,
    ``at_version`` is past its head, or ``new_session`` already has events."""
    for value, what in ((actor, "actor"), (session_id, "session_id"),
                        (new_session, "new_session")):
        check_id(value, what, log.limits)
    with tenant_scope(tenant), log.engine.connect() as conn:
        found = conn.exec_driver_sql(FORK_STATE, {
            "tenant": tenant, "session": session_id, "new": new_session,
            "bound": _NO_BOUND}).one()
    event = fork_event(tenant, actor, session_id, at_version, new_session, found,
                       event_id)
    try:
        return _clear(log).append(tenant, actor, new_session, [event],
                                  expected_version=NO_STREAM)[0]
    except ConcurrencyError:
        raise SessionExists(f"session {new_session!r} was started meanwhile",
                            session_id=new_session) from None


def fork_event(tenant: str, actor: str, session_id: str, at_version: int, new_session: str,
               found: Sequence[Any], event_id: uuid.UUID | str | None = None) -> NewEvent:
    """The fork event to append (with ``expected_version=NO_STREAM``), given what
    :data:`FORK_STATE` found; raises the typed refusal otherwise."""
    if type(at_version) is not int:
        raise InvalidArgument("at_version", f"must be an integer, got {at_version!r:.40}")
    if new_session == session_id:
        raise SessionExists(f"a fork needs a new session; {new_session!r} is the parent",
                            session_id=new_session)
    owner, head, taken, depth = found
    if owner is None:
        raise UnknownSession(f"session {session_id!r} has no events in tenant {tenant!r}: "
                             "nothing to fork", session_id=session_id)
    if owner != actor:
        raise SessionOwnershipError(
            f"session {session_id!r} belongs to another actor than {actor!r}; a branch "
            "belongs to its parent's actor")
    if not 1 <= at_version <= head:
        raise ForkPointError(f"session {session_id!r} is at version {head}: a fork "
                             f"point must be 1..{head}, got {at_version}",
                             session_id=session_id)
    if taken is not None:
        raise SessionExists(f"session {new_session!r} already has events (version "
                            f"{taken}); a fork starts a new session",
                            session_id=new_session)
    if depth > MAX_DEPTH:
        raise ViewError(f"session {session_id!r} already has {depth - 1} ancestors; a "
                        f"view has at most {MAX_DEPTH}", session_id=session_id)
    return NewEvent(FORK_TYPE, {"parent_session_id": session_id,
                                "parent_version": at_version}, event_id=event_id)


def retract(log: Log, tenant: str, actor: str, session_id: str, *,
            event_ids: Iterable[uuid.UUID | str] | None = None, last: int | None = None,
            everything: bool = False, reason: str = "",
            event_id: uuid.UUID | str | None = None, attempts: int = 3) -> Appended:
    """Append one ``events_retracted`` event to ``session_id`` hiding, from then on, the
    items ``event_ids`` of its view (own or inherited), or its last ``last`` visible
    items, or all of them (``everything``). Items are visible events that are not control
    events or recorded contexts. Refused (nothing written) when an id is not a visible
    item of the view or there is nothing to retract. The view is read and the event
    appended with ``expected_version`` at the version read; a concurrent append makes it
    read again (up to ``attempts`` times)."""
    check_id(actor, "actor", log.limits)
    check_id(session_id, "session_id", log.limits)
    chosen = [event_ids is not None, last is not None, bool(everything)]
    if sum(chosen) != 1:
        raise InvalidArgument("event_ids", "give exactly one of event_ids, last or all")
    if last is not None:
        check_int(last, "last", 1, MAX_VERSION)
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise InvalidArgument("reason", f"must be a string of at most {MAX_REASON} "
                                        "characters")
    wanted: list[uuid.UUID] | None = None
    if event_ids is not None:
        if isinstance(event_ids, str | uuid.UUID):
            event_ids = [event_ids]
        wanted = list(dict.fromkeys(parse_event_id(e, i) for i, e in enumerate(event_ids)))
        if not wanted:
            raise InvalidArgument("event_ids", "name at least one event")
    for attempt in range(attempts):
        view = read_view(log, tenant, session_id)
        event = retraction_event(tenant, actor, view, wanted, last, reason, event_id)
        try:
            return _clear(log).append(tenant, actor, session_id, [event],
                                      expected_version=view.version)[0]
        except ConcurrencyError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def retraction_event(tenant: str, actor: str, view: SessionView,
                     wanted: Sequence[uuid.UUID] | None, last: int | None, reason: str,
                     event_id: uuid.UUID | str | None = None) -> NewEvent:
    """The retraction to append to ``view``'s session (with ``expected_version`` =
    ``view.version``): ``wanted`` ids, else the ``last`` n items, else all of them;
    raises the typed refusal otherwise."""
    session_id = view.session_id
    if not view.entries:
        raise UnknownSession(f"session {session_id!r} has no events in tenant "
                             f"{tenant!r}", session_id=session_id)
    if view.actor_id != actor:
        raise SessionOwnershipError(
            f"session {session_id!r} belongs to another actor than {actor!r}")
    items = view.items()
    if wanted is not None:
        visible = {e.event_id for e in items}
        missing = [str(e) for e in wanted if e not in visible]
        if missing:
            raise RetractionError(
                f"not visible items of session {session_id!r}'s view (unknown, already "
                f"hidden, or control events): {', '.join(missing[:5])}",
                session_id=session_id)
        ids = wanted
    else:
        ids = [e.event_id for e in (items[-last:] if last is not None else items)]
        if not ids:
            raise RetractionError(f"session {session_id!r} has no visible items to "
                                  "retract", session_id=session_id)
    return NewEvent(RETRACT_TYPE, {"event_ids": [str(e) for e in ids],
                                   "reason": reason}, event_id=event_id)


def refuse_control(events: NewEvent | Sequence[NewEvent]) -> None:
    """Control events are appended by :func:`fork` and :func:`retract` only, which check
    what they point at; a plain append of one is refused before anything is written."""
    batch = [events] if isinstance(events, NewEvent) else events
    for i, ev in enumerate(batch):
        if getattr(ev, "type", None) in CONTROL_TYPES:
            raise ValidationError(f"{ev.type} events are appended by Store.fork and "
                                  "Store.retract, not by append", index=i, field="type")


# -- what retrieval and the summaries see --------------------------------------------------


@dataclass
class ContextView:
    """A session's view as a context call (or a summary refresh) at ``bound`` needs it:
    its segments (newest first), the ids its retractions hide, and the ids retracted in
    their own session among the searched actors'. Loaded in one statement."""

    segments: tuple[Segment, ...]
    hidden: frozenset[str]
    withdrawn: frozenset[str]
    cut: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, conn: sa.Connection, scope: Scope, bound: int) -> ContextView:
        return cls.query(conn, scope.tenant, scope.session, scope.actors, bound)

    @classmethod
    def query(cls, conn: sa.Connection, tenant: str, session_id: str,
              actors: Sequence[str], bound: int) -> ContextView:
        rows = conn.exec_driver_sql(CONTEXT_VIEW, {
            "tenant": tenant, "session": session_id, "bound": bound,
            "actors": list(actors)}).fetchall()
        chain = sorted(((r[1], r[2], r[3]) for r in rows if r[0] == "c"),
                       key=lambda c: -(c[2] or MAX_POSITION))
        segments = tuple(Segment(s, u, p) for s, u, p in chain) or (
            Segment(session_id, None, None),)
        hidden = frozenset(r[4] for r in rows if r[0] == "h")
        withdrawn = frozenset(r[4] for r in rows if r[0] == "w")
        cut = {s.session_id: int(s.upto_position) for s in segments[1:]
               if s.upto_position is not None}
        return cls(segments, hidden, withdrawn, cut)

    @property
    def shaped(self) -> bool:
        """Whether the session's turns differ from its own events (a fork or a
        retraction in view)."""
        return len(self.segments) > 1 or bool(self.hidden)

    @property
    def filters(self) -> bool:
        """Whether some chunk in scope may be out of this view."""
        return self.shaped or bool(self.withdrawn)

    def keeps(self, hit: Hit) -> bool:
        """Whether a chunk may be a memory of this context."""
        eid = str(hit.event_id)
        if eid in self.hidden or eid in self.withdrawn:
            return False
        cut = self.cut.get(hit.session_id)
        return cut is None or hit.event_position <= cut

    def summary(self, row: SummaryRow | None) -> SummaryRow | None:
        """The session's summary without the lines drawn from events out of view (lines
        and sources pair up one to one for the extractive summarizer; otherwise a summary
        that cites one is dropped whole)."""
        if row is None or not self.filters:
            return row
        gone = self.hidden | self.withdrawn
        if not any(str(e) in gone for e in row.source_event_ids):
            return row
        lines = row.text.split("\n")
        if len(lines) != len(row.source_event_ids):
            return None
        kept = [(t, e) for t, e in zip(lines, row.source_event_ids, strict=True)
                if str(e) not in gone]
        return dataclasses.replace(row, text="\n".join(t for t, _ in kept),
                                   source_event_ids=tuple(e for _, e in kept))

    def tail(self) -> ViewTail:
        return ViewTail(self)


class ViewTail:
    """The view's turn events, newest first, a page at a time, segment by segment (each
    page one indexed statement on one session, as for an unforked session)."""

    def __init__(self, view: ContextView) -> None:
        self.view = view
        self.segment = 0
        self.before: int | None = None

    def page(self, conn: sa.Connection, log: Log, scope: Scope, bound: int, limit: int
             ) -> tuple[list[RecordedEvent], bool]:
        """(visible turn events of the next page, whether the view is exhausted)."""
        from .retrieval import search

        while self.segment < len(self.view.segments):
            seg = self.view.segments[self.segment]
            before = self.before if self.before is not None else (
                (seg.upto + 1) if seg.upto is not None else MAX_VERSION + 1)
            events = search.session_tail(conn, log, dataclasses.replace(
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


def summary_inputs(conn: sa.Connection, opener: Callable[[sa.Connection, Sequence[Any]],
                                                          list[Any]],
                   tenant: str, actor: str, session_id: str, generation: int,
                   last_position: int, previous: Any, max_turns: int
                   ) -> tuple[ContextView, Any, list[Any], bool] | None:
    """What a summary refresh of a session with a view (a branch, or one with
    retractions) starts from, or None for a plain session. Returns (the view, the
    previous summary to build on, the view's turn rows after it (opened by ``opener``,
    oldest first, hidden ones left out), whether the previous summary changed: lines out
    of view dropped, or a branch's first summary seeded from its parent's at the fork
    point). ``previous`` and the result have ``text``, ``source_event_ids`` and
    ``covers_position``."""
    view = ContextView.query(conn, tenant, session_id, [actor], last_position)
    if not view.filters:
        return None
    changed = False
    seed = previous
    if seed is None and len(view.segments) > 1:
        parent = view.segments[1]
        r = conn.exec_driver_sql(PARENT_SUMMARY, (tenant, generation, parent.session_id,
                                                  parent.upto_position)).fetchone()
        if r is not None:
            seed = _Seed(r[0], r[1], r[2], tuple(r[3] or ()))
            changed = True
    if seed is not None:
        cleaned = view.summary(_row(seed))
        if cleaned is None:
            seed, changed = None, True
        elif cleaned.text != seed.text:
            seed = _Seed(seed.covers_position, seed.events_covered, cleaned.text,
                         tuple(cleaned.source_event_ids))
            changed = True
    after = seed.covers_position if seed is not None else 0
    rows: list[Any] = []
    for seg in view.segments:
        if len(rows) >= max_turns:
            break
        upto = seg.upto if seg.upto is not None else MAX_VERSION
        rows += conn.exec_driver_sql(SEGMENT_AFTER, (tenant, seg.session_id, upto, after,
                                                     last_position,
                                                     max_turns - len(rows))).fetchall()
    gone = view.hidden | view.withdrawn
    events = [e for e in opener(conn, rows[::-1]) if str(e.event_id) not in gone]
    return view, seed, events, changed


@dataclass(frozen=True)
class _Seed:
    covers_position: int
    events_covered: int
    text: str
    source_event_ids: tuple[Any, ...]


def _row(seed: Any) -> SummaryRow:
    from .retrieval.search import SummaryRow

    return SummaryRow(seed.covers_position, seed.events_covered, seed.text,
                      tuple(seed.source_event_ids))

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

A view is read in one statement (memory/log/sql.py, ``READ_VIEW``). :class:`ViewFilter` is
what a reader at a log position needs of it: the retriever's turns and memories
(memory/retrieval/sessionview.py) and the summary of a view
(memory/projections/viewsummary.py) follow it.

Faces: the statements live in memory/log/sql.py and the decisions are functions of what
they return (:func:`view_of`, :func:`fork_event`, :func:`retraction_event`,
:meth:`ViewFilter.from_rows`), so an async face runs the same statements on its own
connection and calls the same functions; the sync :func:`read_view`, :func:`fork`,
:func:`retract` and :meth:`ViewFilter.query` only execute.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import sqlalchemy as sa

from ..errors import (
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
from ..pg import tenant_scope
from . import sql as log_sql
from .eventlog import NO_STREAM, Log
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
from .sql import FORK_TYPE, MAX_DEPTH, RETRACT_TYPE

CONTROL_TYPES = (FORK_TYPE, RETRACT_TYPE)
"""Event types that shape a view. They appear in ``read_session`` (they are the session's
own versions, so ``expected_version`` arithmetic stays plain) but are never items,
turns, chunks or memories."""
NOT_ITEMS = (*CONTROL_TYPES, "context_assembled")
"""Types a retraction by ``last=``/``all=`` never counts or hides."""
MAX_REASON = 1000

_NO_BOUND = MAX_POSITION


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
    rows = conn.exec_driver_sql(log_sql.READ_VIEW, params).fetchall()
    # sealed payloads opened as Log.read_session opens them
    return view_of(session_id, bound, log.recorded_events(conn, rows))


def view_of(session_id: str, bound: int, events: Sequence[RecordedEvent]) -> SessionView:
    """The view from :data:`memory.log.sql.READ_VIEW`'s rows as events, in any order
    (any face: sync or async)."""
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
        found = conn.exec_driver_sql(log_sql.FORK_STATE, {
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
    :data:`memory.log.sql.FORK_STATE` found; raises the typed refusal otherwise."""
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


# -- what a reader at a position needs of a view -------------------------------------------


@dataclass
class ViewFilter:
    """A session's view as a reader at log position ``bound`` needs it (a context call, a
    summary refresh): its segments (newest first), the ids its retractions hide, and the
    ids retracted in their own session among the searched actors' sessions (a withdrawal
    by the session that wrote it holds for every reader from its position on; a branch
    that retracts an inherited event hides it in its own view only). ``cut``: for each
    ancestor, the last log position of the view. Loaded in one statement."""

    segments: tuple[Segment, ...]
    hidden: frozenset[str]
    withdrawn: frozenset[str]
    cut: dict[str, int] = field(default_factory=dict)

    @classmethod
    def query(cls, conn: sa.Connection, tenant: str, session_id: str,
              actors: Sequence[str], bound: int) -> Self:
        """Run :data:`memory.log.sql.VIEW_FILTER` on ``conn`` (in the tenant's scope)."""
        rows = conn.exec_driver_sql(log_sql.VIEW_FILTER, {
            "tenant": tenant, "session": session_id, "bound": bound,
            "actors": list(actors)}).fetchall()
        return cls.from_rows(session_id, rows)

    @classmethod
    def read(cls, log: Log, tenant: str, session_id: str, *, actors: Sequence[str] = (),
             as_of: int | None = None) -> Self:
        """:meth:`query` on its own connection; a plain session costs three index probes."""
        check_id(session_id, "session_id", log.limits)
        p = {"tenant": tenant, "session": session_id, "bound": _bound(as_of), "actors": [*actors]}
        with tenant_scope(tenant), log.engine.connect() as conn:
            if not conn.exec_driver_sql(log_sql.VIEW_MAY_FILTER, p).scalar_one():
                return cls.from_rows(session_id, ())
            return cls.query(conn, tenant, session_id, actors, p["bound"])

    @classmethod
    def from_rows(cls, session_id: str, rows: Sequence[Sequence[Any]]) -> Self:
        """The filter from :data:`memory.log.sql.VIEW_FILTER`'s rows (any face)."""
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
        """Whether some event of the searched actors may be out of this view."""
        return self.shaped or bool(self.withdrawn)

    @property
    def gone(self) -> frozenset[str]:
        """The ids of events out of view wherever they are: hidden or withdrawn."""
        return self.hidden | self.withdrawn

    def keeps_event(self, event_id: object, session_id: str, position: int) -> bool:
        """Whether an event (or text drawn from it) may be a memory of this view: not
        hidden, not withdrawn, and not an ancestor's event after the fork point."""
        eid = str(event_id)
        if eid in self.hidden or eid in self.withdrawn:
            return False
        cut = self.cut.get(session_id)
        return cut is None or position <= cut

    def kept_lines(self, text: str, source_event_ids: Sequence[Any]
                   ) -> tuple[str, tuple[Any, ...]] | None:
        """A summary's text and sources without the lines drawn from events out of view
        (lines and sources pair up one to one for the extractive summarizer; otherwise a
        summary that cites one is dropped whole: None)."""
        gone = self.gone
        if not self.filters or not any(str(e) in gone for e in source_event_ids):
            return text, tuple(source_event_ids)
        lines = text.split("\n")
        if len(lines) != len(source_event_ids):
            return None
        kept = [(t, e) for t, e in zip(lines, source_event_ids, strict=True)
                if str(e) not in gone]
        return "\n".join(t for t, _ in kept), tuple(e for _, e in kept)

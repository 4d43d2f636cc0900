"""The checkpointed apply loop: feeding a projection the log in batches, with poison events
isolated into quarantine.

The guarantee: :meth:`Applier.advance` moves a projection's checkpoint
(``memory_projections.position``) **in the same transaction** as the projection's writes.
A crash rolls back both, so an event is never applied twice nor skipped. The checkpoint is
"the highest position read", which is safe because the log hands out positions in commit
order (see ``memory.log.sql``).

Poison events
-------------
An event the projection cannot process does not stop it: a ciphertext that fails
authentication, JSON that does not decode, a payload its upcaster rejects, or an exception
from ``apply`` for that event. Each batch runs in a savepoint; when it fails with an error
that can be an event's fault (:func:`memory.projections.quarantine.is_poison`), the batch
is applied again in halves, each in its own savepoint, until every event that fails alone
is found (:meth:`Applier.isolate`). Those are written to ``memory_quarantine``
(projection, generation, position, tenant, event, error) in the same transaction that
moves the checkpoint past them, so a crash loses neither or both; the rest of the batch is
applied as usual, and no tenant's poison holds back another's events. The common path pays
one savepoint per batch. Errors that are not the event's fault (a lost connection, a lock
or statement timeout, a missing privilege, :class:`memory.errors.DependencyError` from the
embedder) still raise and move nothing. The run's :class:`RunSummary` lists what it
quarantined; :meth:`Applier.retry_one` applies an entry again once its cause is fixed and
marks it resolved if it applies. A rebuild reads the log again, meets the same poison and
quarantines it in its own generation; a generation's entries are dropped with its rows.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..log import Log
from . import quarantine
from .projection import Projection
from .quarantine import QuarantinedEvent

# Events per transaction. The embedder sorts texts by length only within one call, so a
# bigger page pads less: on the quiet machine 1,000 gave 0.89 of raw encode throughput where
# 256 gave 0.74 (benchmarks/RESULTS.md). Memory stays flat either way (one page at a time).
DEFAULT_BATCH_SIZE = 1000


class GenerationRetired(Exception):
    """The generation a runner writes was switched out under it."""


@dataclass
class RunSummary:
    """What one call of the runner did."""

    name: str
    generation: int = 0
    events: int = 0
    rows: int = 0
    batches: int = 0
    seconds: float = 0.0
    position: int = 0
    rebuilt: bool = False
    switched: bool = False
    notes: list[str] = field(default_factory=list)
    quarantined: list[QuarantinedEvent] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        what = "rebuilt" if self.rebuilt else "caught up"
        text = (f"{self.name}: {what} generation {self.generation} to position "
                f"{self.position}: {self.events} events, {self.rows} rows in "
                f"{self.seconds:.1f}s ({self.events_per_s:.0f} events/s)")
        if self.switched:
            text += ", now live"
        if self.quarantined:
            text += f", {len(self.quarantined)} quarantined"
        return text


class Progress:
    """A tqdm bar over log positions (events/s, ETA), or nothing."""

    def __init__(self, enabled: bool | None, desc: str, start: int, head: int) -> None:
        total = max(head - start, 0)
        if enabled is None:
            enabled = sys.stderr.isatty() and total >= 2000
        self.bar: Any = None
        self.last = start
        if enabled and total > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="ev", unit_scale=True,
                            dynamic_ncols=True, smoothing=0.1, file=sys.stderr)

    def to(self, position: int) -> None:
        if self.bar is not None and position > self.last:
            self.bar.update(min(position - self.last, self.bar.total - self.bar.n))
        self.last = max(self.last, position)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()



class Applier:
    """Applies the log to one projection's generations, batch by batch, each batch and
    its checkpoint in one transaction. ``stop`` (a threading.Event) ends :meth:`advance`
    after the batch in flight; ``on_batch(events, last position)`` is called after each
    committed batch."""

    def __init__(self, engine: Engine, projection: Projection, log: Log, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, stop: threading.Event,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        self.engine = engine
        self.projection = projection
        self.log = log
        self.batch_size = batch_size
        self.stop = stop
        self.on_batch = on_batch
        self.name = projection.name

    def advance(self, gen: int, summary: RunSummary, bar: Progress,
                 conn: sa.Connection | None = None) -> None:
        """Apply batches to ``gen`` until the head (or a stop), each batch with the
        checkpoint update in one transaction: this is where a projection's checkpoint moves
        with its writes. With ``conn``, every batch runs in that one transaction (the
        switch). Raises :class:`GenerationRetired` if ``gen`` was switched out."""
        while not (self.stop.is_set() and conn is None):
            ctx = contextlib.nullcontext(conn) if conn is not None else self.engine.begin()
            with ctx as c:
                # the batch embeds inside its transaction: allow it more idle time than
                # the connection default, but not forever
                c.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = '30min'")
                row = c.exec_driver_sql(
                    "SELECT status, position FROM memory_projections WHERE name = %s AND "
                    "generation = %s FOR UPDATE", (self.name, gen)).first()
                if row is None or row[0] == "retired":
                    raise GenerationRetired
                position = row[1]
                try:
                    with c.begin_nested():  # the fast path: the whole batch at once
                        events = self.log.read_page(position, limit=self.batch_size, conn=c)
                        rows = self.projection.apply(c, gen, events) if events else 0
                    count = len(events)
                    last = events[-1].position if events else position
                    quarantined: list[QuarantinedEvent] = []
                except Exception as exc:
                    if not quarantine.is_poison(exc):
                        raise
                    count, last, rows, quarantined = self.isolate(c, gen, position)
                if not count:
                    summary.position = position
                    return
                # the checkpoint, in the transaction that wrote the batch's rows and its
                # quarantine entries: both commit or neither does
                c.exec_driver_sql("UPDATE memory_projections SET position = %s "
                                  "WHERE name = %s AND generation = %s", (last, self.name, gen))
            summary.events += count
            summary.rows += rows
            summary.batches += 1
            summary.position = last
            summary.quarantined.extend(quarantined)
            bar.to(last)
            if self.on_batch is not None:
                self.on_batch(count, last)
            if count < self.batch_size:
                return

    def isolate(self, c: sa.Connection, gen: int, after: int
                 ) -> tuple[int, int, int, list[QuarantinedEvent]]:
        """Re-apply the batch after ``after`` that failed, in parts, each in a savepoint,
        until every event that fails alone is found; quarantine those and keep the rest.

        The batch is halved while a part fails (a failing single event is poison), so k
        poison events among n cost about 2k*log2(n) applies, and parts that hold none are
        applied together as on the fast path. Positions, ids, tenants and actors come
        from the clear columns, which decode whatever the payload holds. Returns (events,
        last position, rows, quarantined)."""
        heads = [tuple(r) for r in c.exec_driver_sql(
            "SELECT position, event_id, tenant, actor_id FROM memory_events "
            "WHERE position > %s ORDER BY position LIMIT %s", (after, self.batch_size))]
        rows = 0
        found: list[QuarantinedEvent] = []

        def run(start: int, part: list[tuple[Any, ...]]) -> None:
            nonlocal rows
            try:
                with c.begin_nested():
                    events = [e for e in self.log.read_page(start, limit=len(part), conn=c)
                              if e.position <= part[-1][0]]
                    rows += self.projection.apply(c, gen, events) if events else 0
                return
            except Exception as exc:
                if not quarantine.is_poison(exc):
                    raise
                if len(part) == 1:
                    found.append(quarantine.record(c, self.name, gen, part[0], exc))
                    return
            half = len(part) // 2
            run(start, part[:half])
            run(part[half - 1][0], part[half:])

        if heads:
            run(after, heads)
        return len(heads), heads[-1][0] if heads else after, rows, found


    def retry_one(self, entry: QuarantinedEvent) -> QuarantinedEvent:
        """Apply one quarantined event again in its own transaction (the caller holds
        the generation's writer lock): resolved if it applies, recorded again if not."""
        if entry.projection != self.name:
            raise ValueError(f"entry #{entry.id} belongs to projection {entry.projection!r}")
        with self.engine.begin() as c:
            c.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = '30min'")
            c.exec_driver_sql("SELECT status FROM memory_projections WHERE name = %s AND "
                              "generation = %s FOR UPDATE", (self.name, entry.generation))
            current = quarantine.by_id(c, entry.id)
            if current.resolved:
                return current
            head = (entry.position, entry.event_id, entry.tenant, entry.actor_id)
            try:
                with c.begin_nested():
                    events = [e for e in self.log.read_page(entry.position - 1, limit=1,
                                                            conn=c)
                              if e.position == entry.position]
                    if events:
                        self.projection.apply(c, entry.generation, events)
            except Exception as exc:
                if not quarantine.is_poison(exc):
                    raise
                return quarantine.record(c, self.name, entry.generation, head, exc)
            return quarantine.resolve(c, entry.id)

"""The projection runner: the modes that drive one projection over the log (catch up,
rebuild, follow, retry).

Where each part lives:

* memory/projections/projection.py: what a projection is (:class:`Projection`,
  :class:`BaseProjection`) and the errors a run raises;
* memory/projections/applying.py: the checkpointed apply loop, where a projection's
  checkpoint moves in the same transaction as its writes, and poison events are isolated
  into quarantine;
* memory/projections/generations.py: the catalogue of generations and the configuration
  check;
* memory/projections/rebuild.py: building a generation beside the live one and switching;
* memory/projections/locks.py: one writer per generation, and the name lock.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from sqlalchemy.engine import Engine

from ..log import Log
from ..log import sql as log_sql
from .applying import DEFAULT_BATCH_SIZE, Applier, GenerationRetired, Progress, RunSummary
from .generations import Generation, check_config, generations, live_generation
from .locks import writer_lock
from .projection import Projection
from .quarantine import QuarantinedEvent
from .rebuild import cleanup_retired, prepare_building, switch

log = logging.getLogger(__name__)


class Runner:
    """Runs one projection against the log of ``engine``.

    ``batch_size`` events are read, applied and checkpointed per transaction. ``wait``
    says what a runner does when another one holds the generation: wait for it (polling
    every half second, up to ``wait_timeout`` seconds, forever for None) or raise
    :class:`ProjectionBusy` at once. ``progress``: True/False, or None for "a bar on a
    terminal when there are at least 2,000 events to go". ``stop`` (a threading.Event)
    ends any mode cleanly after the batch in flight.
    """

    def __init__(self, engine: Engine, projection: Projection, *, log: Log | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, wait: bool = True,
                 wait_timeout: float | None = None,
                 progress: bool | None = None, stop: threading.Event | None = None,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.engine = engine
        self.projection = projection
        self.log = log or Log(engine)
        self.batch_size = batch_size
        self.wait = wait
        self.wait_timeout = wait_timeout
        self.progress = progress
        self.stop = stop or threading.Event()
        self.on_batch = on_batch
        self.name = projection.name
        self.applier = Applier(engine, projection, self.log, batch_size=batch_size,
                               stop=self.stop, on_batch=on_batch)

    @contextlib.contextmanager
    def _locked(self, generation: int) -> Iterator[None]:
        """Hold the writer lock of (projection, generation) (memory/projections/locks.py)."""
        with writer_lock(self.engine, self.name, generation, wait=self.wait,
                         wait_timeout=self.wait_timeout, stop=self.stop,
                         announce=self.progress is not False):
            yield

    def generations(self) -> list[Generation]:
        with self.engine.connect() as conn:
            return generations(conn, self.name)

    def _bar(self, desc: str, start: int) -> Progress:
        return Progress(self.progress, desc, start, self.log.head())

    # -- modes ---------------------------------------------------------------------

    def catch_up(self) -> RunSummary:
        """Bring the live generation to the head of the log and return. With no live
        generation yet, the first one is built (and an interrupted first build resumed)."""
        while True:
            with self.engine.connect() as conn:
                live = live_generation(conn, self.name)
            if live is None:
                return self.rebuild()
            check_config(self.projection, live)
            summary = RunSummary(self.name, generation=live.generation)
            started = time.perf_counter()
            try:
                with self._locked(live.generation):
                    bar = self._bar(f"{self.name} g{live.generation}", live.position)
                    try:
                        self.applier.advance(live.generation, summary, bar)
                    finally:
                        bar.close()
            except GenerationRetired:
                # a rebuild switched generations meanwhile; its cleanup skipped ours (we
                # held it), so drop it now that it is released, then go on with the new one
                cleanup_retired(self.engine, self.projection)
                continue
            summary.seconds = time.perf_counter() - started
            return summary

    def rebuild(self) -> RunSummary:
        """Build a generation from position 0 beside the live one, then switch to it.
        An interrupted rebuild of the same configuration is resumed where it stopped."""
        started = time.perf_counter()
        gen = prepare_building(self.engine, self.projection)
        summary = RunSummary(self.name, generation=gen.generation, rebuilt=True)
        with self._locked(gen.generation):
            with self.engine.connect() as conn:
                current = {g.generation: g for g in generations(conn, self.name)}
            g = current.get(gen.generation)
            if g is None or g.status != "building":
                # someone else finished it while we waited for the lock
                summary.position = g.position if g else 0
                summary.notes.append("already built by another runner")
                summary.seconds = time.perf_counter() - started
                return summary
            bar = self._bar(f"{self.name} g{gen.generation} (rebuild)", g.position)
            try:
                self.applier.advance(gen.generation, summary, bar)
                if self.stop.is_set():
                    summary.notes.append("stopped before the switch; run again to resume")
                    summary.seconds = time.perf_counter() - started
                    return summary
                self.projection.finalize(self.engine, gen.generation)
                switch(self.applier, gen.generation, summary, bar)
            finally:
                bar.close()
        cleanup_retired(self.engine, self.projection)
        summary.seconds = time.perf_counter() - started
        return summary


    def retry(self, entries: Sequence[QuarantinedEvent]) -> list[QuarantinedEvent]:
        """Apply quarantined events of this projection again, each in its own
        transaction under the generation's writer lock: one that applies is marked
        resolved, one that fails again stays quarantined (its attempt counted, its newest
        error kept). Errors that are not the event's fault raise, as in a run. Entries of
        a generation that was retired meanwhile are left as they are. Returns the entries
        as they now stand."""
        out: list[QuarantinedEvent] = []
        for number in sorted({e.generation for e in entries}):
            with self.engine.connect() as conn:
                gen = next((g for g in generations(conn, self.name)
                            if g.generation == number), None)
            if gen is None or gen.status == "retired":
                continue
            check_config(self.projection, gen)
            with self._locked(number):
                for entry in entries:
                    if entry.generation == number:
                        out.append(self.applier.retry_one(entry))
        return out


    def follow(self, *, poll_interval: float = 1.0, idle_every: float = 5.0,
               handle_signals: bool = True) -> RunSummary:
        """Catch up, then keep applying new events as they commit until ``stop`` is set
        (or SIGINT/SIGTERM arrives, when called from the main thread). Wakes on the log's
        NOTIFY; polls every ``poll_interval`` seconds in case a wake-up is lost."""
        restore = self._install_signals() if handle_signals else {}
        total = RunSummary(self.name)
        started = time.perf_counter()
        listener = self._listen()
        try:
            first = self.catch_up()
            total.events, total.rows = first.events, first.rows
            total.generation, total.position = first.generation, first.position
            total.quarantined.extend(first.quarantined)
            last_idle = time.monotonic()
            while not self.stop.is_set():
                with self.engine.connect() as conn:
                    live = live_generation(conn, self.name)
                if live is None:
                    self.stop.wait(poll_interval)
                    continue
                check_config(self.projection, live)
                try:
                    with self._locked(live.generation):
                        total.generation = live.generation
                        self._follow_generation(live.generation, total, listener,
                                                poll_interval, idle_every, last_idle)
                except GenerationRetired:
                    cleanup_retired(self.engine, self.projection)  # see catch_up
                    continue
        finally:
            if listener is not None:
                listener.close()
            for sig, handler in restore.items():
                signal.signal(sig, handler)
        total.seconds = time.perf_counter() - started
        return total

    def _follow_generation(self, gen: int, total: RunSummary,
                           listener: psycopg.Connection[Any] | None, poll_interval: float,
                           idle_every: float, last_idle: float) -> None:
        bar = Progress(False, "", 0, 0)
        while not self.stop.is_set():
            self.applier.advance(gen, total, bar)
            if self.stop.is_set():
                return
            if time.monotonic() - last_idle >= idle_every:
                with self.engine.begin() as conn:
                    row = conn.exec_driver_sql(
                        "SELECT status FROM memory_projections WHERE name = %s AND "
                        "generation = %s FOR UPDATE", (self.name, gen)).first()
                    if row is None or row[0] == "retired":
                        raise GenerationRetired
                    total.rows += self.projection.idle(conn, gen)
                last_idle = time.monotonic()
            self._wait(listener, poll_interval)

    def _listen(self) -> psycopg.Connection[Any] | None:
        url = self.engine.url.set(drivername="postgresql")
        try:
            conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
            conn.execute(f"LISTEN {log_sql.NOTIFY_CHANNEL}")
            return conn
        except psycopg.Error as exc:
            log.warning("no LISTEN connection (%s); polling instead", exc)
            return None

    def _wait(self, listener: psycopg.Connection[Any] | None, poll_interval: float) -> None:
        """Until a NOTIFY, ``poll_interval`` or a stop, whichever comes first (checking
        the stop flag at least every 0.2 s)."""
        deadline = time.monotonic() + poll_interval
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if listener is None:
                self.stop.wait(min(left, 0.2))
                continue
            try:
                for _ in listener.notifies(timeout=min(left, 0.2), stop_after=1):
                    return
            except psycopg.Error:
                self.stop.wait(min(left, 0.2))

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}

        def handler(signum: int, _frame: object) -> None:
            log.info("signal %s: stopping after the batch in flight", signum)
            self.stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

"""The projection runner: checkpoints, catch-up, follow, rebuild.

A projection is a small object (:class:`Projection`) with a ``name``, a ``version``, a
``config()`` and an ``apply(conn, generation, events)`` that writes what a batch of events
derives. The runner feeds it the log in order and moves the projection's checkpoint
(``memory_projections.position``) **in the same transaction** as the projection's writes:
a crash rolls back both, so an event is never applied twice nor skipped. The checkpoint is
"the highest position read", which is safe because the log hands out positions in commit
order (see ``memory.log_sql``).

Generations
-----------
Every build of a projection is a *generation* (a row of ``memory_projections``):
``building`` while it is filled from position 0, ``live`` once it serves reads (at most
one per name), ``retired`` after a newer one replaced it. ``rebuild()`` fills a new
generation beside the live one, which keeps serving reads and (under its own lock) keeps
following the log; once the new one has caught up, a single transaction that holds both
rows applies the last events and swaps the statuses, so readers see either the old or the
new generation, never a mix. A rebuild that stops (crash, Ctrl-C, SIGKILL) resumes from
its own checkpoint next time. Readers select the live generation in the same statement
as the rows (``generation = (SELECT generation FROM memory_projections WHERE name = ...
AND status = 'live')``), see :func:`live_generation_sql`.

The generation's ``config`` records what shaped its rows (for chunks: the embedding model
and its dimension, the chunking rule). A runner whose projection is configured
differently from the live generation refuses to write to it
(:class:`ProjectionConfigMismatch`) instead of mixing, say, two vector spaces; a rebuild
builds the new configuration beside the old one and switches.

One writer per generation
-------------------------
A runner holds a session-level advisory lock on (projection, generation) while it writes.
A second runner for the same generation waits (``wait=True``, the default) or stops at
once with :class:`ProjectionBusy`. The lock goes with the connection, so a killed runner
releases it. Creating and switching generations happen under a transaction-level lock on
the projection's name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .. import log_sql
from ..errors import ConfigurationError, Error
from ..events import RecordedEvent
from ..log import Log

log = logging.getLogger(__name__)

LOCK_CLASS = 7_263_521  # first key of every projection advisory lock (int4)
# Events per transaction. The embedder sorts texts by length only within one call, so a
# bigger page pads less: on the quiet machine 1,000 gave 0.89 of raw encode throughput where
# 256 gave 0.74 (benchmarks/RESULTS.md). Memory stays flat either way (one page at a time).
DEFAULT_BATCH_SIZE = 1000


class ProjectionBusy(Error):
    """Another runner is writing this projection generation."""


class ProjectionConfigMismatch(ConfigurationError):
    """The live generation was built with another configuration (e.g. another model)."""


class _Retired(Exception):
    """The generation this runner writes was switched out under it."""


@runtime_checkable
class Projection(Protocol):
    """What the runner needs from a projection."""

    name: str
    version: int

    def config(self) -> dict[str, Any]:
        """What shapes the rows (model, dimension, rules); recorded per generation."""
        ...

    def apply(self, conn: sa.Connection, generation: int,
              events: Sequence[RecordedEvent]) -> int:
        """Write what ``events`` (in log order) derive; return the number of rows written.
        Runs inside the runner's transaction: never commit here."""
        ...

    def setup(self, conn: sa.Connection, generation: int) -> None:
        """A new generation was created (in the caller's transaction)."""
        ...

    def finalize(self, engine: Engine, generation: int) -> None:
        """The generation is about to go live (e.g. build its vector index). Idempotent;
        runs outside any transaction."""
        ...

    def drop(self, conn: sa.Connection, generation: int) -> None:
        """Remove every row and index of ``generation``."""
        ...

    def drop_indexes(self, engine: Engine, generation: int) -> None:
        """Drop the generation's own indexes without blocking readers (e.g. CONCURRENTLY);
        called outside any transaction before a retired generation is dropped."""
        ...

    def idle(self, conn: sa.Connection, generation: int) -> int:
        """Called by ``follow()`` when the log is quiet; may write (wall-clock work)."""
        ...

    def forget(self, conn: sa.Connection, tenant: str, *, actor_id: str | None = None,
               event_ids: Sequence[Any] | None = None) -> int:
        """Delete derived rows of a forgotten actor or events, in every generation."""
        ...


class BaseProjection:
    """Defaults for the optional parts of :class:`Projection`."""

    name = "base"
    version = 1

    def config(self) -> dict[str, Any]:
        return {}

    def setup(self, conn: sa.Connection, generation: int) -> None:
        return None

    def finalize(self, engine: Engine, generation: int) -> None:
        return None

    def drop(self, conn: sa.Connection, generation: int) -> None:
        return None

    def drop_indexes(self, engine: Engine, generation: int) -> None:
        return None

    def idle(self, conn: sa.Connection, generation: int) -> int:
        return 0

    def forget(self, conn: sa.Connection, tenant: str, *, actor_id: str | None = None,
               event_ids: Sequence[Any] | None = None) -> int:
        return 0


@dataclass(frozen=True)
class Generation:
    name: str
    generation: int
    status: str
    config: dict[str, Any]
    position: int


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
        return text


def full_config(projection: Projection) -> dict[str, Any]:
    """The configuration recorded with a generation (JSON round-tripped, so comparable
    with what the database gives back)."""
    return json.loads(json.dumps({"version": projection.version, **projection.config()},
                                 sort_keys=True))


def live_generation_sql(name: str) -> str:
    """A scalar subquery for the live generation of ``name`` (a literal: names are ours)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"bad projection name {name!r}")
    return (f"(SELECT generation FROM memory_projections WHERE name = '{name}' "
            "AND status = 'live')")


def generations(conn: sa.Connection, name: str) -> list[Generation]:
    rows = conn.exec_driver_sql(
        "SELECT name, generation, status, config, position FROM memory_projections "
        "WHERE name = %s ORDER BY generation", (name,)).fetchall()
    return [Generation(r[0], r[1], r[2], r[3] or {}, r[4]) for r in rows]


def live_generation(conn: sa.Connection, name: str) -> Generation | None:
    """The generation of ``name`` that serves reads, if any."""
    for g in generations(conn, name):
        if g.status == "live":
            return g
    return None


def describe_config(config: dict[str, Any]) -> str:
    model = config.get("model")
    if model is not None:
        return f"model {model!r} ({config.get('dim')} dims)"
    return json.dumps(config, sort_keys=True)


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two configurations, e.g. ``version 1 -> 2, pieces (none) ->
    true``: the model alone does not say why two generations differ."""
    def show(config: dict[str, Any], key: str) -> str:
        return json.dumps(config[key], sort_keys=True) if key in config else "(none)"

    keys = sorted(k for k in set(old) | set(new)
                  if k not in old or k not in new or old[k] != new[k])
    return ", ".join(f"{k} {show(old, k)} -> {show(new, k)}" for k in keys)


class _Progress:
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

    # -- locks ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, generation: int) -> Iterator[None]:
        """Hold the advisory lock of (projection, generation) on a dedicated connection."""
        key = f"{self.name}/{generation}"
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            deadline = None if self.wait_timeout is None else \
                time.monotonic() + self.wait_timeout
            announced = False
            while True:
                got = conn.exec_driver_sql("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                                           (LOCK_CLASS, key)).scalar_one()
                if got:
                    break
                holder = self._holder(conn, key)
                message = (f"projection {self.name!r} generation {generation} is being "
                           f"written by another runner{holder}")
                if not self.wait or self.stop.is_set() or (
                        deadline is not None and time.monotonic() > deadline):
                    raise ProjectionBusy(message + "; only one runner may write it at a time"
                                         " (stop the other one or retry later)")
                if not announced:
                    log.warning("%s; waiting for it to finish", message)
                    if self.progress is not False:
                        print(f"{message}; waiting for it to finish...", file=sys.stderr)
                    announced = True
                self.stop.wait(0.5)
            try:
                yield
            finally:
                try:
                    conn.exec_driver_sql("SELECT pg_advisory_unlock(%s, hashtext(%s))",
                                         (LOCK_CLASS, key))
                except sa.exc.DBAPIError:
                    conn.invalidate()  # the lock dies with the connection
        finally:
            conn.close()

    @staticmethod
    def _holder(conn: sa.Connection, key: str) -> str:
        try:
            row = conn.exec_driver_sql(
                "SELECT l.pid, a.application_name, a.client_addr FROM pg_locks l "
                "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid "
                "AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid AND l.objsubid = 2",
                (LOCK_CLASS, key)).first()
        except sa.exc.DBAPIError:
            return ""
        if row is None:
            return ""
        return f" (server backend pid {row[0]}, application {row[1] or '?'})"

    @contextlib.contextmanager
    def _name_locked(self, conn: sa.Connection) -> Iterator[None]:
        conn.exec_driver_sql("SET LOCAL lock_timeout = '60s'")
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                             (LOCK_CLASS, self.name))
        yield

    # -- state ---------------------------------------------------------------------

    def generations(self) -> list[Generation]:
        with self.engine.connect() as conn:
            return generations(conn, self.name)

    def _check_config(self, gen: Generation) -> None:
        want = full_config(self.projection)
        if gen.config != want:
            raise ProjectionConfigMismatch(
                f"projection {self.name!r}: the live generation {gen.generation} was built "
                f"with {describe_config(gen.config)}, this runner has "
                f"{describe_config(want)} (what differs: "
                f"{config_changes(gen.config, want)}). Rows of two configurations are never "
                f"mixed: re-project to build the new one beside the old and switch when done "
                f"(`memory reproject {self.name}"
                + (" --model PATH` or `--embedder NAME`)"
                   if gen.config.get("model") != want.get("model")
                   else "`)")
                + ", or use the configuration the live generation was built with.")

    def _prepare_building(self) -> Generation:
        """The generation to build: an interrupted build of the same configuration is
        resumed; one of another configuration (not being written) is dropped."""
        want = full_config(self.projection)
        with self.engine.begin() as conn, self._name_locked(conn):
            gens = generations(conn, self.name)
            for g in gens:
                if g.status != "building":
                    continue
                if g.config == want:
                    return g
                self._drop_generation(conn, g)
            number = max((g.generation for g in gens), default=0) + 1
            conn.exec_driver_sql(
                "INSERT INTO memory_projections (name, generation, status, config) "
                "VALUES (%s, %s, 'building', %s::jsonb)",
                (self.name, number, json.dumps(want, sort_keys=True)))
            self.projection.setup(conn, number)
            return Generation(self.name, number, "building", want, 0)

    def _drop_generation(self, conn: sa.Connection, g: Generation) -> None:
        """Remove a generation nobody writes (fails with ProjectionBusy if someone does)."""
        key = f"{self.name}/{g.generation}"
        got = conn.exec_driver_sql("SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
                                   (LOCK_CLASS, key)).scalar_one()
        if not got:
            raise ProjectionBusy(f"projection {self.name!r} generation {g.generation} "
                                 f"({g.status}) is being written by another runner")
        self.projection.drop(conn, g.generation)
        conn.exec_driver_sql("DELETE FROM memory_projections WHERE name = %s AND "
                             "generation = %s", (self.name, g.generation))

    # -- the batch loop --------------------------------------------------------------

    def _advance(self, gen: int, summary: RunSummary, bar: _Progress,
                 conn: sa.Connection | None = None) -> None:
        """Apply batches to ``gen`` until the head (or a stop). With ``conn``, every batch
        runs in that one transaction (the switch)."""
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
                    raise _Retired
                position = row[1]
                events = self.log.read_page(position, limit=self.batch_size, conn=c)
                if not events:
                    summary.position = position
                    return
                rows = self.projection.apply(c, gen, events)
                last = events[-1].position
                c.exec_driver_sql("UPDATE memory_projections SET position = %s "
                                  "WHERE name = %s AND generation = %s", (last, self.name, gen))
            summary.events += len(events)
            summary.rows += rows
            summary.batches += 1
            summary.position = last
            bar.to(last)
            if self.on_batch is not None:
                self.on_batch(len(events), last)
            if len(events) < self.batch_size:
                return

    def _bar(self, desc: str, start: int) -> _Progress:
        return _Progress(self.progress, desc, start, self.log.head())

    # -- modes ---------------------------------------------------------------------

    def catch_up(self) -> RunSummary:
        """Bring the live generation to the head of the log and return. With no live
        generation yet, the first one is built (and an interrupted first build resumed)."""
        while True:
            with self.engine.connect() as conn:
                live = live_generation(conn, self.name)
            if live is None:
                return self.rebuild()
            self._check_config(live)
            summary = RunSummary(self.name, generation=live.generation)
            started = time.perf_counter()
            try:
                with self._locked(live.generation):
                    bar = self._bar(f"{self.name} g{live.generation}", live.position)
                    try:
                        self._advance(live.generation, summary, bar)
                    finally:
                        bar.close()
            except _Retired:
                # a rebuild switched generations meanwhile; its cleanup skipped ours (we
                # held it), so drop it now that it is released, then go on with the new one
                self._cleanup_retired()
                continue
            summary.seconds = time.perf_counter() - started
            return summary

    def rebuild(self) -> RunSummary:
        """Build a generation from position 0 beside the live one, then switch to it.
        An interrupted rebuild of the same configuration is resumed where it stopped."""
        started = time.perf_counter()
        gen = self._prepare_building()
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
                self._advance(gen.generation, summary, bar)
                if self.stop.is_set():
                    summary.notes.append("stopped before the switch; run again to resume")
                    summary.seconds = time.perf_counter() - started
                    return summary
                self.projection.finalize(self.engine, gen.generation)
                self._switch(gen.generation, summary, bar)
            finally:
                bar.close()
        self._cleanup_retired()
        summary.seconds = time.perf_counter() - started
        return summary

    def _switch(self, gen: int, summary: RunSummary, bar: _Progress) -> None:
        """Apply the last events and make ``gen`` live, in one transaction holding both
        rows (a runner of the old live generation waits, then sees it retired)."""
        with self.engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '120s'")
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                                 (LOCK_CLASS, self.name))
            conn.exec_driver_sql(
                "SELECT generation FROM memory_projections WHERE name = %s AND "
                "status IN ('live', 'building') ORDER BY generation FOR UPDATE",
                (self.name,)).fetchall()
            self._advance(gen, summary, bar, conn=conn)
            conn.exec_driver_sql(
                "UPDATE memory_projections SET status = 'retired' WHERE name = %s AND "
                "status = 'live'", (self.name,))
            conn.exec_driver_sql(
                "UPDATE memory_projections SET status = 'live', switched_at = now() "
                "WHERE name = %s AND generation = %s", (self.name, gen))
        summary.switched = True

    def _cleanup_retired(self) -> None:
        """Drop the rows of retired generations (their catalogue rows stay, as history).
        A generation still held by a runner is left for the next cleanup."""
        with self.engine.connect() as conn:
            retired = [g for g in generations(conn, self.name) if g.status == "retired"]
        for g in retired:
            try:
                dropper = getattr(self.projection, "drop_indexes", None)
                if dropper is not None:
                    dropper(self.engine, g.generation)
                with self.engine.begin() as conn:
                    key = f"{self.name}/{g.generation}"
                    if not conn.exec_driver_sql(
                            "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))",
                            (LOCK_CLASS, key)).scalar_one():
                        continue
                    conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                    self.projection.drop(conn, g.generation)
            except sa.exc.DBAPIError as exc:  # cleanup is best effort
                log.warning("could not drop retired generation %s of %s: %s",
                            g.generation, self.name, exc)

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
            last_idle = time.monotonic()
            while not self.stop.is_set():
                with self.engine.connect() as conn:
                    live = live_generation(conn, self.name)
                if live is None:
                    self.stop.wait(poll_interval)
                    continue
                self._check_config(live)
                try:
                    with self._locked(live.generation):
                        total.generation = live.generation
                        self._follow_generation(live.generation, total, listener,
                                                poll_interval, idle_every, last_idle)
                except _Retired:
                    self._cleanup_retired()  # see catch_up
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
        bar = _Progress(False, "", 0, 0)
        while not self.stop.is_set():
            self._advance(gen, total, bar)
            if self.stop.is_set():
                return
            if time.monotonic() - last_idle >= idle_every:
                with self.engine.begin() as conn:
                    row = conn.exec_driver_sql(
                        "SELECT status FROM memory_projections WHERE name = %s AND "
                        "generation = %s FOR UPDATE", (self.name, gen)).first()
                    if row is None or row[0] == "retired":
                        raise _Retired
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

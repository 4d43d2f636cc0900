"""Append throughput of the event log, against raw INSERTs (the physical limit), and a
follower's lag behind concurrent writers. A script, not a timed test.

    .venv/bin/python benchmarks/append.py [--out results.json] [--duration 1.5] [--rounds 5]

Shapes: single events (one per call) and batches of 100 and 1,000, each with 1 and 4
concurrent writers (threads, each its own session). The library path is ``Store.append``
with validation on (JSON Schema, size, NUL/surrogate checks, idempotency hash, expected-
version logic, append lock, NOTIFY) and, by default, encryption; the writers share one
store, whose appends that arrive while another is in flight are sent together in one
transaction (memory/log/group.py), so "one per call" is not always one per transaction on
the library side. The table reports appends per statement (``per stmt``) for it. The raw
path is psycopg INSERTs into an equivalent table created in the same database (same columns
and indexes, a jsonb payload; no validation, no lock): one autocommit INSERT per event for
single events, ``executemany`` inside one transaction per batch otherwise. Library and raw
runs alternate for ``--rounds`` rounds (raw first in even rounds, library first in odd
ones) and the median of each is reported, so a noisy neighbour on a shared machine hits
both sides alike. Each ratio comes with a 90 % bootstrap interval over the rounds
(``90% int.``, ``ratio_interval_90``): on this machine one run's ratio moves by about
±0.05 from the next (benchmarks/RESULTS.md), so a ratio whose interval spans its target is
not settled by one run.

CPU: each run also reports, per event, the CPU time of this process (the writers' threads,
``client_us``) and of the whole machine (busy time from ``/proc/stat``, ``machine_us``: the
client, the server's backends and its background processes; Linux only, else null). The
machine figure is what bounds several writers on few cores; the client figure is what the
library's Python costs over a raw INSERT's.

The follower: ``Store.subscribe`` tails the log while 4 writers append single events as fast
as they can; the lag of an event is the time from its writer's commit acknowledgement to its
delivery by the subscription (same clock, same process).

With no ``MEMORY_DATABASE_URL`` the script starts its own embedded server in a temporary
``MEMORY_HOME`` and stops it at the end. With ``MEMORY_DATABASE_URL`` it creates a scratch
database on that server (the role needs CREATEDB) and drops it afterwards: appended events
cannot be deleted, so the benchmark never writes into a database that matters.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import psycopg
import result_file
import sqlalchemy as sa
from latency import percentiles
from machine_info import loadavg, machine
from psycopg.types.json import Jsonb

import memory

SHAPES = [(1, 1), (1, 4), (100, 1), (100, 4), (1000, 1), (1000, 4)]
TARGETS = {1: 0.7, 1000: 0.6}
LAG_TARGET_P95_MS = 100.0

RAW_DDL = """
CREATE TABLE bench_raw_events (
    position       bigserial   NOT NULL,
    event_id       uuid        NOT NULL,
    tenant         text        NOT NULL,
    actor_id       text        NOT NULL,
    session_id     text        NOT NULL,
    version        integer     NOT NULL CHECK (version > 0),
    type           text        NOT NULL,
    schema_version integer     NOT NULL CHECK (schema_version > 0),
    payload        jsonb,
    payload_enc    bytea,
    key_id         text,
    metadata       jsonb       NOT NULL DEFAULT '{}',
    content_hash   bytea       NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, position),
    UNIQUE (tenant, event_id),
    UNIQUE (tenant, session_id, version)
);
CREATE INDEX ON bench_raw_events (position);
CREATE INDEX ON bench_raw_events (tenant, actor_id, position);
"""

RAW_INSERT = """
INSERT INTO bench_raw_events (event_id, tenant, actor_id, session_id, version, type,
                              schema_version, payload, metadata, content_hash, occurred_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

TEXT = ("the quick brown fox jumps over a lazy dog while we talk about tea, trains, "
        "Lisbon in May, the budget review and whether the tests pass on two cores")
WORDS = TEXT.split()


def payloads(n: int = 997) -> list[dict[str, Any]]:
    """Chat turns of realistic size (~100-250 bytes of JSON), varied."""
    out = []
    for i in range(n):
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(12 + i % 25)]
        out.append({"role": "user" if i % 2 else "assistant",
                    "content": f"turn {i}: " + " ".join(words)})
    return out


# -- the two ways of writing ------------------------------------------------------------


class LibraryWriter:
    def __init__(self, store: memory.Store, name: str, batch: int,
                 pool: list[dict[str, Any]], actor: str = "bench") -> None:
        self.store, self.session, self.batch, self.pool = store, name, batch, pool
        self.i = 0
        self.actor = actor

    def write(self) -> int:
        n, pool, i = self.batch, self.pool, self.i
        events = [memory.NewEvent("message", pool[(i + k) % len(pool)]) for k in range(n)]
        self.i += n
        self.store.append(self.session, events, actor=self.actor)
        return n

    def close(self) -> None:
        pass


class RawWriter:
    def __init__(self, url: str, name: str, batch: int, pool: list[dict[str, Any]]) -> None:
        self.conn = psycopg.connect(url, autocommit=batch == 1)
        self.session, self.batch, self.pool = name, batch, pool
        self.version = 0
        self.hash = bytes(32)

    def _row(self, k: int) -> tuple[Any, ...]:
        self.version += 1
        return (uuid.uuid4(), "bench", "bench", self.session, self.version, "message", 2,
                Jsonb(self.pool[self.version % len(self.pool)]), Jsonb({}), self.hash,
                dt.datetime.now(dt.UTC))

    def write(self) -> int:
        if self.batch == 1:
            self.conn.execute(RAW_INSERT, self._row(0))
            return 1
        rows = [self._row(k) for k in range(self.batch)]
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(RAW_INSERT, rows)
        return self.batch

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True)
class Run:
    rate: float
    """Events per second."""
    client_us: float
    """CPU time of this process (all its threads) per event, in microseconds."""
    machine_us: float | None
    """Busy CPU time of the whole machine per event, in microseconds (None off Linux)."""


def machine_ticks() -> tuple[int, int] | None:
    """(all, idle) clock ticks of every CPU since boot, from /proc/stat; None if absent."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields), fields[3] + fields[4]  # idle + iowait


def run(make: Callable[[int], Any], writers: int, duration: float) -> Run:
    """Events per second for ``writers`` threads writing for ``duration`` seconds, with
    the CPU they and the machine spent per event (warm-up excluded)."""
    ws = [make(i) for i in range(writers)]
    for w in ws:  # warm up: connections open, statements prepared
        for _ in range(6 if w.batch == 1 else 1):
            w.write()
    counts = [0] * writers
    barrier = threading.Barrier(writers + 1)
    errors: list[BaseException] = []

    def loop(k: int) -> None:
        try:
            barrier.wait()
            deadline = time.perf_counter() + duration
            while time.perf_counter() < deadline:
                counts[k] += ws[k].write()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    ticks = machine_ticks()
    cpu = time.process_time()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    ticks_after = machine_ticks()
    for w in ws:
        w.close()
    if errors:
        raise errors[0]
    events = max(sum(counts), 1)
    machine_us = None
    if ticks is not None and ticks_after is not None:
        all_ticks, idle = (b - a for a, b in zip(ticks, ticks_after, strict=True))
        busy_s = (all_ticks - idle) / os.sysconf("SC_CLK_TCK")
        machine_us = busy_s / events * 1e6
    return Run(sum(counts) / elapsed, cpu / events * 1e6, machine_us)


def cpu_medians(runs: list[Run]) -> dict[str, float | None]:
    """The medians over rounds of the CPU per event (see :class:`Run`), rounded."""
    machine = [r.machine_us for r in runs if r.machine_us is not None]
    return {"client": round(statistics.median(r.client_us for r in runs), 1),
            "machine": round(statistics.median(machine), 1) if machine else None}


def ratio_interval(a: list[float], b: list[float], draws: int = 2000) -> tuple[float, float]:
    """A 90 % bootstrap interval of median(a) / median(b): the rounds of each side
    resampled with replacement (seeded, so a result file can be recomputed). The ratio
    of medians is what the table reports; the interval says how far the same machine
    could move it from one run to the next, so a ratio near its target is not read as
    met or missed on noise alone."""
    rng = random.Random(0)
    ratios = sorted(statistics.median(rng.choices(a, k=len(a)))
                    / statistics.median(rng.choices(b, k=len(b))) for _ in range(draws))
    return ratios[int(0.05 * draws)], ratios[int(0.95 * draws) - 1]


# -- the follower -----------------------------------------------------------------------


def follower_lag(store: memory.Store, duration: float) -> dict[str, Any]:
    pool = payloads()
    acked: dict[uuid.UUID, float] = {}
    delivered: dict[uuid.UUID, float] = {}
    sub = store.subscribe(store.head(), poll_interval=1.0)
    ready = threading.Event()

    def follow() -> None:
        it = iter(sub)
        ready.set()
        for event in it:
            delivered[event.event_id] = time.perf_counter()

    follower = threading.Thread(target=follow)
    follower.start()
    ready.wait()
    time.sleep(0.2)  # the subscription is listening and caught up

    def write(k: int) -> None:
        deadline = time.perf_counter() + duration
        i = 0
        while time.perf_counter() < deadline:
            out = store.append(f"lag-{k}", memory.NewEvent("message", pool[i % len(pool)]),
                               actor="bench")
            acked[out[0].event_id] = time.perf_counter()
            i += 1

    writers = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    deadline = time.perf_counter() + 10
    # (membership tests only: the follower thread is still adding to ``delivered``)
    while not all(e in delivered for e in acked) and time.perf_counter() < deadline:
        time.sleep(0.01)
    sub.stop()
    follower.join()
    lags = sorted((delivered[e] - t) * 1000 for e, t in acked.items() if e in delivered)
    missing = len(acked) - len(lags)
    return {"events": len(acked), "writers": 4, "missing": missing,
            "events_per_s": len(acked) / duration,
            **percentiles(lags, 50, 95, 99, key="p{}_ms"), "max_ms": round(lags[-1], 3)}


# -- encryption on vs off: what sealing costs ---------------------------------------------

ENCRYPTION_SHAPES = [(1, 1), (100, 1), (1000, 1), (1, 4)]
ENCRYPTION_TARGET = 0.85  # encryption may cost at most 15% of append throughput


def encryption_benchmark(url: str, pool: list[dict[str, Any]], duration: float,
                         rounds: int, read_events: int = 20_000) -> dict[str, Any]:
    """``Store.append`` with payloads sealed (the default) against the same with
    ``encrypt=False``, runs alternating, medians reported; then reading the log back
    (``Store.read`` of one actor: opening every sealed payload) both ways."""
    stores = {True: memory.Store.open(url, migrate=False, encrypt=True),
              False: memory.Store.open(url, migrate=False, encrypt=False)}
    shapes = []
    print(f"{'batch':>6} {'writers':>7} {'sealed ev/s':>12} {'clear ev/s':>11} {'ratio':>6} "
          f"{'90% int.':>10}")
    for batch, writers in ENCRYPTION_SHAPES:
        runs: dict[bool, list[float]] = {True: [], False: []}
        for r in range(rounds):
            for enc in (False, True) if r % 2 == 0 else (True, False):
                tag = f"enc{int(enc)}-{batch}-{writers}-{r}"
                runs[enc].append(run(lambda k, b=batch, t=tag, e=enc: LibraryWriter(
                    stores[e], f"{t}-{k}", b, pool, actor=t), writers, duration).rate)
        on, off = statistics.median(runs[True]), statistics.median(runs[False])
        low, high = ratio_interval(runs[True], runs[False])
        shapes.append({"batch": batch, "writers": writers, "sealed_per_s": round(on, 1),
                       "clear_per_s": round(off, 1), "ratio": round(on / off, 3),
                       "ratio_interval_90": [round(low, 3), round(high, 3)],
                       "runs": {"sealed": [round(x, 1) for x in runs[True]],
                                "clear": [round(x, 1) for x in runs[False]]}})
        print(f"{batch:>6} {writers:>7} {on:>12,.0f} {off:>11,.0f} {on / off:>6.2f} "
              f"{f'{low:.2f}-{high:.2f}':>10}", flush=True)
    reads: dict[bool, list[float]] = {True: [], False: []}
    for enc, store in stores.items():
        for i in range(0, read_events, 1000):
            store.append(f"read-{int(enc)}-{i}", [memory.NewEvent("message", pool[k % 997])
                                                  for k in range(i, i + 1000)],
                         actor=f"reader-{int(enc)}")
    for r in range(rounds):
        for enc in (False, True) if r % 2 == 0 else (True, False):
            start = time.perf_counter()
            n = sum(1 for _ in stores[enc].read(actor=f"reader-{int(enc)}"))
            reads[enc].append(n / (time.perf_counter() - start))
    read_on, read_off = statistics.median(reads[True]), statistics.median(reads[False])
    print(f"read {read_events} events: sealed {read_on:,.0f} ev/s, clear {read_off:,.0f} "
          f"ev/s, ratio {read_on / read_off:.2f}", flush=True)
    for store in stores.values():
        store.close()
    return {"target_ratio": ENCRYPTION_TARGET, "append": shapes,
            "read": {"events": read_events, "sealed_per_s": round(read_on, 1),
                     "clear_per_s": round(read_off, 1), "ratio": round(read_on / read_off, 3),
                     "runs": {"sealed": [round(x, 1) for x in reads[True]],
                              "clear": [round(x, 1) for x in reads[False]]}}}


# -- the run ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--duration", type=float, default=1.5, help="seconds per run")
    ap.add_argument("--rounds", type=int, default=5, help="alternating runs per side")
    ap.add_argument("--lag-duration", type=float, default=5.0)
    ap.add_argument("--shapes", default=",".join(f"{b}x{w}" for b, w in SHAPES),
                    help="BATCHxWRITERS,... (default: all six)")
    ap.add_argument("--encrypt", action=argparse.BooleanOptionalAction, default=None,
                    help="seal payloads (default: the library's default)")
    ap.add_argument("--encryption", action="store_true",
                    help="only compare appends and reads with encryption on and off")
    args = ap.parse_args(argv)
    with (harness.server(os.environ.get("MEMORY_DATABASE_URL")) as srv,
          harness.scratch_database(srv.url, f"memory_bench_{os.getpid()}") as url):
        return measure(args, url)


def measure(args: argparse.Namespace, url: str) -> int:
    """The whole benchmark (or, with ``--encryption``, only that part) in the scratch
    database ``url``."""
    raw_url = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    info = machine()
    options = {} if args.encrypt is None else {"encrypt": args.encrypt}
    store = memory.Store.open(url, **options)
    info["library"] = {"encrypt": getattr(store.log, "encrypt", False),
                       "role": store.engine.url.username}
    with psycopg.connect(raw_url, autocommit=True) as conn:
        conn.execute(RAW_DDL)
        settings = {k: conn.execute(f"SHOW {k}").fetchone()[0]  # type: ignore[index]
                    for k in ("server_version", "fsync", "synchronous_commit",
                              "wal_sync_method", "shared_buffers")}
    info["postgres"] = settings
    print(f"# append benchmark  {info['date']}  nproc={info['nproc']}  {info['cpu']}")
    print(f"# postgres {settings}")
    print(f"# library {info['library']}  loadavg {info['loadavg_at_start']}")
    pool = payloads()
    if args.encryption:
        enc = encryption_benchmark(url, pool, args.duration, args.rounds)
        info["loadavg_at_end"] = loadavg()
        result_file.write({"machine": info, "duration_s": args.duration,
                           "rounds": args.rounds, "encryption": enc}, args.out)
        store.close()
        return 0
    results: list[dict[str, Any]] = []
    header = (f"{'batch':>6} {'writers':>7} {'library ev/s':>13} {'raw ev/s':>11} "
              f"{'ratio':>6} {'90% int.':>10} {'target':>6} {'per stmt':>8}")
    print(header)
    shapes = [tuple(int(x) for x in shape.split("x")) for shape in args.shapes.split(",")]
    for batch, writers in shapes:
        measured: dict[str, list[Run]] = {"raw": [], "lib": []}
        stats_before = store.log.group_stats()
        for r in range(args.rounds):
            tag = f"{batch}-{writers}-{r}"
            for side in ("raw", "lib") if r % 2 == 0 else ("lib", "raw"):
                if side == "raw":
                    measured[side].append(run(lambda k, b=batch, t=tag: RawWriter(
                        raw_url, f"raw-{t}-{k}", b, pool), writers, args.duration))
                else:
                    measured[side].append(run(lambda k, b=batch, t=tag: LibraryWriter(
                        store, f"lib-{t}-{k}", b, pool), writers, args.duration))
        lib_runs = [m.rate for m in measured["lib"]]
        raw_runs = [m.rate for m in measured["raw"]]
        cpu = {side: cpu_medians(ms) for side, ms in measured.items()}
        lib, raw = statistics.median(lib_runs), statistics.median(raw_runs)
        low, high = ratio_interval(lib_runs, raw_runs)
        stats = [b - a for a, b in zip(stats_before, store.log.group_stats(), strict=True)]
        per_statement = stats[1] / stats[0] if stats[0] else 0.0
        target = TARGETS.get(batch)
        row = {"batch": batch, "writers": writers, "events_per_s": round(lib, 1),
               "raw_per_s": round(raw, 1), "ratio": round(lib / raw, 3),
               "ratio_interval_90": [round(low, 3), round(high, 3)],
               "target_ratio": target,
               "appends_per_statement": round(per_statement, 2),
               "runs": {"library": [round(x, 1) for x in lib_runs],
                        "raw": [round(x, 1) for x in raw_runs]},
               "cpu_us_per_event": {"library": cpu["lib"], "raw": cpu["raw"]}}
        results.append(row)
        print(f"{batch:>6} {writers:>7} {lib:>13,.0f} {raw:>11,.0f} {lib / raw:>6.2f} "
              f"{f'{low:.2f}-{high:.2f}':>10} "
              f"{'' if target is None else f'>={target}':>6} {per_statement:>8.2f}",
              flush=True)
        print(f"{'':>14} cpu per event (us, medians): library client "
              f"{cpu['lib']['client']:.0f}, machine {cpu['lib']['machine'] or 0:.0f}; "
              f"raw client {cpu['raw']['client']:.0f}, "
              f"machine {cpu['raw']['machine'] or 0:.0f}", flush=True)
    lag = follower_lag(store, args.lag_duration)
    print(f"follower behind 4 writers: {lag['events']} events "
          f"({lag['events_per_s']:,.0f}/s), lag p50 {lag['p50_ms']:.1f} ms, "
          f"p95 {lag['p95_ms']:.1f} ms, p99 {lag['p99_ms']:.1f} ms, "
          f"max {lag['max_ms']:.1f} ms, missing {lag['missing']}"
          f"  (target p95 < {LAG_TARGET_P95_MS:.0f} ms)")
    store.close()
    info["loadavg_at_end"] = loadavg()
    out = {"machine": info, "duration_s": args.duration, "rounds": args.rounds,
           "shapes": results, "follower_lag": lag}
    result_file.write(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

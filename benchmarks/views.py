"""What a view costs to read: a 10,000-event session read unforked against the same number
of events read through a chain of forks. A script, not a timed test.

    .venv/bin/python benchmarks/views.py [--events 10000] [--forks 10] [--rounds 9]
                                         [--out benchmarks/results/views-<date>.json]

Two sessions of one actor, sealed (the library's default), in one scratch database:

* ``flat``: ``--events`` events appended to one session;
* ``chain``: a root session and ``--forks`` branches, each forked at its parent's head,
  the events spread evenly over the 1 + forks segments so the leaf's view holds
  ``--events`` events (plus one fork event per branch). Each parent then gets 100 more
  events after the fork point, which the leaf's view must skip.

Measured, alternating the order every round, median over ``--rounds``:

* ``read_session`` of the flat session (the view path: one statement, no fork);
* ``Log.read_session`` of the flat session (the log's own read, the cost before views);
* ``read_session`` of the leaf (one statement over its 11 segments);
* ``context`` (budget 2,000, no projections: the recent turns from the log) for the flat
  session and for the leaf;
* the view statement (``ContextView.load``) on the flat session: what a context call adds
  when a fork or a retraction may shape its session's view (a call on a plain session
  skips it: its first statement says there is none).

Target (issue 17): the leaf read costs at most 1.5x the flat one. With no
``MEMORY_DATABASE_URL`` the script starts its own embedded server in a temporary
``MEMORY_HOME`` and stops it at the end; with one, it creates a scratch database on that
server and drops it afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import result_file
from machine_info import loadavg, machine

import memory

TARGET = 1.5
TEXT = ("We talked about the trip to Lisbon, the bakery near the station and the report "
        "due on Friday; nothing here is special, it only has the length of a real turn.")


def fill(store: memory.Store, session: str, n: int, tag: str) -> None:
    for start in range(0, n, 1000):
        store.append(session, [memory.message("user" if i % 2 else "assistant",
                                              f"{tag} {i}: {TEXT}")
                               for i in range(start, min(n, start + 1000))], actor="bench")


def build(store: memory.Store, events: int, forks: int) -> str:
    fill(store, "flat", events, "flat")
    per = [events // (forks + 1)] * (forks + 1)
    per[-1] += events - sum(per)
    name = "chain-0"
    fill(store, name, per[0], name)
    for k in range(1, forks + 1):
        parent, name = name, f"chain-{k}"
        store.fork(parent, at_version=store.view(parent).version, new_session=name,
                   actor="bench")
        fill(store, parent, 100, f"{parent} after the fork")
        fill(store, name, per[k], name)
    return name


VIEW_QUERIES = 100


def view_query(store: memory.Store, session: str) -> Any:
    """The statement a context call adds when a fork or a retraction may shape the view
    (ContextView.load), ``VIEW_QUERIES`` times on one open connection (as the context
    call runs it on its own)."""
    from memory.log import ViewFilter
    from memory.pg import tenant_scope

    with tenant_scope(store.tenant), store.engine.connect() as conn:
        for _ in range(VIEW_QUERIES):
            ViewFilter.query(conn, store.tenant, session, ["bench"], 2**62)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1000, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--forks", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    with (harness.server(os.environ.get("MEMORY_DATABASE_URL")) as srv,
          harness.scratch_database(srv.url, f"memory_bench_views_{os.getpid()}") as url):
        return measure(args, url)


def measure(args: argparse.Namespace, url: str) -> int:
    """Build both sessions in the scratch database ``url``, then time the reads."""
    info = machine()
    with memory.Store.open(url) as store:
        t0 = time.perf_counter()
        leaf = build(store, args.events, args.forks)
        info["build_s"] = round(time.perf_counter() - t0, 1)
        flat_n, leaf_n = len(store.read_session("flat")), len(store.read_session(leaf))
        print(f"# views benchmark {info['date']} commit {info['commit']} "
              f"nproc={info['nproc']} {info['cpu']}")
        print(f"# flat: {flat_n} events; {leaf}: {leaf_n} events in view over "
              f"{len(store.view(leaf).segments)} segments (built in {info['build_s']} s)")
        cases: dict[str, Callable[[], Any]] = {
            "flat_view": lambda: store.read_session("flat"),
            "flat_log": lambda: store.log.read_session(store.tenant, "flat"),
            "chain_view": lambda: store.read_session(leaf),
            "flat_context": lambda: store.context("Lisbon", actor="bench",
                                                  session="flat", budget=2000),
            "chain_context": lambda: store.context("Lisbon", actor="bench",
                                                   session=leaf, budget=2000),
            "flat_view_query": lambda: view_query(store, "flat"),
        }
        for fn in cases.values():  # warm: plans, key caches
            fn()
        runs: dict[str, list[float]] = {k: [] for k in cases}
        names = list(cases)
        for r in range(args.rounds):
            for k in names if r % 2 == 0 else names[::-1]:
                runs[k].append(timed(cases[k])[0])
        med = {k: statistics.median(v) for k, v in runs.items()}
        ratio = med["chain_view"] / med["flat_view"]
        print(f"read_session flat (view path) {med['flat_view']:8.1f} ms")
        print(f"Log.read_session flat         {med['flat_log']:8.1f} ms")
        print(f"read_session through {args.forks} forks {med['chain_view']:8.1f} ms")
        print(f"ratio chain / flat: {ratio:.3f} (target <= {TARGET}); chain / log read: "
              f"{med['chain_view'] / med['flat_log']:.3f}")
        print(f"context flat {med['flat_context']:.1f} ms, through the forks "
              f"{med['chain_context']:.1f} ms "
              f"(ratio {med['chain_context'] / med['flat_context']:.3f})")
        med["flat_view_query"] /= VIEW_QUERIES
        print(f"the view statement (plain session; a context call runs it only when "
              f"a fork or a retraction may shape the view): "
              f"{med['flat_view_query']:.3f} ms")
        info["loadavg_at_end"] = loadavg()
        out = {"machine": info, "events": args.events, "forks": args.forks,
               "rounds": args.rounds, "flat_events": flat_n, "chain_events": leaf_n,
               "median_ms": {k: round(v, 2) for k, v in med.items()},
               "ratio": round(ratio, 3),
               "ratio_to_log_read": round(med["chain_view"] / med["flat_log"], 3),
               "context_ratio": round(med["chain_context"] / med["flat_context"], 3),
               "target_ratio": TARGET,
               "runs_ms": {k: [round(x, 2) for x in v] for k, v in runs.items()}}
    result_file.write(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a LangGraph thread's length costs ``MemoryCheckpointer.get_tuple``: the latest
checkpoint and a checkpoint by id, in a thread of 10 checkpoints and in one of 2,000. A
script, not a timed test.

    .venv/bin/python benchmarks/langgraph_checkpoints.py [--short 10] [--long 2000]
        [--calls 200] [--out benchmarks/results/langgraph-checkpoints-<stamp>.json]

Each thread is made as a graph makes it, through the checkpointer (sealed events, the
library's default): a checkpoint per step whose ``step`` channel changes every step,
``docs`` every fifth step and ``fixed`` only at the first (so most values live in older
checkpoints), and one pending write per step. Then, alternating the two threads' order
every round, ``--calls`` calls each of:

* ``latest``: ``get_tuple`` without a checkpoint id;
* ``by_id``: ``get_tuple`` of a checkpoint id drawn from the whole thread (a fixed
  random sequence, the same for every run);
* ``fold_latest``: the latest from the whole view folded (how every read went before
  derived ids; ``--fold-calls`` calls, it is slow on the long thread).

Reported: p50 and p95 of each, in ms, and the ratios long / short (target <= 1.5 for
``latest`` and ``by_id``). With no ``MEMORY_DATABASE_URL`` the script starts its own
embedded server in a temporary folder and stops it at the end; with one, it creates a
scratch database on that server and drops it afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import result_file
from latency import summary
from machine_info import loadavg, machine

import memory

TARGET = 1.5


def build(saver: Any, thread: str, n: int) -> tuple[list[str], list[float]]:
    """``n`` checkpoints with one pending write each; their ids, and each put's ms."""
    from langgraph.checkpoint.base import empty_checkpoint

    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    versions: dict[str, Any] = {}
    ids, puts = [], []
    for i in range(n):
        new = {"step": saver.get_next_version(versions.get("step"), None)}
        if i % 5 == 0:
            new["docs"] = saver.get_next_version(versions.get("docs"), None)
        if "fixed" not in versions:
            new["fixed"] = saver.get_next_version(None, None)
        versions.update(new)
        cp = empty_checkpoint()
        cp["channel_values"] = {"step": i, "docs": [f"document {i // 5} line {k}"
                                                    for k in range(20)],
                                "fixed": {"system": "You are a helpful assistant." * 4}}
        cp["channel_versions"] = dict(versions)
        start = time.perf_counter()
        config = saver.put(config, cp, {"source": "loop", "step": i}, new)
        puts.append((time.perf_counter() - start) * 1000)
        saver.put_writes(config, [("step", i + 1)], task_id=f"task-{i}")
        ids.append(cp["id"])
    return ids, puts


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    out = fn()
    elapsed = (time.perf_counter() - start) * 1000
    assert out is not None
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", type=int, default=10)
    ap.add_argument("--long", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--fold-calls", type=int, default=10)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    with (harness.server(os.environ.get("MEMORY_DATABASE_URL")) as srv,
          harness.scratch_database(srv.url, f"memory_bench_lg_{os.getpid()}") as url):
        return measure(args, url)


def measure(args: argparse.Namespace, url: str) -> int:
    from memory.integrations.langgraph import MemoryCheckpointer

    info = machine()
    print(f"# langgraph checkpoints benchmark {info['date']} commit {info['commit']} "
          f"nproc={info['nproc']} {info['cpu']}")
    with memory.Store.open(url) as store:
        saver = MemoryCheckpointer(store, actor="bench")
        sizes = {"short": args.short, "long": args.long}
        ids: dict[str, list[str]] = {}
        put_ms: dict[str, list[float]] = {}
        for name, n in sizes.items():
            t0 = time.perf_counter()
            ids[name], put_ms[name] = build(saver, name, n)
            info[f"build_{name}_s"] = round(time.perf_counter() - t0, 1)
            events = len(store.log.read_session(store.tenant, f"langgraph:{name}"))
            print(f"# {name}: {n} checkpoints, {events} events, built in "
                  f"{info[f'build_{name}_s']} s (put p50 {summary(put_ms[name])['p50']} ms)")
        picks = random.Random(7)
        order = {name: [picks.choice(ids[name]) for _ in range(args.calls)] for name in sizes}

        def latest(name: str) -> Callable[[], Any]:
            return lambda: saver.get_tuple({"configurable": {"thread_id": name}})

        def by_id(name: str, k: int) -> Callable[[], Any]:
            return lambda: saver.get_tuple({"configurable": {
                "thread_id": name, "checkpoint_id": order[name][k]}})

        def fold(name: str) -> Callable[[], Any]:
            return lambda: saver._folded_tuple(name, "", None)  # the whole view folded

        for name in sizes:  # warm: plans, key caches
            latest(name)()
            by_id(name, 0)()
            fold(name)()
        runs: dict[str, list[float]] = {f"{case}_{name}": [] for case in
                                        ("latest", "by_id", "fold_latest") for name in sizes}
        names = list(sizes)
        for r in range(args.calls):
            for name in names if r % 2 == 0 else names[::-1]:
                runs[f"latest_{name}"].append(timed(latest(name)))
                runs[f"by_id_{name}"].append(timed(by_id(name, r)))
                if r < args.fold_calls:
                    runs[f"fold_latest_{name}"].append(timed(fold(name)))
        stats = {k: summary(v) for k, v in runs.items()}
        ratios = {f"{case}_{q}": round(stats[f"{case}_long"][q] / stats[f"{case}_short"][q], 3)
                  for case in ("latest", "by_id", "fold_latest") for q in ("p50", "p95")}
        for case in ("latest", "by_id", "fold_latest"):
            s, lg = stats[f"{case}_short"], stats[f"{case}_long"]
            print(f"{case:12s} short p50 {s['p50']:8.3f} p95 {s['p95']:8.3f} ms | long p50 "
                  f"{lg['p50']:8.3f} p95 {lg['p95']:8.3f} ms | long/short p50 "
                  f"{ratios[f'{case}_p50']:.3f} p95 {ratios[f'{case}_p95']:.3f}")
        met = all(ratios[f"{c}_{q}"] <= TARGET for c in ("latest", "by_id")
                  for q in ("p50", "p95"))
        print(f"target long/short <= {TARGET} for latest and by_id: "
              f"{'met' if met else 'NOT met'}")
        info["loadavg_at_end"] = loadavg()
        out = {"machine": info, "checkpoints": sizes, "calls": args.calls,
               "fold_calls": args.fold_calls,
               "events": {name: 2 * n for name, n in sizes.items()},
               "ms": stats, "ratio_long_short": ratios, "target_ratio": TARGET,
               "target_met": met,
               "put_ms": {name: summary(v) for name, v in put_ms.items()},
               "runs_ms": {k: [round(x, 3) for x in v] for k, v in runs.items()}}
    result_file.write(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

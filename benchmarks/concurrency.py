"""Concurrent ``context()`` calls: the async face (memory/aio) against threads on the sync face.

    python benchmarks/concurrency.py --out results/concurrency-<stamp>.json [--calls 32]

One run, on a fresh database of the embedded server (or ``MEMORY_DATABASE_URL``'s server):

1. Appends a real conversation history for 4 actors (6 sessions of 10 turns each) and
   projects it with the real model (all-MiniLM-L6-v2, offline).
2. Warms both faces up (one call per actor: the model, the scope cache).
3. **Threads**: 16 threads, each making ``--calls`` ``Store.context()`` calls (budget 1,000
   tokens), the same queries in the same order for every run.
4. **Async**: 16 tasks on one event loop, each making the same ``--calls`` calls through
   ``AsyncStore.context()`` (which runs the sync pipeline on the store's context
   threads, one per core unless ``--workers`` says otherwise), while a ticker task sleeps
   5 ms at a time and records how late it wakes (the loop's lag): the loop stays free for
   other work while contexts are built.

Reports async throughput / threads' (target >= 0.9), the lag's p50/p99/max (target p99 <
10 ms), the ticker's lag with nothing else running (the machine's own noise), whether
both faces gave the same contexts for the same calls, and the machine, date, commit and
load average. The loop's lag while threads hold the CPU is mostly the GIL: a thread
running Python keeps it up to ``sys.getswitchinterval()`` (5 ms) before the loop's thread
may take it, so ``--switch-interval 0.001`` shows what a shorter interval does (the library
never changes it: it is the whole process's setting). The largest lags are the garbage
collector's full passes over every object the process holds (tens of ms, every thread
stopped); ``--gc-freeze`` shows the application's remedy, ``gc.freeze()`` after start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import harness
import latency
from machine_info import machine

import memory
from memory import message
from memory.aio import AsyncStore
from memory.aio.store import default_workers
from memory.embedding import default_embedder

WORKERS = 16
BUDGET = 1_000
TICK = 0.005
ACTORS = ["ana", "ben", "cleo", "dev"]
TOPICS = ["a trip to Kyoto and tofu restaurants", "our border collie Biscuit and his training",
          "my sister Zoë who moved to Montréal", "the piano recital in June",
          "a marathon plan with long runs on Sundays", "the apartment rent and the landlord"]
QUERIES = ["What's my dog called?", "Where does my sister live?", "When is the recital?",
           "How far is my long run?", "What food did I want in Kyoto?",
           "Who is the landlord?", "What did we say about training?", "Any travel plans?"]


def build(store: memory.Store) -> None:
    for actor in ACTORS:
        for s, topic in enumerate(TOPICS):
            store.append(f"{actor}-s{s}", [
                message("user" if t % 2 == 0 else "assistant",
                        f"Turn {t} about {topic}: detail number {t * 7 + s} for {actor}.")
                for t in range(10)], actor=actor)


def calls(n: int) -> list[list[tuple[str, str, str]]]:
    """Per worker, its calls: (query, actor, session)."""
    return [[(QUERIES[(w + i) % len(QUERIES)], ACTORS[(w + i) % len(ACTORS)],
              f"{ACTORS[(w + i) % len(ACTORS)]}-s{(w * 3 + i) % len(TOPICS)}")
             for i in range(n)] for w in range(WORKERS)]


def run_threads(store: memory.Store, plan: list[list[tuple[str, str, str]]], embedder: Any
                ) -> tuple[float, list[list[Any]]]:
    def worker(mine: list[tuple[str, str, str]]) -> list[Any]:
        return [store.context(q, actor=a, session=s, budget=BUDGET, embedder=embedder)
                .messages() for q, a, s in mine]
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        out = list(pool.map(worker, plan))
    return time.perf_counter() - t0, out


async def ticker(lags: list[float], done: asyncio.Event) -> None:
    """Sleeps TICK at a time; records how late (ms) the loop wakes it."""
    loop = asyncio.get_running_loop()
    while not done.is_set():
        due = loop.time() + TICK
        await asyncio.sleep(TICK)
        lags.append(max(0.0, loop.time() - due) * 1000)


async def idle_lag(seconds: float = 3.0) -> list[float]:
    """The ticker alone, nothing else running in the process: the machine's own noise."""
    lags: list[float] = []
    done = asyncio.Event()
    tick = asyncio.create_task(ticker(lags, done))
    await asyncio.sleep(seconds)
    done.set()
    await tick
    return lags


async def run_async(face: AsyncStore, plan: list[list[tuple[str, str, str]]], embedder: Any
                    ) -> tuple[float, list[list[Any]], list[float]]:
    lags: list[float] = []
    done = asyncio.Event()

    async def worker(mine: list[tuple[str, str, str]]) -> list[Any]:
        return [(await face.context(q, actor=a, session=s, budget=BUDGET, embedder=embedder))
                .messages() for q, a, s in mine]

    tick = asyncio.create_task(ticker(lags, done))
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    out = await asyncio.gather(*[worker(mine) for mine in plan])
    elapsed = time.perf_counter() - t0
    done.set()
    await tick
    return elapsed, list(out), lags


def lag_figures(lags: list[float]) -> dict[str, float]:
    """The ticker's lateness (ms): how many ticks, p50, p99 and the largest."""
    return {"ticks": len(lags), **latency.percentiles(lags, 50, 99),
            "max": round(max(lags), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=32, help="context() calls per worker")
    ap.add_argument("--workers", type=int, default=None,
                    help="the AsyncStore's context threads (default: one per core)")
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="sys.setswitchinterval for the whole run (0: Python's 5 ms)")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() before the async part: the objects alive then (the "
                         "imports, the store) leave the full collections, whose pauses "
                         "stop every thread")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)

    with (harness.server(os.environ.get("MEMORY_DATABASE_URL")) as srv,
          harness.scratch_database(srv.url, f"memory_bench_concurrency_{os.getpid()}")
          as url):
        return measure(args, url)


def measure(args: argparse.Namespace, url: str) -> int:
    """Build the history in the scratch database ``url``, then time both faces."""
    info: dict[str, Any] = {
        **machine(), "workers": WORKERS, "calls_per_worker": args.calls, "budget": BUDGET,
        "switch_interval_s": sys.getswitchinterval(), "gc_freeze": args.gc_freeze}
    embedder = default_embedder()
    with memory.Store.open(url) as store:
        build(store)
        store.project(embedder=embedder)
        for actor in ACTORS:  # warm-up: the model, each actor's scope in the cache
            store.context(QUERIES[0], actor=actor, session=f"{actor}-s0", budget=BUDGET,
                          embedder=embedder)
        plan = calls(args.calls)
        n = WORKERS * args.calls
        threads_s, threads_out = run_threads(store, plan, embedder)
        info["loadavg_after_threads"] = os.getloadavg()

        async def on_loop() -> tuple[float, list[list[Any]], list[float], int]:
            face = AsyncStore(store, owns_store=False, workers=args.workers)
            try:
                return await run_async(face, plan, embedder)
            finally:
                await face.close()
        if args.gc_freeze:
            gc.collect()
            gc.freeze()
        idle = asyncio.run(idle_lag())
        async_s, async_out, lags = asyncio.run(on_loop())
    info["loadavg_at_end"] = os.getloadavg()
    info.update({
        "calls": n, "threads_s": round(threads_s, 3), "async_s": round(async_s, 3),
        "threads_calls_per_s": round(n / threads_s, 2),
        "async_calls_per_s": round(n / async_s, 2),
        "async_over_threads": round(threads_s / async_s, 3),
        "async_workers": args.workers or default_workers(),
        "loop_lag_ms": lag_figures(lags), "idle_loop_lag_ms": lag_figures(idle),
        "same_contexts": threads_out == async_out})
    print(json.dumps(info, indent=2))
    if args.out:
        args.out.write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

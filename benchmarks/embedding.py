"""The embedding backends against each other, in one run on the same texts (issue 18).

    python benchmarks/embedding.py --data locomo-dev.json --out RESULT.json

PyTorch (sentence-transformers) is the baseline; ONNX Runtime fp32 and int8 run the same
all-MiniLM-L6-v2 (memory/embedding/onnx_backend.py). Every measurement interleaves the
backends (each round runs each of them, in a rotating order) so that load from other work on a
shared machine hits all of them alike; ratios to PyTorch are the figures to read, the
absolute numbers carry the load average they were taken under.

1. **Query latency**: ``--questions`` LoCoMo questions embedded one at a time (batch 1,
   the query path of ``Store.context``), p50/p95 per backend.
2. **Projection throughput**: ``--turns`` LoCoMo turns embedded in calls of the
   projection's page size (``memory.projections.DEFAULT_BATCH_SIZE`` texts; each
   backend batches by 64 inside, sorted by length), texts/s per round, median of rounds.
3. **Agreement**: 1 - cosine between each ONNX variant's vectors and PyTorch's, largest and
   mean, for the turns (batched) and the questions (one at a time).
4. **Concurrency**: whole ``Store.context`` calls (budget 2,000, the query embedding
   included) on a store holding ``--conversations`` LoCoMo conversations (ingested through
   the public API, projected with the default backend), with 1, 2, 4 and 8 threads calling
   at once, the same ``--context-calls`` calls split among them; p50/p95 per call and calls/s,
   for the default backend and PyTorch, with the embedding's part of each call
   (``embed_ms`` of ``Context.timings``). Every question is asked once per backend before
   timing, so the process's caches (the scope's vectors, the expansion's word vectors) are
   warm alike for both.

``--thread-settings`` measures instead how the ONNX embedder's threads are best spent, on
the same texts, interleaved: one intra-op thread against two for a query at batch 1, and
for ``--turns`` texts in one call (projection) a pool of one worker per CPU each running
one intra-op thread (the shipped setting) against one worker with two intra-op threads and
one worker with one.

The data is CC BY-NC 4.0: read from where it is, never copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
import result_file
from latency import percentile
from locomo_data import load
from machine_info import commit, cpu_model, loadavg, uncommitted_changes

import memory
from memory.embedding import default_embedder
from memory.projections import DEFAULT_BATCH_SIZE

BACKENDS = ("torch", "onnx", "onnx-int8")
CALLERS = (1, 2, 4, 8)
BUDGET = 2_000


def machine() -> dict[str, Any]:
    import onnxruntime
    import torch

    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "onnxruntime": onnxruntime.__version__,
            "commit": commit(),
            "uncommitted_changes": uncommitted_changes("memory", "benchmarks")}


def rotated(k: int) -> tuple[str, ...]:
    """The backends in the k-th order of a rotation (each goes first as often)."""
    return BACKENDS[k % 3:] + BACKENDS[:k % 3]


def query_latency(models: dict[str, Any], questions: list[str], rounds: int
                  ) -> dict[str, Any]:
    for m in models.values():  # warm-up: first calls allocate
        for q in questions[:10]:
            m.embed([q])
    ms: dict[str, list[float]] = {b: [] for b in BACKENDS}
    start = loadavg()
    for r in range(rounds):
        for i, q in enumerate(questions):
            for b in rotated(r * len(questions) + i):
                t = time.perf_counter()
                models[b].embed([q])
                ms[b].append((time.perf_counter() - t) * 1000)
    out: dict[str, Any] = {"calls_per_backend": len(ms["torch"]), "loadavg_start": start,
                           "loadavg_end": loadavg()}
    for b in BACKENDS:
        out[b] = {"p50_ms": percentile(ms[b], 50), "p95_ms": percentile(ms[b], 95),
                  "mean_ms": round(statistics.fmean(ms[b]), 3)}
    for b in BACKENDS[1:]:
        out[b]["p50_vs_torch"] = round(out[b]["p50_ms"] / out["torch"]["p50_ms"], 3)
        out[b]["p95_vs_torch"] = round(out[b]["p95_ms"] / out["torch"]["p95_ms"], 3)
    return out


def projection_throughput(models: dict[str, Any], turns: list[str], rounds: int
                          ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    pages = [turns[i:i + DEFAULT_BATCH_SIZE] for i in range(0, len(turns), DEFAULT_BATCH_SIZE)]
    rates: dict[str, list[float]] = {b: [] for b in BACKENDS}
    vectors: dict[str, np.ndarray] = {}
    start = loadavg()
    for r in range(rounds):
        for b in rotated(r):
            t = time.perf_counter()
            out = [models[b].embed(p) for p in pages]
            rates[b].append(len(turns) / (time.perf_counter() - t))
            vectors[b] = np.vstack(out)
    res: dict[str, Any] = {"texts": len(turns), "page": DEFAULT_BATCH_SIZE, "rounds": rounds,
                           "loadavg_start": start, "loadavg_end": loadavg()}
    for b in BACKENDS:
        res[b] = {"texts_per_s": round(statistics.median(rates[b]), 1),
                  "rounds_texts_per_s": [round(x, 1) for x in rates[b]]}
    for b in BACKENDS[1:]:
        res[b]["vs_torch"] = round(res[b]["texts_per_s"] / res["torch"]["texts_per_s"], 3)
    return res, vectors


def agreement(models: dict[str, Any], batched: dict[str, np.ndarray], questions: list[str]
              ) -> dict[str, Any]:
    singles = {b: np.vstack([models[b].embed([q]) for q in questions]) for b in BACKENDS}
    out: dict[str, Any] = {}
    for b in BACKENDS[1:]:
        gap_t = 1.0 - (batched[b] * batched["torch"]).sum(axis=1)
        gap_q = 1.0 - (singles[b] * singles["torch"]).sum(axis=1)
        out[b] = {"turns_batched_max": float(gap_t.max()),
                  "turns_batched_mean": float(gap_t.mean()),
                  "questions_single_max": float(gap_q.max()),
                  "questions_single_mean": float(gap_q.mean())}
    return out


def concurrency(args: argparse.Namespace, models: dict[str, Any]) -> dict[str, Any]:
    import locomo  # the benchmark beside this one: its ingest

    convs = load(args.data)[: args.conversations]
    default = os.environ.get("MEMORY_EMBEDDER", "onnx")
    compared = [default] if default == "torch" else [default, "torch"]
    with (harness.server(args.url) as srv,
          harness.scratch_database(srv.url, f"memory_bench_embedding_{os.getpid()}") as url,
          memory.Store.open(url) as store):
        locomo.ingest(store, convs)
        t = time.perf_counter()
        store.project(embedder=models[default])
        project_s = time.perf_counter() - t
        asks = [(c.sample_id, q.question) for c in convs for q in c.questions]

        def call(model: Any, actor: str, question: str) -> tuple[float, float]:
            t0 = time.perf_counter()
            ctx = store.context(question, actor=actor, session="bench/question",
                                budget=BUDGET, embedder=model)
            return (time.perf_counter() - t0) * 1000, ctx.timings.get("embed_ms", 0.0)

        for b in compared:  # warm: every question once per backend
            for actor, q in asks[: args.context_calls]:
                call(models[b], actor, q)
        table: dict[str, Any] = {b: {} for b in compared}
        for n in CALLERS:
            for b in (compared if n % 2 else compared[::-1]):
                table[b][str(n)] = run_callers(call, models[b], asks, n, args.context_calls)
        for n in CALLERS:
            for b in compared:
                row = table[b][str(n)]
                row["throughput_vs_1"] = round(
                    row["calls_per_s"] / table[b]["1"]["calls_per_s"], 3)
        return {"conversations": len(convs), "events": store.log.head(),
                "projection_seconds": round(project_s, 2), "budget": BUDGET,
                "calls_per_level": args.context_calls, "backends": table}


def run_callers(call: Any, model: Any, asks: list[tuple[str, str]], callers: int,
                total: int) -> dict[str, Any]:
    per = [asks[i:total:callers] for i in range(callers)]
    times: list[tuple[float, float]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(callers + 1)

    def work(mine: list[tuple[str, str]]) -> None:
        barrier.wait()
        got = [call(model, a, q) for a, q in mine]
        with lock:
            times.extend(got)

    threads = [threading.Thread(target=work, args=(p,)) for p in per]
    for t in threads:
        t.start()
    start_load = loadavg()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    total = [t for t, _ in times]
    embed = [e for _, e in times]
    return {"callers": callers, "calls": len(times), "p50_ms": percentile(total, 50),
            "p95_ms": percentile(total, 95), "max_ms": round(max(total), 3),
            "embed_p50_ms": percentile(embed, 50), "embed_p95_ms": percentile(embed, 95),
            "calls_per_s": round(len(times) / wall, 2), "loadavg_start": start_load,
            "loadavg_end": loadavg()}


THREAD_SETTINGS = {"1 thread x 2 workers": {"threads": 1, "workers": 2},
                   "2 threads x 1 worker": {"threads": 2, "workers": 1},
                   "1 thread x 1 worker": {"threads": 1, "workers": 1}}


def thread_settings(questions: list[str], turns: list[str], rounds: int, variant: str
                    ) -> dict[str, Any]:
    from memory.embedding import OnnxEmbedder

    names = list(THREAD_SETTINGS)
    models = {k: OnnxEmbedder(variant=variant, **v) for k, v in THREAD_SETTINGS.items()}
    for m in models.values():
        for q in questions[:10]:
            m.embed([q])
    ms: dict[str, list[float]] = {k: [] for k in names}
    rates: dict[str, list[float]] = {k: [] for k in names}
    start = loadavg()
    for r in range(rounds):
        for i, q in enumerate(questions):
            k0 = r * len(questions) + i
            for k in names[k0 % 3:] + names[:k0 % 3]:
                t = time.perf_counter()
                models[k].embed([q])
                ms[k].append((time.perf_counter() - t) * 1000)
        for k in names[r % 3:] + names[:r % 3]:
            t = time.perf_counter()
            models[k].embed(turns)
            rates[k].append(len(turns) / (time.perf_counter() - t))
    return {"variant": variant, "loadavg_start": start, "loadavg_end": loadavg(),
            **{k: {"query_p50_ms": percentile(ms[k], 50), "query_p95_ms": percentile(ms[k], 95),
                   "texts_per_s": round(statistics.median(rates[k]), 1)} for k in names}}


def texts(path: str, n_questions: int, n_turns: int) -> tuple[list[str], list[str]]:
    convs = load(path)
    questions = [q.question for c in convs for q in c.questions][:n_questions]
    turns = [t.content for c in convs for t in c.turns][:n_turns]
    return questions, turns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a LoCoMo JSON file (list of samples)")
    ap.add_argument("--out", required=True, help="where to write the results (JSON)")
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--turns", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conversations", type=int, default=1)
    ap.add_argument("--context-calls", type=int, default=64,
                    help="context calls per level of concurrency and backend")
    ap.add_argument("--url", help="a PostgreSQL server URL (default: an embedded server in a "
                                  "temporary folder); a fresh database is made on it")
    ap.add_argument("--skip-concurrency", action="store_true")
    ap.add_argument("--concurrency-only", action="store_true",
                    help="only the concurrent context calls (parts 1-3 skipped)")
    ap.add_argument("--thread-settings", action="store_true",
                    help="compare the ONNX embedder's thread settings instead")
    args = ap.parse_args()

    result: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                              "machine": machine(), "loadavg_start": loadavg()}
    questions, turns = texts(args.data, args.questions, args.turns)
    if args.thread_settings:
        result["thread_settings"] = [thread_settings(questions, turns, args.rounds, v)
                                     for v in ("fp32", "int8")]
        print(json.dumps(result["thread_settings"], indent=1))
        result_file.write(result, args.out)
        return
    models: dict[str, Any] = {}
    load_s: dict[str, float] = {}
    for b in BACKENDS:
        t = time.perf_counter()
        models[b] = default_embedder(b)
        load_s[b] = round(time.perf_counter() - t, 2)
    result["embedders"] = {b: repr(m) for b, m in models.items()}
    result["load_seconds"] = load_s  # includes a one-off export when nothing was cached
    if not args.concurrency_only:
        result["query"] = query_latency(models, questions, args.rounds)
        print("query p50 ms:", {b: result["query"][b]["p50_ms"] for b in BACKENDS},
              flush=True)
        result["projection"], batched = projection_throughput(models, turns, args.rounds)
        print("texts/s:", {b: result["projection"][b]["texts_per_s"] for b in BACKENDS},
              flush=True)
        result["cosine_gap_vs_torch"] = agreement(models, batched, questions)
        print("1 - cos:", result["cosine_gap_vs_torch"], flush=True)
    if not args.skip_concurrency:
        result["concurrency"] = concurrency(args, models)
        for b, rows in result["concurrency"]["backends"].items():
            print(b, {n: (r["p50_ms"], r["p95_ms"], r["calls_per_s"]) for n, r in rows.items()},
                  flush=True)
    result["loadavg_end"] = loadavg()
    result_file.write(result, args.out)


if __name__ == "__main__":
    main()

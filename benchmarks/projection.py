"""Projection throughput and memory, measured in one run.

1. Raw ``model.encode`` throughput on the texts the chunks projection embeds (the limit
   on a CPU): the chunk texts, the sentences of chunks of several sentences, and the
   distinct words of the vocabulary (memory/projections/words.py), in one call; and the
   chunks projection's end-to-end throughput on the same events: read the log, chunk,
   embed, write the rows (with the database-generated tsvector) and the vocabulary, move
   the checkpoint, and, as a rebuild does, build the HNSW index and switch. Rates are in
   chunks per second on both sides; ``chunk_only_encode_per_s`` is the raw encode of the
   chunk texts alone (so ``projection_per_s / chunk_only_encode_per_s`` is what the
   sentence vectors and the vocabulary cost). Runs
   alternate (encode, project, encode, project...) so that load from other work on the
   machine hits both; medians are kept.
2. Peak RSS of a rebuild over 20k and 100k events, each in its own subprocess, to show the
   runner streams (memory does not grow with the log). This part uses a cheap fake
   embedder (feature hashing, 384 dims) so that 100k events take minutes, not hours; the
   rows written (and so the database work) have the real shape.

    python benchmarks/projection.py --out results.json

Uses the embedded server in a temporary MEMORY_HOME unless ``--url`` (a server URL whose
user may CREATE DATABASE) is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import harness  # noqa: E402
import result_file  # noqa: E402
from machine_info import commit, cpu_model, loadavg, ram_gib  # noqa: E402

import memory  # noqa: E402
from memory.projections import DEFAULT_BATCH_SIZE  # noqa: E402

SUBJECTS = ["I", "My sister", "Caroline", "Melanie", "We", "My manager", "The kids", "Our team"]
VERBS = ["went to", "talked about", "started", "finished", "planned", "remembered", "visited",
         "painted", "signed up for", "cancelled"]
OBJECTS = ["a support group", "the pottery class", "a trip to Lisbon", "the quarterly report",
           "a charity run", "the new apartment", "a jazz concert", "the camping weekend",
           "an adoption agency", "the book club", "a job interview", "the garden"]
TAILS = ["last week", "yesterday", "on Saturday", "after work", "with friends",
         "because it mattered a lot", "and it went better than expected",
         "even though it rained all day", "for the first time in years", ""]


def make_texts(n: int, seed: int = 7) -> list[str]:
    """Conversation-like messages of 1 to 4 sentences (about 40 to 300 characters)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sentences = []
        for _ in range(rng.randint(1, 4)):
            s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
            tail = rng.choice(TAILS)
            sentences.append((s + (" " + tail if tail else "")) + rng.choice([".", "!", "?"]))
        out.append(" ".join(sentences))
    return out


def machine() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "cpu": cpu_model(), "ram_gb": ram_gib(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "commit": commit()}


def fill(url: str, texts: list[str], per_session: int = 50) -> None:
    """Append ``texts`` as message events, ``per_session`` to a session."""
    with memory.Store.open(url) as store:
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        for s in range(0, len(texts), per_session):
            batch = [memory.message("user" if i % 2 else "assistant", text,
                                    occurred_at=t0 + timedelta(seconds=s + i))
                     for i, text in enumerate(texts[s:s + per_session])]
            store.append(f"session-{s // per_session}", batch,
                         actor=f"actor-{(s // per_session) % 200}")


# -- 1. throughput ---------------------------------------------------------------------------

def chunk_texts(texts: list[str]) -> list[str]:
    from memory.projections import Chunker

    chunker = Chunker()
    return [c for t in texts for c in chunker.split(t)]


def embedded_texts(url: str, chunks: list[str]) -> list[str]:
    """What the chunks projection embeds for ``chunks``: each chunk, the sentences of
    those of several, and each distinct word that Postgres stems to one lexeme (the
    projection embeds a word once per batch in which it is new to an actor; with 200
    actors and a small synthetic vocabulary that is close to once)."""
    from memory.projections.chunking import sentence_pieces, words_of
    from memory.projections.words import lexemes_of

    pieces = [p for c in chunks for p in sentence_pieces(c)]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        words = sorted(lexemes_of(conn, {w for c in chunks for w in words_of(c)}))
    engine.dispose()
    return chunks + pieces + words


def run_encode(embedder: Any, texts: list[str], per: int | None = None) -> float:
    """Items per second: ``per`` items (default: one per text) over the time the embedder
    itself takes for ``texts`` (the baseline: the same backend, batch size and threads the
    projection uses, without the projection around it)."""
    start = time.perf_counter()
    embedder.embed(texts)
    return (per or len(texts)) / (time.perf_counter() - start)


class TimedEmbedder:
    """Wraps the embedder to split the projection's time into embedding and the rest."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.seconds = 0.0

    def embed(self, texts: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.embed(texts)
        finally:
            self.seconds += time.perf_counter() - start


def run_projection(url: str, embedder: Any, batch_size: int) -> dict[str, Any]:
    from memory.projections import ChunksProjection, Runner

    timed = TimedEmbedder(embedder)
    # The runner works as the owner (store.maintenance_engine) whatever the store's role,
    # so the store opens as the owner too: no tenant role is made in each copy.
    with memory.Store.open(url, migrate=False, tenant_roles=False) as store:
        runner = Runner(store.maintenance_engine, ChunksProjection(timed), log=store.log,
                        batch_size=batch_size, progress=False)
        start = time.perf_counter()
        result = runner.rebuild()
        seconds = time.perf_counter() - start
    return {"chunks": result.rows, "events": result.events, "seconds": round(seconds, 2),
            "embed_seconds": round(timed.seconds, 2),
            "other_seconds": round(seconds - timed.seconds, 2),
            "per_s": result.rows / seconds}


def throughput(server_url: str, n: int, repeats: int, batch_size: int) -> dict[str, Any]:
    from memory.embedding import default_embedder

    texts = make_texts(n)
    chunks = chunk_texts(texts)
    template = "bench_projection_events"
    template_url = harness.create_database(server_url, template)
    fill(template_url, texts)
    everything = embedded_texts(template_url, chunks)
    embedder = default_embedder()
    run_encode(embedder, chunks[:128])  # warm up
    encodes, chunk_only, projections = [], [], []
    for r in range(repeats):
        encodes.append(run_encode(embedder, everything, len(chunks)))
        chunk_only.append(run_encode(embedder, chunks))
        name = f"bench_projection_run{r}"
        url = harness.create_database(server_url, name, template=template)
        projections.append(run_projection(url, embedder, batch_size))
        harness.drop_database(server_url, name)
        print(f"  run {r + 1}: encode {encodes[-1]:.1f}/s (chunks alone {chunk_only[-1]:.1f}/s),"
              f" projection {projections[-1]['per_s']:.1f}/s", file=sys.stderr)
    harness.drop_database(server_url, template)
    encode = statistics.median(encodes)
    project = statistics.median(p["per_s"] for p in projections)
    return {"texts": n, "chunks": len(chunks), "embedded_texts": len(everything),
            "embedder": type(embedder).__name__,
            "encode_batch_size": getattr(embedder, "batch_size", None),
            "projection_batch_size": batch_size,
            "encode_per_s": round(encode, 1), "projection_per_s": round(project, 1),
            "ratio": round(project / encode, 3),
            "chunk_only_encode_per_s": round(statistics.median(chunk_only), 1),
            "chunk_only_runs": [round(x, 1) for x in chunk_only],
            "encode_runs": [round(x, 1) for x in encodes],
            "projection_runs": [{**p, "per_s": round(p["per_s"], 1)} for p in projections]}


# -- 2. peak memory of a rebuild (one subprocess per size) ------------------------------------

def hwm_mb() -> float:
    """Peak resident memory of this process image (VmHWM). Not ru_maxrss: on Linux that
    carries the parent's peak over fork and exec, so a child would report ours."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rss_child(url: str, batch_size: int) -> None:
    """In a fresh process: rebuild the chunks projection, report peak RSS (JSON line)."""
    from memory.embedding import HashEmbedder
    from memory.projections import ChunksProjection, Runner

    last_batch = [0.0]

    def on_batch(_n: int, _position: int) -> None:
        last_batch[0] = time.perf_counter()

    with memory.Store.open(url, migrate=False, tenant_roles=False) as store:
        runner = Runner(store.maintenance_engine,
                        ChunksProjection(HashEmbedder(384, name="hash-384")),
                        log=store.log, batch_size=batch_size, progress=False,
                        on_batch=on_batch)
        before = hwm_mb()
        start = time.perf_counter()
        result = runner.rebuild()
        seconds = time.perf_counter() - start
    peak = hwm_mb()
    print(json.dumps({"events": result.events, "chunks": result.rows,
                      "seconds": round(seconds, 1),
                      "batches_seconds": round(last_batch[0] - start, 1),
                      "index_switch_cleanup_seconds": round(start + seconds - last_batch[0], 1),
                      "events_per_s": round(result.events / seconds, 1),
                      "rss_before_rebuild_mb": before, "peak_rss_mb": peak}))


def peak_rss(server_url: str, sizes: list[int], batch_size: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in sizes:
        name = f"bench_projection_rss_{size}"
        url = harness.create_database(server_url, name)
        start = time.perf_counter()
        fill(url, make_texts(size, seed=size))
        print(f"  {size} events appended in {time.perf_counter() - start:.0f}s",
              file=sys.stderr)
        proc = subprocess.run([sys.executable, __file__, "--rss-child", url,
                               "--batch-size", str(batch_size)],
                              capture_output=True, text=True, check=True)
        out[str(size)] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {size}: {out[str(size)]}", file=sys.stderr)
        harness.drop_database(server_url, name)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="PostgreSQL server URL (default: a temporary embedded one)")
    p.add_argument("--texts", type=int, default=2000, help="texts for the throughput part")
    p.add_argument("--repeats", type=int, default=3, help="alternating runs of each")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="events per projection batch (default: the library's)")
    p.add_argument("--sizes", default="20000,100000", help="log sizes for the RSS part")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--out", help="write the JSON here too")
    p.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.batch_size)
        return

    with harness.server(args.url, prefix="memory-bench-projection-", isolate_home=True) as srv:
        run(args, srv.url)


def run(args: argparse.Namespace, server_url: str) -> None:
    result: dict[str, Any] = {
        "benchmark": "projection", "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(), "loadavg_start": loadavg()}
    if not args.skip_throughput:
        print("throughput (encode vs chunks projection, same texts)...", file=sys.stderr)
        result.update(throughput(server_url, args.texts, args.repeats, args.batch_size))
        result["loadavg_after_throughput"] = loadavg()
    if not args.skip_rss:
        sizes = [int(s) for s in args.sizes.split(",")]
        print(f"peak RSS of a rebuild over {sizes} events (fake embedder)...", file=sys.stderr)
        rss = peak_rss(server_url, sizes, args.batch_size)
        result["rss"] = rss
        result["rss_embedder"] = ("hash-384: a cheap fake embedder (feature hashing), not the "
                                  "model; rows and database work have the real shape")
        if len(sizes) >= 2:
            small, large = rss[str(sizes[0])], rss[str(sizes[-1])]
            result["rss_ratio"] = round(large["peak_rss_mb"] / small["peak_rss_mb"], 3)
        result["loadavg_end"] = loadavg()
    result_file.write(result, args.out, echo=True)


if __name__ == "__main__":
    main()

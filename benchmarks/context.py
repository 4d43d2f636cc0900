"""Latency of ``Store.context()`` for actors with 1k and 20k chunks in a 200k-chunk database.

    python benchmarks/context.py --out context.json [--url URL] [--queries 200]

What it does, in one run:

1. Creates a fresh database ``bench_context`` on the server (the embedded one unless
   ``--url``/``MEMORY_DATABASE_URL``) and migrates it.
2. Generates **synthetic** chunk rows directly with COPY (binary), not through the
   projection (that would take hours of embedding on this CPU): 200k chunks across 100+
   actors, including actors with 1k, 5k, 10k and 20k chunks. Texts are random sentences
   drawn from a Zipf-weighted vocabulary (so full-text search has realistic posting
   lists), cut into sentences of 5 to 14 words; vectors are **random unit vectors** (384
   dims, normal then normalised), for the chunks and for the sentences of each chunk of
   several (``pieces``, as the chunks projection writes them). Each actor's vocabulary
   (``memory_words``: its words, their lexemes from Postgres, random unit vectors) is
   written as the projection would, so the ranker's query expansion has its real work.
   Random vectors have no cluster structure, which makes HNSW's job harder than on real
   embeddings; exact search does not care. A live ``chunks`` generation is registered,
   then the generation's HNSW index is built exactly as the projection builds it.
3. Appends a real 12-turn session per measured actor through the public API.
4. For each measured actor, runs ``--queries`` calls of ``store.context`` (budget 2,000
   tokens) with real query texts embedded by the real model. The query embedding is
   timed apart (``embed``); ``search`` is the candidate search (scope count, vector,
   full text, ranking input); ``assemble`` is everything else (log tail, summary, packing,
   rendering, final count). The vector search is forced down each path (exact and HNSW
   with iterative scans) to measure where the threshold belongs; the default path is
   measured too. An exact brute-force numpy search over the same actor's vectors (matrix
   product + argpartition, vectors already in memory) runs in the same process on the same
   queries, as a baseline, and gives HNSW's recall@50 against the exact top 50.
   The first call of each path is timed apart (``first_call_excl_embed_ms``): it may read
   the actor's scope into the store's scope cache (memory/retrieval/scopecache.py);
   the percentiles are over the calls after it, which check the cache and reuse it.
   ``search`` includes packing the memories (their token counts).

``--sizes a1k,a20k`` and ``--paths default`` measure a subset (quicker while iterating).
The output JSON has p50/p95 per size and part, in milliseconds, the machine, and the load
average before and after each size (the machine may be shared: say so with the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import harness
import result_file
from latency import summary
from machine_info import commit, cpu_model, loadavg, ram_gib

import memory
from memory import message
from memory.embedding import default_embedder
from memory.pg import engine as db
from memory.pg import to_array
from memory.retrieval import RetrievalSettings, search

DB_NAME = "bench_context"
DIM = 384
TOTAL_CHUNKS = 200_000
MEASURED = {"a1k": 1_000, "a5k": 5_000, "a10k": 10_000, "a20k": 20_000}
FILLER_ACTORS = 110
CHUNKS_PER_SESSION = 40
VOCAB = 3_000
WORDS_PER_CHUNK = (8, 40)
WORDS_PER_SENTENCE = (5, 15)
BUDGET = 2_000
GENERATION = 1
SEED = 7
CORE_WORDS = (
    "dog", "cat", "trip", "kyoto", "food", "tofu", "sister", "montreal", "garden", "piano",
    "birthday", "cake", "doctor", "appointment", "project", "deadline", "coffee", "hiking",
    "lake", "mountain", "book", "novel", "movie", "guitar", "concert", "job", "interview",
    "apartment", "rent", "bike", "marathon")
"""A readable core of the vocabulary, so queries hit (and miss) like prose."""
CORE_RANK = 100
"""Zipf rank of the first core word: each then appears in roughly 3% of chunks (a content
word, not a stop word; Postgres' English configuration drops the stop words anyway)."""
POSITION_OFFSET = 1_000_000  # real events are appended after the synthetic positions


def machine(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        pg = conn.exec_driver_sql("SHOW server_version").scalar()
        vec = conn.exec_driver_sql(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'").scalar()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "ram_gib": ram_gib(),
            "python": platform.python_version(), "postgres": pg, "pgvector": vec,
            "commit": commit(), "loadavg_start": loadavg()}


def actor_sizes() -> dict[str, int]:
    sizes = dict(MEASURED)
    rest = TOTAL_CHUNKS - sum(sizes.values())
    for i in range(FILLER_ACTORS):
        sizes[f"filler{i:03d}"] = rest // FILLER_ACTORS + (1 if i < rest % FILLER_ACTORS else 0)
    return sizes


def word_name(i: int) -> str:
    """A made-up word of letters only (the vocabulary's words are letters: WORD_RE)."""
    out = ""
    i += 26 * 27  # at least three letters
    while i:
        i, r = divmod(i, 26)
        out = "abcdefghijklmnopqrstuvwxyz"[r] + out
    return "w" + out


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def sentences(rng: np.random.Generator, picked: list[str]) -> str:
    """The words as sentences of WORDS_PER_SENTENCE words."""
    out, i = [], 0
    while i < len(picked):
        k = int(rng.integers(*WORDS_PER_SENTENCE))
        out.append(" ".join(picked[i:i + k]) + ".")
        i += k
    return " ".join(out)


def generate(url: str, rng: np.random.Generator) -> dict[str, Any]:
    """COPY the synthetic chunks and vocabularies, register the generation, build the
    HNSW index."""
    from pgvector.psycopg import register_vector

    from memory.projections.chunking import sentence_pieces, words_of

    words = [word_name(i) for i in range(VOCAB)]
    # a readable core of real words, so queries hit (and miss) like prose
    core = list(CORE_WORDS)
    words[CORE_RANK: CORE_RANK + len(core)] = core
    weights = 1.0 / np.arange(1, VOCAB + 1)
    weights /= weights.sum()
    sizes = actor_sizes()
    engine = sa.create_engine(url)
    t0 = time.perf_counter()
    rows = pieces = 0
    first_seen: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        register_vector(raw)
        with raw.cursor() as cur, cur.copy(
                "COPY memory_chunks (generation, tenant, actor_id, session_id, event_position,"
                " event_id, chunk_index, role, author, occurred_at, text, embedding, pieces)"
                " FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text", "text", "text", "int8", "uuid", "int4", "text",
                            "text", "timestamptz", "text", "vector", "vector[]"])
            import uuid
            from datetime import UTC, datetime, timedelta

            base = datetime(2024, 1, 1, tzinfo=UTC)
            position = 0
            for actor, n in sizes.items():
                vecs = unit(rng, n)
                lengths = rng.integers(*WORDS_PER_CHUNK, size=n)
                picks = rng.choice(VOCAB, size=int(lengths.sum()), p=weights)
                seen = first_seen.setdefault(actor, {})
                start = 0
                for i in range(n):
                    position += 1
                    text = sentences(rng, [words[j] for j in picks[start:start + lengths[i]]])
                    start += lengths[i]
                    k = len(sentence_pieces(text))
                    for w in words_of(text):
                        seen.setdefault(w, position)
                    copy.write_row((
                        GENERATION, "default", actor, f"{actor}-s{i // CHUNKS_PER_SESSION}",
                        position, uuid.UUID(int=position), 0,
                        "user" if i % 2 == 0 else "assistant", None,
                        base + timedelta(minutes=position), text, vecs[i],
                        list(unit(rng, k)) if k else None))
                    rows += 1
                    pieces += k
        raw.commit()  # the COPY ran on the driver connection, outside SQLAlchemy's view
        vocabulary = write_vocabulary(conn, first_seen, rng)
    copy_s = time.perf_counter() - t0
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO memory_projections (name, generation, status, config, position)"
            " VALUES ('chunks', %s, 'live', %s, %s)",
            (GENERATION, json.dumps({"model": "all-MiniLM-L6-v2", "dim": DIM,
                                     "synthetic": True}), POSITION_OFFSET * 10))
    t1 = time.perf_counter()
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("SET maintenance_work_mem = '1GB'")
        conn.exec_driver_sql(
            f"CREATE INDEX memory_chunks_hnsw_g{GENERATION} ON memory_chunks USING hnsw "
            f"((embedding::vector({DIM})) vector_cosine_ops) WHERE generation = {GENERATION}")
        index_s = time.perf_counter() - t1
        conn.exec_driver_sql("VACUUM ANALYZE memory_chunks")
    engine.dispose()
    return {"chunks": rows, "pieces": pieces, "vocabulary_rows": vocabulary,
            "actors": len(sizes), "copy_s": round(copy_s, 1),
            "copy_rows_per_s": round(rows / copy_s), "hnsw_build_s": round(index_s, 1)}


def write_vocabulary(conn: sa.Connection, first_seen: dict[str, dict[str, int]],
                     rng: np.random.Generator) -> int:
    """Each actor's words as the chunks projection writes them (memory/projections/words.py:
    one lexeme each, the first position), with random unit vectors."""
    from memory.projections.words import lexemes_of

    raw = conn.connection.driver_connection
    lexemes = lexemes_of(conn, {w for seen in first_seen.values() for w in seen})
    n = 0
    with raw.cursor() as cur, cur.copy(
            "COPY memory_words (tenant, generation, actor_id, word, lexeme, event_position,"
            " embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["text", "int4", "text", "text", "text", "int8", "vector"])
        for actor, seen in first_seen.items():
            kept = [w for w in seen if w in lexemes]
            for w, v in zip(kept, unit(rng, len(kept)), strict=True):
                copy.write_row(("default", GENERATION, actor, w, lexemes[w], seen[w], v))
                n += 1
    raw.commit()
    return n


def actor_vectors(url: str, actor: str) -> tuple[np.ndarray, list[tuple[int, int]]]:
    from pgvector.psycopg import register_vector

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        register_vector(conn.connection.driver_connection)
        rows = conn.exec_driver_sql(
            "SELECT event_position, chunk_index, embedding FROM memory_chunks"
            " WHERE generation = %s AND actor_id = %s ORDER BY event_position",
            (GENERATION, actor)).fetchall()
    engine.dispose()
    keys = [(r[0], r[1]) for r in rows]
    return np.stack([to_array(r[2]) for r in rows]), keys


class FixedEmbedder:
    """Hands out the query vectors computed beforehand (so every path sees the same ones
    and the model's time is measured once, apart); anything else it is asked for (the
    query words the ranker's expansion embeds) goes to the model, memoised. Either way
    the time is the context's ``embed_ms``, excluded from the latency."""

    def __init__(self, inner: Any, vectors: list[np.ndarray],
                 memo: dict[str, np.ndarray]) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.vectors, self.i, self.memo = vectors, 0, memo
        self.query = ""

    def embed(self, texts: list[str]) -> np.ndarray:
        if list(texts) == [self.query]:
            return self.vectors[self.i][None, :]
        todo = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if todo:
            self.memo.update(zip(todo, self.inner.embed(todo), strict=True))
        return np.stack([self.memo[t] for t in texts])


def queries(rng: np.random.Generator, n: int) -> list[str]:
    topics = list(CORE_WORDS[:19])
    forms = ["What did I say about my {} and the {}?", "When is the {} {}?",
             "Do you remember the {} near the {}?", "Tell me about {} and {} again"]
    out = []
    for _ in range(n):
        a, b = rng.choice(topics, size=2, replace=False)
        out.append(str(rng.choice(forms)).format(a, b))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    server = db.resolve_url(args.url)  # else MEMORY_DATABASE_URL, else the embedded one
    rng = np.random.default_rng(SEED)
    reuse_file = Path(args.reuse) if args.reuse else None
    if reuse_file is not None and reuse_file.exists():
        url = harness.database_url(server, DB_NAME)
        gen = json.loads(reuse_file.read_text())
        gen["reused"] = True
        rng = np.random.default_rng(SEED + 1)
        store = memory.Store.open(url)
    else:
        url = harness.create_database(server, DB_NAME)
        store = memory.Store.open(url)
        print("generating 200k synthetic chunks (COPY) and the HNSW index...",
              file=sys.stderr)
        gen = generate(url, rng)
        print(f"  {gen}", file=sys.stderr)
        with store.maintenance_engine.connect() as conn:
            conn.exec_driver_sql(
                f"SELECT setval('memory_events_position_seq', {POSITION_OFFSET})")
            conn.commit()
        if reuse_file is not None:
            reuse_file.write_text(json.dumps(gen))
    info = machine(store.engine)
    embedder = default_embedder()
    embedder.embed(["warm up"])
    results: dict[str, Any] = {"machine": info, "data": gen, "budget": BUDGET,
                               "queries_per_size": args.queries, "sizes": {}}
    # "default" is what the library ships; "exact" and "hnsw" force the vector path and
    # rank the candidates only (no whole-scope ranking), to compare the two searches.
    candidates_only = ({"scope_rank_max_chunks": 0}
                       if "scope_rank_max_chunks" in RetrievalSettings.__dataclass_fields__
                       else {})
    paths = {"default": RetrievalSettings(),
             "exact": RetrievalSettings(exact_search_max_chunks=10**9, **candidates_only),
             "hnsw": RetrievalSettings(exact_search_max_chunks=0, **candidates_only)}
    paths = {k: v for k, v in paths.items() if k in args.paths}
    for actor, size in MEASURED.items():
        if actor not in args.sizes:
            continue
        session = f"{actor}-now-{int(time.time())}"
        store.append(session, [message("user" if i % 2 == 0 else "assistant",
                                       f"Turn {i} of today's chat about dog food and trips.")
                               for i in range(12)], actor=actor)
        qs = queries(rng, args.queries)
        vecs, keys = actor_vectors(url, actor)
        entry: dict[str, Any] = {"chunks": size, "loadavg_start": loadavg()}
        qvecs = []
        embed_ms = []
        for q in qs:
            t = time.perf_counter()
            qvecs.append(embedder.embed([q])[0])
            embed_ms.append((time.perf_counter() - t) * 1000)
        entry["embed_ms"] = summary(embed_ms)

        memo: dict[str, np.ndarray] = {}
        for path, settings in paths.items():
            fixed = FixedEmbedder(embedder, qvecs, memo)
            total, search_ms, assemble_ms, plans = [], [], [], set()
            memories: list[int] = []
            tops: list[list[tuple[int, int]]] = []
            # the first call of a path reads the scope into the process's scope cache
            # (memory/retrieval/scopecache.py) when it has not been read yet: timed apart
            fixed.i, fixed.query = 0, qs[0]
            first = store.context(qs[0], actor=actor, session=session, budget=BUDGET,
                                  settings=settings, embedder=fixed).timings
            first_ms = first["total_ms"] - first["embed_ms"]
            for i, q in enumerate(qs):
                fixed.i, fixed.query = i, q
                ctx = store.context(q, actor=actor, session=session, budget=BUDGET,
                                    settings=settings, embedder=fixed)
                tm = ctx.timings
                total.append(tm["total_ms"] - tm["embed_ms"])
                search_ms.append(tm["search_ms"])
                assemble_ms.append(tm["assemble_ms"])
                plans.add(ctx.plan.get("vector", "?"))
                memories.append(len(ctx.memories))
                if path != "default":
                    tops.append(_vector_top(store, actor, qvecs[i], settings))
            entry[path] = {"total_excl_embed_ms": summary(total),
                           "search_ms": summary(search_ms),
                           "assemble_ms": summary(assemble_ms), "vector_path": sorted(plans),
                           "first_call_excl_embed_ms": round(first_ms, 3),
                           "memories_p50": statistics.median(memories)}
            if path != "default":
                entry[path]["_tops"] = tops
        # numpy brute force over the same vectors (already in memory)
        brute_ms = []
        exact_tops = []
        k = RetrievalSettings().vector_candidates
        for qv in qvecs:
            t = time.perf_counter()
            sims = vecs @ qv
            top = np.argpartition(-sims, k)[:k]
            top = top[np.argsort(-sims[top])]
            brute_ms.append((time.perf_counter() - t) * 1000)
            exact_tops.append([keys[j] for j in top])
        entry["numpy_bruteforce_ms"] = summary(brute_ms)
        for path in ("exact", "hnsw"):
            if path not in entry:
                continue
            tops = entry[path].pop("_tops")
            entry[path]["recall@50_vs_numpy"] = round(statistics.fmean(
                len(set(a) & set(b)) / k for a, b in zip(tops, exact_tops, strict=True)), 4)
        entry["loadavg_end"] = loadavg()
        results["sizes"][actor] = entry
        p95 = {k: entry[k]["total_excl_embed_ms"]["p95"] for k in paths}
        print(f"  {actor}: p95 excluding the embedding {p95} ms, "
              f"numpy {entry['numpy_bruteforce_ms']['p95']}, "
              f"load {entry['loadavg_start'][0]:.2f} -> {entry['loadavg_end'][0]:.2f}",
              file=sys.stderr)
    info["loadavg_end"] = loadavg()
    store.close()
    if not args.keep and not args.reuse:
        harness.drop_database(server, DB_NAME)
    return results


def _vector_top(store: memory.Store, actor: str, qv: np.ndarray,
                settings: RetrievalSettings) -> list[tuple[int, int]]:
    """The vector candidates alone, down the path the settings force (for recall)."""
    from memory.pg import tenant_scope

    scope = search.Scope(store.tenant, actor, "x", (actor,))
    with tenant_scope(store.tenant), store.engine.connect() as conn, conn.begin():
        gen = search.live_generations(conn)["chunks"]
        finder = search.ChunkSearch(conn, scope, gen, 10**12, settings,
                                    cache=store.scope_cache)
        return [h.key for h in finder.vector(qv)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="server URL (default: MEMORY_DATABASE_URL, else embedded)")
    p.add_argument("--out", type=Path, help="write the JSON result here")
    p.add_argument("--queries", type=int, default=200, help="calls per size and path")
    p.add_argument("--keep", action="store_true", help="keep the bench database")
    p.add_argument("--sizes", type=lambda v: v.split(","), default=list(MEASURED),
                   help=f"measured actors, comma-separated (default: {','.join(MEASURED)})")
    p.add_argument("--paths", type=lambda v: v.split(","),
                   default=["default", "exact", "hnsw"],
                   help="paths measured, comma-separated (default: default,exact,hnsw)")
    p.add_argument("--reuse", metavar="FILE",
                   help="keep the generated database and describe it in FILE; when FILE "
                        "exists, measure the database it describes instead of generating")
    args = p.parse_args()
    result = run(args)
    result_file.write(result, args.out, echo=True)


if __name__ == "__main__":
    main()

"""LoCoMo retrieval benchmark: recall of the evidence turns, through the library.

    python benchmarks/locomo.py --data FILE --out RESULT.json [--per-question FILE.jsonl]
        [--conversations N] [--limit N]

1. Ingests every conversation through the public API into a fresh database: one actor per
   conversation, one session per LoCoMo session, one ``message`` event per turn (the
   speaker as ``name``, the session's date as ``occurred_at``, a shared image's caption kept
   in the turn's text), then runs the projections (chunks + embeddings, summaries).
2. For every question (asked after the last session, in a new session of that actor)
   retrieves within the actor's memory with several systems over the same data:
   ``fulltext`` (Postgres full text, ts_rank_cd), ``bm25`` (the library's in-database BM25
   alone), ``vector`` (pgvector cosine), ``hybrid`` (reciprocal-rank fusion of the two
   candidate lists) and ``default`` (what ``Store.context`` uses), and scores the top 50
   turns against the evidence (memory.retrieval.evaluation). Context recall: the share of
   evidence turns present in what ``Store.context`` returns at 1,000 and 2,000 tokens.
   Query latency excludes the query embedding (it is the same for every system).

The data is CC BY-NC 4.0: read from where it is (benchmarks/locomo_data.py), never copied
into the repository. ``--conversations 1 --limit 5`` checks the whole pipeline in a few
minutes; the figures in benchmarks/RESULTS.md are of the full run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness
import result_file
from latency import percentiles
from locomo_data import CATEGORIES, Conversation, Question, load, session_of
from machine_info import commit, loadavg

import memory
from memory.retrieval import ranking, search, wholescope
from memory.retrieval.evaluation import KS, aggregate, context_recall, score_ranking
from memory.retrieval.settings import DEFAULT_SETTINGS, RetrievalSettings

try:
    from memory.pg import tenant_scope
except ImportError:  # pragma: no cover
    def tenant_scope(tenant: str | None) -> Any:  # type: ignore[misc]
        return nullcontext()

DEPTH = 50
BUDGETS = (1000, 2000)
SYSTEMS = ("fulltext", "bm25", "vector", "hybrid", "default")
QUESTION_SESSION = "questions"


def parse_date(text: str) -> datetime:
    """'1:56 pm on 8 May, 2023' -> an aware datetime (UTC; LoCoMo gives no zone)."""
    cleaned = re.sub(r"\s+", " ", text.strip())
    for fmt in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y", "%H:%M on %d %B, %Y"):
        try:
            return datetime.strptime(cleaned, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"unreadable LoCoMo date {text!r}")


# -- ingest ----------------------------------------------------------------------------------

def ingest(store: memory.Store, convs: list[Conversation]) -> tuple[dict[str, dict[int, str]],
                                                                   int, float]:
    """Append every turn; returns, per actor, event position -> dia_id."""
    where: dict[str, dict[int, str]] = {}
    n = 0
    t0 = time.perf_counter()
    for conv in tqdm(convs, desc="ingest", unit="conv"):
        actor = conv.sample_id
        where[actor] = {}
        by_session: dict[int, list] = {}
        for t in conv.turns:
            by_session.setdefault(t.session, []).append(t)
        for s in sorted(by_session):
            turns = by_session[s]
            when = parse_date(conv.session_dates[s])
            events = [memory.message("user", t.content, name=t.speaker, occurred_at=when)
                      for t in turns]
            done = store.append(f"{actor}/session_{s}", events, actor=actor)
            for t, a in zip(turns, done, strict=True):
                where[actor][a.position] = t.dia_id
            n += len(events)
    return where, n, time.perf_counter() - t0


# -- retrieval systems -------------------------------------------------------------------------

PLAIN_FUSION = DEFAULT_SETTINGS.replace(fusion="rrf", vector_weight=1.0, text_weight=1.0,
                                        neighbour_share=0.0, scope_rank_max_chunks=0)
# BM25 alone: every other part of the default ranker off (measures ts_rank against BM25)
BM25_ONLY = DEFAULT_SETTINGS.replace(vector_weight=0.0, text_weight=1.0, text_window=0,
                                     vector_windows=(), speaker_boost=0.0,
                                     neighbour_share=0.0, strip_author_names=False,
                                     session_prior=0.0, date_boost=0.0,
                                     question_penalty=0.0, aggregate_session_penalty=0.0,
                                     sentence_max=False, expansion_weight=0.0)


def dia_ids(hits: list[search.Hit], where: dict[int, str]) -> list[str]:
    out: list[str] = []
    for h in hits:
        d = where.get(h.event_position)
        if d is not None and d not in out:
            out.append(d)
    return out[:DEPTH]


class LazyHits(Sequence[search.Hit]):
    """Candidate hits searched on first use, as Store.context does (context.py): the
    whole-scope ranker never reads them, so the default system does not pay for them."""

    def __init__(self, load: Callable[[], list[search.Hit]]) -> None:
        self._load_fn = load
        self._hits: list[search.Hit] | None = None

    def _load(self) -> list[search.Hit]:
        if self._hits is None:
            self._hits = self._load_fn()
        return self._hits

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, i: Any) -> Any:
        return self._load()[i]

    def __iter__(self) -> Iterator[search.Hit]:
        return iter(self._load())


class Retriever:
    """The systems, each a function (finder, question, vectors) -> ranked hits;
    ``default`` ranks with ``settings`` (the library's defaults unless ``--set``)."""

    def __init__(self, store: memory.Store, settings: RetrievalSettings = DEFAULT_SETTINGS
                 ) -> None:
        self.store = store
        self.settings = settings

    def run(self, actor: str, q: Question, raw_vec: np.ndarray,
            embed: Callable[[list[str]], np.ndarray], where: dict[int, str]
            ) -> dict[str, tuple[list[str], float]]:
        out: dict[str, tuple[list[str], float]] = {}
        with tenant_scope(self.store.tenant), self.store.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                head = int(conn.exec_driver_sql(search.HEAD_TENANT,
                                                (self.store.tenant,)).scalar_one())
                gen = search.live_generations(conn)[search.CHUNKS_PROJECTION]
                scope = search.Scope(self.store.tenant, actor, QUESTION_SESSION, (actor,))
                bound = min(head, gen.position)

                def finder(settings: RetrievalSettings = DEFAULT_SETTINGS
                           ) -> search.ChunkSearch:
                    return search.ChunkSearch(conn, scope, gen, bound, settings,
                                              cache=self.store.scope_cache)

                t = time.perf_counter()
                hits = finder().text(q.question, k=DEPTH)
                out["fulltext"] = (dia_ids(hits, where), time.perf_counter() - t)

                t = time.perf_counter()
                hits = finder().vector(raw_vec, k=DEPTH)
                out["vector"] = (dia_ids(hits, where), time.perf_counter() - t)

                t = time.perf_counter()
                f = finder(PLAIN_FUSION)
                hits = search.merge(f.vector(raw_vec, k=DEPTH), f.text(q.question, k=DEPTH))
                ranked = ranking.rank(ranking.RankRequest(
                    query=q.question, hits=hits, neighbours=f.neighbours,
                    settings=PLAIN_FUSION, now=datetime.now(UTC)))
                out["hybrid"] = (dia_ids([r.hit for r in ranked], where),
                                 time.perf_counter() - t)

                t = time.perf_counter()
                f = finder(BM25_ONLY)
                f.scope_size()
                ranked = ranking.rank(ranking.RankRequest(
                    query=q.question, hits=[], neighbours=f.neighbours, settings=BM25_ONLY,
                    now=datetime.now(UTC), query_vec=raw_vec, finder=f))
                out["bm25"] = (dia_ids([r.hit for r in ranked], where), time.perf_counter() - t)

                # default: exactly the steps Store.context takes (context.py), the query
                # embedding timed apart
                s = self.settings
                t = time.perf_counter()
                f = finder(s)
                f.scope_size()
                vquery = q.question
                if s.strip_author_names:
                    vquery = ranking.vector_query(q.question, wholescope.scope_authors(f))
                t_embed = time.perf_counter()
                qvec = raw_vec if vquery == q.question else embed([vquery])[0]
                embed_s = [time.perf_counter() - t_embed]

                def embed_words(words: Sequence[str]) -> np.ndarray:
                    t0 = time.perf_counter()  # query words the vocabulary lacks
                    vectors = embed(list(words))
                    embed_s.append(time.perf_counter() - t0)
                    return vectors

                hits = LazyHits(lambda f=f, qvec=qvec: search.merge(f.vector(qvec),
                                                                    f.text(q.question)))
                ranked = ranking.rank(ranking.RankRequest(
                    query=q.question, hits=hits, neighbours=f.neighbours, settings=s,
                    now=datetime.now(UTC), embeddings=f.embeddings, query_vec=qvec, finder=f,
                    embed=embed_words))
                out["default"] = (dia_ids([r.hit for r in ranked], where),
                                  time.perf_counter() - t - sum(embed_s))
        return out


def _only(part: str) -> ranking.Ranker:
    """A ranker keeping the candidates of one search in its own order (for the context
    recall of the single-search systems)."""
    def ranker(req: ranking.RankRequest) -> list[ranking.Ranked]:
        hits = sorted((h for h in req.hits if part in h.parts),
                      key=lambda h: (h.parts[part], h.key))
        return [ranking.Ranked(hit=h, score=1.0 / h.parts[part], parts=dict(h.parts))
                for h in hits]
    return ranker


PLAIN = DEFAULT_SETTINGS.replace(strip_author_names=False, scope_rank_max_chunks=0)
CONTEXT_SYSTEMS: dict[str, tuple[RetrievalSettings, ranking.Ranker | None]] = {
    "fulltext": (PLAIN, _only("text_rank")),
    "bm25": (BM25_ONLY, None),
    "vector": (PLAIN, _only("vector_rank")),
    "hybrid": (PLAIN_FUSION.replace(strip_author_names=False), None),
    "default": (DEFAULT_SETTINGS, None),
}


class CachedEmbedder:
    """The model's query embeddings, memoised: every system embeds the same questions."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.cache: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            for t, v in zip(todo, self.inner.embed(todo), strict=True):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in texts])


def actor_authors(store: memory.Store, actors: list[str]) -> dict[str, list[str]]:
    """Each actor's authors, as the default ranker reads them (wholescope.scope_authors)."""
    out: dict[str, list[str]] = {}
    with tenant_scope(store.tenant), store.engine.connect() as conn, conn.begin():
        gen = search.live_generations(conn)[search.CHUNKS_PROJECTION]
        for actor in actors:
            scope = search.Scope(store.tenant, actor, QUESTION_SESSION, (actor,))
            out[actor] = wholescope.scope_authors(
                search.ChunkSearch(conn, scope, gen, gen.position, DEFAULT_SETTINGS,
                                   cache=store.scope_cache))
    return out


def context_positions(store: memory.Store, actor: str, question: str, budget: int,
                      system: str, embedder: CachedEmbedder) -> set[int]:
    settings, ranker = CONTEXT_SYSTEMS[system]
    ctx = store.context(question, actor=actor, session=QUESTION_SESSION, budget=budget,
                        settings=settings, ranker=ranker, embedder=embedder)  # type: ignore[arg-type]
    assert ctx.tokens <= budget
    return {s.position for s in ctx.sources if s.kind in ("memory", "neighbour", "turn")}


def settings_with(changes: Sequence[str]) -> tuple[RetrievalSettings, dict[str, Any]]:
    """The default settings with ``NAME=VALUE`` changes (VALUE read as JSON, else as a
    string): ``--set question_penalty=0.15 --set sentence_max=false`` measures what one
    part of the default ranker is worth."""
    fields = {f.name: f for f in dataclasses.fields(RetrievalSettings)}
    parsed: dict[str, Any] = {}
    for item in changes:
        name, sep, raw = item.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set {item!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(sorted(fields))}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(value, list):
            value = tuple(value)
        parsed[name] = value
    return DEFAULT_SETTINGS.replace(**parsed), parsed


# -- main --------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a LoCoMo JSON file (list of samples)")
    ap.add_argument("--out", required=True, help="where to write the results (JSON)")
    ap.add_argument("--per-question", help="also write one JSON line per question here")
    ap.add_argument("--url", help="a PostgreSQL server URL (default: an embedded server in "
                                  "a temporary folder); a fresh database is made on it")
    ap.add_argument("--home", help="MEMORY_HOME for the embedded server (default: temporary)")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    ap.add_argument("--limit", type=int, help="only the first N questions per conversation")
    ap.add_argument("--conversations", type=int,
                    help="only the first N conversations (a quick check of the pipeline)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="change one RetrievalSettings field of the default system "
                         "(repeatable; VALUE as JSON, e.g. --set sentence_max=false)")
    args = ap.parse_args()
    args.settings, args.changes = settings_with(args.set)

    started = time.perf_counter()
    convs = load(args.data)[: args.conversations]
    if args.limit:
        for c in convs:
            c.questions = c.questions[: args.limit]
    with (harness.server(args.url, home=Path(args.home) if args.home else None,
                         prefix="locomo-home-", keep=args.keep) as srv,
          harness.scratch_database(srv.url, f"locomo_{os.getpid()}", keep=args.keep) as url):
        result = run(url, convs, args)
    result["run_seconds"] = round(time.perf_counter() - started, 1)
    result_file.write(result, args.out)
    d = result["systems"]["default"]
    print(f"default: R@5 {d['recall@5']:.3f} R@10 {d['recall@10']:.3f} "
          f"R@25 {d['recall@25']:.3f} R@50 {d['recall@50']:.3f} "
          f"S@5 {d['session_recall_any@5']:.3f} MRR {d['mrr']:.3f} "
          f"ctx@2000 {d['context_recall@2000']:.3f} p95 {d['query_ms_p95']:.1f} ms; "
          f"whole run {result['run_seconds']:.0f} s -> {args.out}")


def run(url: str, convs: list[Conversation], args: argparse.Namespace) -> dict[str, Any]:
    from memory.embedding import default_embedder

    store = memory.Store.open(url)
    embedder = default_embedder()
    try:
        where, n_events, ingest_s = ingest(store, convs)
        t = time.perf_counter()
        store.project(embedder=embedder)
        project_s = time.perf_counter() - t

        questions = [(c.sample_id, q) for c in convs for q in c.questions]
        t = time.perf_counter()
        raw = embedder.embed([q.question for _, q in questions])
        embed_s = time.perf_counter() - t

        cached = CachedEmbedder(embedder)
        for (_, q), v in zip(questions, raw, strict=True):
            cached.cache[q.question] = v
        # the vector queries the default ranker will ask for (author names removed), in
        # one batch up front: one model call per question costs far more than a batch
        t = time.perf_counter()
        authors = actor_authors(store, [c.sample_id for c in convs])
        cached.embed([ranking.vector_query(q.question, authors[actor])
                      for actor, q in questions])
        embed_s += time.perf_counter() - t

        retriever = Retriever(store, args.settings)
        CONTEXT_SYSTEMS["default"] = (args.settings, None)
        rows: dict[str, list[tuple[int, dict[str, float]]]] = {s: [] for s in SYSTEMS}
        times: dict[str, list[float]] = {s: [] for s in SYSTEMS}
        per_q = open(args.per_question, "w") if args.per_question else None  # noqa: SIM115
        try:
            for (actor, q), vec in tqdm(list(zip(questions, raw, strict=True)),
                                        desc="questions", unit="q"):
                found = retriever.run(actor, q, vec, cached.embed, where[actor])
                back = where[actor]
                ctx: dict[tuple[str, int], float] = {}
                for name in SYSTEMS:
                    for budget in BUDGETS:
                        positions = context_positions(store, actor, q.question, budget, name,
                                                      cached)
                        ctx[name, budget] = context_recall(
                            {back[p] for p in positions if p in back}, q.evidence)
                line: dict[str, Any] = {"conversation": actor, "qa_index": q.index,
                                        "category": q.category, "question": q.question,
                                        "evidence": q.evidence, "systems": {}}
                for name in SYSTEMS:
                    ranked, secs = found[name]
                    m = score_ranking(ranked, q.evidence, session_of)
                    for budget in BUDGETS:
                        m[f"context_recall@{budget}"] = ctx[name, budget]
                    rows[name].append((q.category, m))
                    times[name].append(secs * 1000)
                    line["systems"][name] = {**m, "top10": ranked[:10],
                                             "ms": round(secs * 1000, 2)}
                if per_q:
                    per_q.write(json.dumps(line) + "\n")
        finally:
            if per_q:
                per_q.close()
    finally:
        store.close()

    systems: dict[str, Any] = {}
    for name in SYSTEMS:
        agg = aggregate(rows[name], CATEGORIES)
        agg.update(percentiles(times[name], 50, 95, key="query_ms_p{}", digits=2))
        systems[name] = agg
    return {
        "questions": sum(len(c.questions) for c in convs),
        "excluded": sum(c.excluded for c in convs),
        "systems": systems,
        "conversations": len(convs),
        "events": n_events,
        "ingest_seconds": round(ingest_s, 2),
        "ingest_events_per_second": round(n_events / ingest_s, 1),
        "projection_seconds": round(project_s, 2),
        "projection_events_per_second": round(n_events / project_s, 1),
        "question_embedding_seconds": round(embed_s, 2),
        "depth": DEPTH,
        "default_settings_changed": args.changes,
        "ks": list(KS),
        "notes": "context_recall@B: Store.context with each system's settings (fulltext and "
                 "vector keep only their own candidates), a new session, budget B tokens; "
                 "query_ms: search and ranking, the query embedding excluded.",
        "embedder": repr(embedder),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "commit": commit(), "loadavg_end": loadavg()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


if __name__ == "__main__":
    main()

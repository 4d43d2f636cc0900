"""Every knob of the retriever, in one frozen dataclass with documented defaults.

The settings travel with a recorded context (``context_assembled`` event), so replay
rebuilds a context with the exact knobs it was built with. Add a field here rather than a
constant in the middle of the code; give it a default that keeps older recordings valid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RetrievalSettings:
    # -- the budget, split between the parts of a context --------------------------------
    recent_share: float = 0.5
    """Share of the budget first given to the session's recent turns (newest first).
    Whatever the summary and memories leave unused goes back to older turns."""
    summary_max_share: float = 0.2
    """Most of the budget the session summary may take (it is cut to fit, never over)."""
    max_memories: int | None = None
    """Most relevant memories (chunks) shown; None = as many as the budget holds, taken
    in rank order from what the ranker hands on (at most ``rank_depth`` for whole-scope
    ranking, ``vector_candidates + text_candidates`` otherwise), which is the bound. A
    fixed 20 capped LoCoMo's context recall at 2,000 tokens, which fit about 40 turns."""
    message_overhead_tokens: int = 4
    """Tokens a chat API adds around each message (role markers, separators); about 3-4
    for OpenAI chat formats. Counted for every rendered message."""
    recent_page: int = 64
    """Session events read from the log per page while filling the recent turns."""

    # -- candidate search ------------------------------------------------------------------
    vector_candidates: int = 50
    """Top-k from the vector (cosine) search."""
    text_candidates: int = 50
    """Top-k from the full-text search."""
    exact_search_max_chunks: int = 20_000
    """A scope with at most this many chunks is searched exactly (scope first, then every
    vector compared); larger scopes go through the HNSW index with iterative scans.
    Measured by benchmarks/context.py (benchmarks/RESULTS.md, "Context"): in a
    200k-chunk database, exact search was as fast as or faster than HNSW for scopes of 1k,
    5k, 10k and 20k chunks, with recall 1.0 against HNSW's 0.24-0.54 (on random vectors);
    20k is the largest scope measured, so larger ones take the index."""
    scope_cache_bytes: int = 256 * 2**20
    """Memory a store's scope cache may keep for scopes read whole (retrieval/scopecache.py:
    a scope below the exact-search threshold is read once, vectors as a float32 matrix,
    and then checked, not re-read, at every call; ~1.6 KB per chunk with 384 dimensions,
    so 256 MiB holds ~160k chunks, e.g. eight 20k-chunk actors). Least recently used
    scopes go first; 0 keeps nothing (each call then reads its scope whole: same results,
    slower). Does not change any result, only the time."""
    hnsw_ef_search: int = 100
    """``hnsw.ef_search`` for large scopes (pgvector default is 40)."""
    hnsw_iterative_scan: str = "relaxed_order"
    """``hnsw.iterative_scan``: keep scanning the graph until enough rows pass the scope
    filter (pgvector >= 0.8). Results are re-sorted exactly afterwards."""
    hnsw_max_scan_tuples: int = 40_000
    """``hnsw.max_scan_tuples``: bound on the graph tuples an iterative scan may visit."""
    text_search_config: str = "english"
    """Postgres text search configuration; must match the chunks' ``tsv`` column."""
    max_query_terms: int = 64
    """Distinct query lexemes OR-ed into the full-text query (a 10k-character query does
    not become a 2,000-term query)."""

    # -- ranking (memory/retrieval/ranking/fusion.py) ---------------------------------------------
    fusion: str = "linear"
    """``linear``: min-max normalised scores, weighted sum; ``rrf``: reciprocal rank fusion."""
    vector_weight: float = 0.6
    text_weight: float = 0.4
    """Linear fusion weights (LoCoMo: 0.6 / 0.4 beat 0.5 / 0.5, benchmarks/RESULTS.md)."""
    rrf_k: int = 60
    """The constant of reciprocal rank fusion, 1 / (k + rank)."""
    neighbour_window: int = 1
    """Turns either side of a hit, in its session, that count as its neighbours."""
    neighbour_share: float = 0.3
    """Share of its best neighbour's fused score a hit receives (answers often sit in the
    turn next to the best match). 0 turns it off."""
    include_neighbours: bool = False
    """Also pack the neighbour turns of each chosen memory (when they fit)."""
    recency_half_life_days: float | None = None
    """Recency weighting: a memory's score is multiplied by
    ``1 - recency_weight + recency_weight * 0.5 ** (age_days / half_life)``. None = off."""
    recency_weight: float = 0.2
    mmr_lambda: float | None = None
    """Maximal marginal relevance: ``lambda * relevance - (1 - lambda) * max similarity to
    the memories already chosen``. None = off (ranking order kept)."""
    min_score: float = 0.0
    """Memories whose fused score is at or below this are not shown."""

    # -- whole-scope ranking (the default; measured on LoCoMo, benchmarks/RESULTS.md) ------
    scope_rank_max_chunks: int = 5_000
    """A scope with at most this many chunks is scored whole (every chunk: cosine, BM25,
    windows of turns); a larger one is ranked from the vector and full-text candidates
    only. 0 turns whole-scope ranking off."""
    strip_author_names: bool = True
    """Remove the scope's author names from the query before the vector search: a small
    embedding model otherwise ranks every turn of the named person alike."""
    bm25_k1: float = 1.2
    bm25_b: float = 0.0
    """BM25 length normalisation; 0 suits short, even turns (measured better than 0.75)."""
    text_window: int = 2
    """BM25 also scores each turn's window of this many turns either side (same session,
    term frequencies summed); 0 = off."""
    text_window_weight: float = 1.0
    vector_windows: tuple[int, ...] = (1, 2)
    """Half-widths of turn windows whose mean cosine adds to a turn's vector score."""
    vector_window_weights: tuple[float, ...] = (0.5, 0.5)
    vector_window_kind: str = "mean_vector"
    """How a window scores against the query: ``mean_vector``, the cosine of the mean of
    its turns' (unit) vectors, i.e. the sum of their cosines over the norm of their summed
    vectors (a window of like turns scores like one turn, a mixed one lower); or
    ``mean_cosine``, the mean of its turns' cosines. LoCoMo: mean_vector +0.0014 session
    recall_any@5, +0.0007 recall@50 when the part was introduced (the comparison on
    the current ranker: benchmarks/locomo.py
    --set vector_window_kind=mean_cosine)."""
    speaker_boost: float = 0.15
    """Added to the score of turns by the one author the query names (0 = off)."""
    session_prior: float = 0.15
    """Added x the turn's session scored as one document (its mean cosine and the BM25 of
    its summed term frequencies, each min-max normalised over the scope's sessions). LoCoMo:
    0.15 gives +0.002 recall@50 over 0.1 when the part was introduced (the comparison on
    the current ranker:
    benchmarks/locomo.py --set session_prior=0.1). 0 = off."""
    session_prior_vector_share: float = 0.5
    """Share of the session's mean cosine in that prior (BM25 gets the rest)."""
    date_boost: float = 0.5
    """Added x exp(-days / ``date_tau_days``) from the turn's ``occurred_at`` to the
    nearest date the query names ("on 8 May, 2023", "in June 2023", "in 2022"; English,
    no model). LoCoMo: +0.019 recall@10 alone, every conversation up (+0.008 to +0.041;
    12% of its questions name a date), when the part was introduced (the comparison on
    the current ranker:
    benchmarks/locomo.py --set date_boost=0). 0 = off."""
    date_tau_days: float = 14.0
    question_penalty: float = 0.1
    """Subtracted from chunks whose text ends with a question mark: a turn that asks
    rarely holds the fact asked about later (LoCoMo: 25% of turns, 14% of evidence turns;
    it often echoes the topic words of the turn it answers). LoCoMo: recall@50 .9510 at
    0.1 against .9488 at 0.15 (benchmarks/locomo.py --set question_penalty=0.15). 0 = off."""
    sentence_max: bool = True
    """A chunk's own cosine (before its windows') is the larger of its vector's and its
    best sentence's (``memory_chunks.pieces``, chunks of several sentences): the sentence
    that answers scores higher alone than blurred into its turn. LoCoMo: without it
    recall@5 .773 -> .767, recall@50 .951 -> .948, multi-hop recall@10 .570 -> .560
    (benchmarks/locomo.py --set sentence_max=false). Needs a chunks generation built with
    pieces; without them the chunk's own cosine is used."""
    expansion_weight: float = 0.2
    """Query expansion by word vectors (memory/retrieval/ranking/expansion.py): each query word
    adds the scope's ``expansion_per_word`` lexemes nearest to it (single-word vectors,
    cosine at least ``expansion_min_cosine``) to the BM25 query, each weighing this x its
    cosine (a query term weighs 1). LoCoMo: without it open-domain recall@10 .553 -> .528,
    recall@50 .951 -> .947 (benchmarks/locomo.py --set expansion_weight=0). 0 = off."""
    expansion_min_cosine: float = 0.5
    expansion_per_word: int = 5
    aggregate_session_penalty: float = 0.05
    """For a query that gathers facts over time (it matches ``aggregate_pattern``: the
    present perfect, "What has X painted?", "Where has X been?"), the best ``rank_depth``
    chunks are re-ordered by score minus this x the chunk's rank within its session among
    them (0 for a session's best chunk, 1 for its second...): the facts of such a question
    lie in several sessions, and the best-matching session would otherwise fill the top.
    LoCoMo: multi-hop recall@10 +0.027, recall@10 +0.003 when the part was introduced
    (the comparison on the current ranker:
    benchmarks/locomo.py --set aggregate_session_penalty=0). 0 = off."""
    aggregate_pattern: str = r"\b(?:has|have)\b"
    """Regular expression (case-insensitive) that marks such a query."""
    rank_depth: int = 100
    """How many chunks the whole-scope ranker hands on, best first."""

    # -- rendering ---------------------------------------------------------------------------
    date_format: str = "%Y-%m-%d"
    """How a memory's date (its event's ``occurred_at``, UTC) is written."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Free room for experiments (a ranker may read its own knobs from here)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetrievalSettings:
        """Settings from a recording; unknown keys are ignored, missing ones defaulted
        (knobs added later default to off, :data:`ADDED_OFF`, so an older recording
        replays with the ranking it was built with)."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        if data:
            for k, v in ADDED_OFF.items():
                known.setdefault(k, v)
        return cls(**known)

    def replace(self, **changes: Any) -> RetrievalSettings:
        return dataclasses.replace(self, **changes)


ADDED_OFF: dict[str, Any] = {"session_prior": 0.0, "date_boost": 0.0, "question_penalty": 0.0,
                             "aggregate_session_penalty": 0.0,
                             "vector_window_kind": "mean_cosine", "sentence_max": False,
                             "expansion_weight": 0.0}
"""Ranking knobs added after recordings existed, and the value that turns each off: a
recording without the key was built without the idea."""

DEFAULT_SETTINGS = RetrievalSettings()

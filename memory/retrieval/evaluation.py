"""Retrieval quality: how well a ranking finds the items known to answer a question.

The metrics of the LoCoMo retrieval evaluation (Maharana et al., ACL 2024), for any labelled
set: a question's ``relevant`` items (LoCoMo calls them evidence turns) are compared with
the ``ranked`` items a retriever returned, best first. Items are any hashable ids (event
positions, dialogue ids); a question without relevant items has no recall and is refused.

Per question, then averaged over questions (``aggregate``):

- ``recall@k``: the share of the relevant items among the first k ranked;
- ``session_recall_any@5``: 1 if the session of any relevant item is among the first five
  distinct sessions of the ranking, else 0 (did the retriever look in the right place);
- ``mrr``: 1 / the rank of the first relevant item (0 if none was ranked);
- ``context_recall``: the share of the relevant items present in a built context.

``benchmarks/locomo.py`` scores the library with these; ``tests/retrieval/test_evaluation.py`` pins
their definitions on small hand-made rankings.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

Item = TypeVar("Item", bound=Hashable)

KS: tuple[int, ...] = (5, 10, 25, 50)
"""The depths at which LoCoMo reports recall."""

SESSIONS_LOOKED_AT = 5
"""How many distinct sessions ``session_recall_any`` looks at."""


def _relevant(relevant: Iterable[Item]) -> set[Item]:
    items = set(relevant)
    if not items:
        raise ValueError("no relevant items: a question without them has no recall; "
                         "leave it out of the evaluation and count it apart")
    return items


def recall_at_k(ranked: Sequence[Item], relevant: Iterable[Item], k: int) -> float:
    """The share of ``relevant`` among the first ``k`` of ``ranked``."""
    items = _relevant(relevant)
    return len(items.intersection(ranked[:k])) / len(items)


def session_recall_any(ranked: Sequence[Item], relevant: Iterable[Item],
                       session_of: Callable[[Item], Hashable],
                       sessions: int = SESSIONS_LOOKED_AT) -> float:
    """1.0 if the session of any relevant item is among the first ``sessions`` distinct
    sessions of ``ranked`` (in their order of first appearance), else 0.0."""
    items = _relevant(relevant)
    seen: list[Hashable] = []
    for item in ranked:
        s = session_of(item)
        if s not in seen:
            seen.append(s)
        if len(seen) == sessions:
            break
    return float(bool({session_of(i) for i in items}.intersection(seen)))


def reciprocal_rank(ranked: Sequence[Item], relevant: Iterable[Item]) -> float:
    """1 / the 1-based rank of the first relevant item in ``ranked``; 0.0 if none is."""
    items = _relevant(relevant)
    for rank, item in enumerate(ranked, 1):
        if item in items:
            return 1.0 / rank
    return 0.0


def context_recall(present: Iterable[Item], relevant: Iterable[Item]) -> float:
    """The share of ``relevant`` among the items ``present`` in a built context."""
    items = _relevant(relevant)
    return len(items.intersection(present)) / len(items)


def score_ranking(ranked: Sequence[Item], relevant: Iterable[Item],
                  session_of: Callable[[Item], Hashable],
                  ks: Sequence[int] = KS) -> dict[str, float]:
    """Every ranking metric of one question: ``recall@k`` for each of ``ks``,
    ``session_recall_any@5`` and ``mrr``."""
    items = _relevant(relevant)
    out = {f"recall@{k}": recall_at_k(ranked, items, k) for k in ks}
    out[f"session_recall_any@{SESSIONS_LOOKED_AT}"] = session_recall_any(ranked, items,
                                                                          session_of)
    out["mrr"] = reciprocal_rank(ranked, items)
    return out


def aggregate(rows: Sequence[tuple[Hashable, Mapping[str, float]]],
              group_names: Mapping[Hashable, str] | None = None,
              digits: int = 4) -> dict[str, object]:
    """The mean of each metric over all ``(group, metrics)`` rows, rounded to ``digits``,
    and the same per group under ``"by_category"`` (groups in sorted order, each named by
    ``group_names`` when given, with its count of ``"questions"``). Every row carries the
    metrics of the first."""
    def mean(items: Sequence[Mapping[str, float]]) -> dict[str, float]:
        keys = list(items[0]) if items else []
        return {k: round(sum(r[k] for r in items) / len(items), digits) for k in keys}

    groups: dict[Hashable, list[Mapping[str, float]]] = defaultdict(list)
    for group, metrics in rows:
        groups[group].append(metrics)
    names = group_names or {}
    result: dict[str, object] = dict(mean([m for _, m in rows]))
    result["by_category"] = {
        names.get(g, str(g)): {**mean(groups[g]), "questions": len(groups[g])}
        for g in sorted(groups)  # type: ignore[type-var]
    }
    return result

"""The retrieval metrics (memory.retrieval.evaluation) on hand-made rankings: their values
are what the LoCoMo figures in benchmarks/RESULTS.md mean."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from memory.retrieval import evaluation as ev


def session_of(item: str) -> int:
    """Ids written ``D<session>:<turn>``, as LoCoMo's."""
    return int(item[1:].split(":", 1)[0])


RANKED = ["D1:1", "D2:1", "D1:2", "D3:1", "D4:1", "D5:1", "D6:1", "D2:2"]


def test_recall_at_k_counts_relevant_items_within_the_first_k() -> None:
    relevant = ["D1:2", "D2:2"]
    assert ev.recall_at_k(RANKED, relevant, 1) == 0.0
    assert ev.recall_at_k(RANKED, relevant, 3) == 0.5
    assert ev.recall_at_k(RANKED, relevant, 8) == 1.0
    assert ev.recall_at_k(RANKED, relevant, 50) == 1.0  # k past the end of the ranking
    assert ev.recall_at_k(["D1:1", "D1:1"], ["D1:1", "D1:2"], 2) == 0.5  # a repeat counts once


def test_reciprocal_rank_is_that_of_the_first_relevant_item() -> None:
    assert ev.reciprocal_rank(RANKED, ["D2:2", "D1:2"]) == pytest.approx(1 / 3)
    assert ev.reciprocal_rank(RANKED, ["D1:1"]) == 1.0
    assert ev.reciprocal_rank(RANKED, ["D9:9"]) == 0.0
    assert ev.reciprocal_rank([], ["D1:1"]) == 0.0


def test_session_recall_any_looks_at_the_first_five_distinct_sessions() -> None:
    # sessions in order of first appearance: 1, 2, 3, 4, 5 (then 6)
    assert ev.session_recall_any(RANKED, ["D2:9"], session_of) == 1.0
    assert ev.session_recall_any(RANKED, ["D6:1"], session_of) == 0.0
    # the relevant item itself need not be ranked: its session is what counts
    assert ev.session_recall_any(["D1:1", "D1:5", "D1:7"], ["D1:3"], session_of) == 1.0
    assert ev.session_recall_any(RANKED, ["D6:1"], session_of, sessions=6) == 1.0
    assert ev.session_recall_any([], ["D1:1"], session_of) == 0.0


def test_score_ranking_gives_every_metric_of_one_question() -> None:
    got = ev.score_ranking(RANKED, ["D1:2", "D2:2"], session_of, ks=(1, 3, 8))
    assert got == {"recall@1": 0.0, "recall@3": 0.5, "recall@8": 1.0,
                   "session_recall_any@5": 1.0, "mrr": pytest.approx(1 / 3)}
    late = ev.score_ranking(["D1:1", "D2:1", "D3:1", "D4:1", "D5:1", "D6:2"], ["D6:2"],
                            session_of, ks=(5,))
    assert late == {"recall@5": 0.0, "session_recall_any@5": 0.0, "mrr": pytest.approx(1 / 6)}
    assert list(ev.score_ranking([], ["D1:1"], session_of)) == [
        "recall@5", "recall@10", "recall@25", "recall@50", "session_recall_any@5", "mrr"]


def test_context_recall_is_the_share_of_relevant_items_present() -> None:
    assert ev.context_recall({"D1:1", "D9:9"}, ["D1:1", "D1:2"]) == 0.5
    assert ev.context_recall(set(), ["D1:1"]) == 0.0


@pytest.mark.parametrize("metric", [
    lambda r: ev.recall_at_k(RANKED, r, 5),
    lambda r: ev.reciprocal_rank(RANKED, r),
    lambda r: ev.session_recall_any(RANKED, r, session_of),
    lambda r: ev.context_recall(RANKED, r),
    lambda r: ev.score_ranking(RANKED, r, session_of),
])
def test_a_question_without_relevant_items_is_refused(metric: Callable[[list[str]], object]
                                                      ) -> None:
    with pytest.raises(ValueError, match="no relevant items"):
        metric([])


def test_aggregate_means_overall_and_per_group_in_group_order() -> None:
    rows = [(5, {"recall@5": 0.5}), (1, {"recall@5": 1.0}), (1, {"recall@5": 0.0}),
            (4, {"recall@5": 1.0})]
    names = {1: "multi-hop", 4: "single-hop", 5: "adversarial"}
    agg = ev.aggregate(rows, names)
    assert agg["recall@5"] == 0.625
    assert agg["by_category"] == {
        "multi-hop": {"recall@5": 0.5, "questions": 2},
        "single-hop": {"recall@5": 1.0, "questions": 1},
        "adversarial": {"recall@5": 0.5, "questions": 1},
    }
    assert list(agg["by_category"]) == ["multi-hop", "single-hop", "adversarial"]
    # four digits, as the benchmark's JSON reports them; unnamed groups keep their key
    thirds = ev.aggregate([("a", {"mrr": 1.0}), ("a", {"mrr": 0.0}), ("b", {"mrr": 0.0})])
    assert thirds["mrr"] == 0.3333
    assert thirds["by_category"] == {"a": {"mrr": 0.5, "questions": 2},
                                     "b": {"mrr": 0.0, "questions": 1}}

"""The LoCoMo metric and evidence-normalisation code (benchmarks/locomo_metrics.py), on
synthetic data only: no LoCoMo text in the repository."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import locomo_metrics as lm


@pytest.mark.parametrize(("raw", "expected"), [
    ("D1:3", "D1:3"), ("D30:05", "D30:5"), ("D:11:26", "D11:26"), (" D2:10 ", "D2:10"),
    ("D", None), ("", None), ("X1:2", None), ("D1-2", None),
])
def test_normalise_dia_id(raw: str, expected: str | None) -> None:
    assert lm.normalise_dia_id(raw) == expected


def test_normalise_evidence_splits_dedupes_and_drops_unknown() -> None:
    known = {"D8:6", "D9:17", "D9:1", "D4:4", "D4:6", "D30:5"}
    got = lm.normalise_evidence(["D8:6; D9:17", "D", "D9:1 D4:4 D4:6", "D30:05", "D8:6",
                                 "D10:19"], known)
    assert got == ["D8:6", "D9:17", "D9:1", "D4:4", "D4:6", "D30:5"]
    # without the known turns, unknown-but-readable ids are kept
    assert lm.normalise_evidence(["D10:19"]) == ["D10:19"]


def test_score_question() -> None:
    ranked = ["D1:1", "D2:1", "D1:2", "D3:1", "D4:1", "D5:1", "D6:1", "D2:2"]
    m = lm.score_question(ranked, ["D1:2", "D2:2"], ks=(1, 3, 8))
    assert m["recall@1"] == 0.0
    assert m["recall@3"] == 0.5
    assert m["recall@8"] == 1.0
    assert m["mrr"] == pytest.approx(1 / 3)
    # sessions in order: 1, 2, 3, 4, 5 -> evidence sessions 1 and 2 are in the first five
    assert m["session_recall_any@5"] == 1.0
    late = lm.score_question(["D1:1", "D2:1", "D3:1", "D4:1", "D5:1", "D6:2"], ["D6:2"],
                             ks=(5,))
    assert late["session_recall_any@5"] == 0.0 and late["recall@5"] == 0.0
    assert late["mrr"] == pytest.approx(1 / 6)
    none = lm.score_question([], ["D1:1"], ks=(5,))
    assert none == {"recall@5": 0.0, "session_recall_any@5": 0.0, "mrr": 0.0}


def test_context_recall() -> None:
    assert lm.context_recall({"D1:1", "D9:9"}, ["D1:1", "D1:2"]) == 0.5


def test_aggregate_overall_and_by_official_category() -> None:
    rows = [(1, {"recall@5": 1.0}), (1, {"recall@5": 0.0}), (4, {"recall@5": 1.0}),
            (5, {"recall@5": 0.5})]
    agg = lm.aggregate(rows)
    assert agg["recall@5"] == pytest.approx(0.625)
    assert agg["by_category"] == {
        "multi-hop": {"recall@5": 0.5, "questions": 2},
        "single-hop": {"recall@5": 1.0, "questions": 1},
        "adversarial": {"recall@5": 0.5, "questions": 1},
    }
    assert lm.CATEGORIES == {1: "multi-hop", 2: "temporal", 3: "open-domain",
                             4: "single-hop", 5: "adversarial"}


def test_load_synthetic_file(tmp_path: Path) -> None:
    sample = {
        "sample_id": "conv-x",
        "conversation": {
            "speaker_a": "Ann", "speaker_b": "Bo",
            "session_1_date_time": "1:56 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "Ann", "dia_id": "D1:1", "text": "hello"},
                {"speaker": "Bo", "dia_id": "D1:2", "text": "look", "img_url": ["u"],
                 "blip_caption": "a photo of a cat"},
            ],
            "session_2_date_time": "9:00 am on 9 May, 2023",
            "session_2": [{"speaker": "Ann", "dia_id": "D2:1", "text": "bye"}],
        },
        "qa": [
            {"question": "q1", "answer": "a", "evidence": ["D1:02"], "category": 4},
            {"question": "q2", "adversarial_answer": "x", "evidence": ["D"], "category": 5},
            {"question": "q3", "answer": 2023, "evidence": ["D1:1; D2:1", "D7:7"],
             "category": 1},
            {"question": "q4", "answer": "a", "evidence": [], "category": 2},
        ],
    }
    path = tmp_path / "synthetic.json"
    path.write_text(json.dumps([sample]))
    (conv,) = lm.load(path)
    assert conv.speakers == ("Ann", "Bo")
    assert [t.dia_id for t in conv.turns] == ["D1:1", "D1:2", "D2:1"]
    assert conv.turns[1].content == "look [image: a photo of a cat]"
    assert conv.turns[2].session == 2 and conv.turns[2].date == "9:00 am on 9 May, 2023"
    assert [(q.question, q.evidence) for q in conv.questions] == [
        ("q1", ["D1:2"]), ("q3", ["D1:1", "D2:1"])]
    assert conv.excluded == 2

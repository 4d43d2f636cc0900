"""The LoCoMo reader (benchmarks/locomo_data.py) on synthetic data: no LoCoMo text in the
repository. Run with ``pytest benchmarks/test_locomo_data.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from locomo_data import CATEGORIES, load, normalise_dia_id, normalise_evidence, session_of


@pytest.mark.parametrize(("raw", "expected"), [
    ("D1:3", "D1:3"), ("D30:05", "D30:5"), ("D:11:26", "D11:26"), (" D2:10 ", "D2:10"),
    ("D", None), ("", None), ("X1:2", None), ("D1-2", None),
])
def test_normalise_dia_id(raw: str, expected: str | None) -> None:
    assert normalise_dia_id(raw) == expected


def test_normalise_evidence_splits_dedupes_and_drops_unknown() -> None:
    known = {"D8:6", "D9:17", "D9:1", "D4:4", "D4:6", "D30:5"}
    got = normalise_evidence(["D8:6; D9:17", "D", "D9:1 D4:4 D4:6", "D30:05", "D8:6",
                              "D10:19"], known)
    assert got == ["D8:6", "D9:17", "D9:1", "D4:4", "D4:6", "D30:5"]
    # without the known turns, unknown-but-readable ids are kept
    assert normalise_evidence(["D10:19"]) == ["D10:19"]


def test_session_of_and_the_official_categories() -> None:
    assert session_of("D12:3") == 12
    assert CATEGORIES == {1: "multi-hop", 2: "temporal", 3: "open-domain",
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
    (conv,) = load(path)
    assert conv.speakers == ("Ann", "Bo")
    assert [t.dia_id for t in conv.turns] == ["D1:1", "D1:2", "D2:1"]
    assert conv.turns[1].content == "look [image: a photo of a cat]"
    assert conv.turns[2].session == 2 and conv.turns[2].date == "9:00 am on 9 May, 2023"
    assert [(q.question, q.evidence) for q in conv.questions] == [
        ("q1", ["D1:2"]), ("q3", ["D1:1", "D2:1"])]
    assert conv.excluded == 2

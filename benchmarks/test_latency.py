"""The latency figures every benchmark reports (benchmarks/latency.py) and the result file
they go to (benchmarks/result_file.py). Run with ``pytest benchmarks/test_latency.py``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import result_file
from latency import percentile, percentiles, summary


def test_percentile_interpolates_between_ranks_and_rounds() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # order does not matter
    assert percentile(values, 50) == 2.5
    assert percentile(values, 95) == 3.85
    assert percentile(values, 100) == 4.0
    assert percentile([1 / 3], 50, digits=2) == 0.33


def test_no_values_give_nan_not_an_error() -> None:
    assert math.isnan(percentile([], 95))
    assert all(math.isnan(v) for v in summary([]).values())


def test_percentiles_are_named_by_the_key_given() -> None:
    values = list(range(101))
    assert percentiles(values, 50, 99) == {"p50": 50.0, "p99": 99.0}
    assert percentiles(values, 95, key="p{}_ms") == {"p95_ms": 95.0}
    assert percentiles(values, 99.9, key="query_ms_p{}", digits=1) == {"query_ms_p99.9": 99.9}


def test_summary_is_median_p95_and_mean() -> None:
    assert summary([1.0, 2.0, 3.0, 10.0]) == {"p50": 2.5, "p95": 8.95, "mean": 4.0}


def test_result_file_writes_json_with_a_newline_only_when_asked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    result_file.write({"ratio": 0.9, "runs": [1, 2]}, out)
    assert out.read_text().endswith("}\n")
    assert json.loads(out.read_text()) == {"ratio": 0.9, "runs": [1, 2]}
    assert f"wrote {out}" in capsys.readouterr().err
    result_file.write({"ratio": 1.0}, None, echo=True)
    assert json.loads(capsys.readouterr().out) == {"ratio": 1.0}
    assert out.read_text().count("0.9") == 1  # the first file is untouched

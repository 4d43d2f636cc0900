"""`memory fork`, `memory retract` and `memory log` (memory/cli/views.py), run through the
command's entry point against a real server."""

from __future__ import annotations

import json

import pytest

import memory
from memory import message
from memory.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fork_retract_and_log_show_the_view(database_url: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with memory.open(database_url, migrate=False) as store:
        store.append("p", [message("user", "first words"), message("user", "second words"),
                           message("user", "third words")], actor="maya")
        second = store.read_session("p")[1]
    url = ("--url", database_url)
    code, out, _ = run(capsys, "fork", "p", "--at", "2", "--new", "b", "--actor", "maya",
                       *url)
    assert code == 0 and "branch of p at version 2" in out
    code, out, _ = run(capsys, "retract", "b", "--actor", "maya", "--event",
                       str(second.event_id), "--reason", "wrong turn", *url)
    assert code == 0 and str(second.event_id) in out
    code, out, _ = run(capsys, "log", "b", *url)
    lines = out.splitlines()
    assert code == 0
    assert "p@1" in lines[0] and "first words" in lines[0]
    assert "p@2" in lines[1] and "[hidden by" in lines[1]
    assert "b@1" in lines[2] and "fork of p at version 2" in lines[2]
    assert "hides 1 event(s) (wrong turn)" in lines[3]
    assert "third words" not in out
    assert lines[-1] == "-- 3 visible, 1 hidden; inherits p@2"
    code, out, _ = run(capsys, "log", "b", "--visible", "--json", *url)
    rows = [json.loads(x) for x in out.splitlines()]
    assert [(r["session_id"], r["version"], r["inherited"]) for r in rows] == [
        ("p", 1, True), ("b", 1, False), ("b", 2, False)]


def test_refusals_exit_1_with_the_reason(database_url: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with memory.open(database_url, migrate=False) as store:
        store.append("p", message("user", "hello"), actor="maya")
    code, _, err = run(capsys, "fork", "p", "--at", "5", "--new", "b", "--actor", "maya",
                       "--url", database_url)
    assert code == 1 and "version 1" in err
    code, _, err = run(capsys, "retract", "nope", "--actor", "maya", "--last", "1",
                       "--url", database_url)
    assert code == 1 and "no events" in err

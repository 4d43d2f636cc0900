"""The `memory` command, run as a user would: a subprocess with its own environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import memory


def run_cli(*args: str, stdin: str = "", env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "memory", *args], input=stdin, text=True,
                          capture_output=True, env=full_env, timeout=300)


def line(**kw: object) -> str:
    base = {"session_id": "s1", "actor_id": "ana", "type": "message",
            "payload": {"role": "user", "content": "hello"}}
    return json.dumps({**base, **kw})


def test_append_from_stdin_writes_batches(database_url: str) -> None:
    text = "\n".join([line(), line(payload={"role": "assistant", "content": "hi"}),
                      line(session_id="s2", type="note", payload={"text": "likes tea"})])
    out = run_cli("append", "--url", database_url, stdin=text + "\n")
    assert out.returncode == 0, out.stderr
    assert "appended 3 event(s)" in out.stdout
    with memory.open(database_url, migrate=False) as store:
        assert [e.version for e in store.read_session("s1")] == [1, 2]
        assert len(store.read_session("s2")) == 1


def test_append_names_every_bad_line_and_writes_nothing(database_url: str,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([
        line(),
        "{not json",
        line(type="no_such_type"),
        line(payload={"role": "robot", "content": "x"}),
        line(occurred_at="yesterday"),
    ]) + "\n", encoding="utf-8")
    out = run_cli("append", str(path), "--url", database_url)
    assert out.returncode == 1
    for number in (2, 3, 4, 5):
        assert f"line {number}:" in out.stderr
    assert "line 1:" not in out.stderr
    assert "nothing was appended" in out.stderr
    with memory.open(database_url, migrate=False) as store:
        assert store.head() == 0


def test_append_retry_is_idempotent(database_url: str) -> None:
    text = line(event_id="00000000-0000-4000-8000-000000000001") + "\n"
    assert run_cli("append", "--url", database_url, stdin=text).returncode == 0
    again = run_cli("append", "--url", database_url, stdin=text)
    assert again.returncode == 0
    assert "1 already present" in again.stdout


def test_db_commands_report_the_embedded_server(server_url: str, memory_home: Path) -> None:
    env = {"MEMORY_HOME": str(memory_home)}
    status = json.loads(run_cli("db", "status", env=env).stdout)
    assert status["running"] is True
    assert status["data_dir"] == str(memory_home / "pgdata")
    url = run_cli("db", "url", env=env)
    assert url.returncode == 0 and url.stdout.strip() == status["url"]


def test_db_url_fails_clearly_when_stopped(tmp_path: Path) -> None:
    out = run_cli("db", "url", env={"MEMORY_HOME": str(tmp_path)})
    assert out.returncode == 1
    assert "not running" in out.stderr


def test_demo_runs_and_is_repeatable(database_url: str) -> None:
    first = run_cli("demo", "--url", database_url)
    assert first.returncode == 0, first.stderr
    assert "== session gear" in first.stdout
    second = run_cli("demo", "--url", database_url)
    assert second.returncode == 0, second.stderr
    assert "0 new" in second.stdout

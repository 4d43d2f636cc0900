"""`memory context`: pretty and JSON output over a real database."""

from __future__ import annotations

import json

import pytest

import memory
from memory import message
from memory.cli import main


def test_context_command(store: memory.Store, database_url: str, embedder,  # type: ignore[no-untyped-def]
                         capsys: pytest.CaptureFixture[str]) -> None:
    store.append("s1", [message("user", "My favourite tea is genmaicha 🍵"),
                        message("assistant", "Roasted rice, nice.")], actor="kim")
    store.project(embedder=embedder)
    store.append("s2", message("user", "Which tea do I like?"), actor="kim")
    assert main(["context", "--url", database_url, "--actor", "kim", "--session", "s2",
                 "--budget", "300", "--json", "Which tea do I like?"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tokens"] <= 300 and data["budget"] == 300
    assert data["messages"][-1] == {"role": "user", "content": "Which tea do I like?"}
    assert "genmaicha 🍵" in data["messages"][0]["content"]
    assert {s["kind"] for s in data["sources"]} == {"turn", "memory"}

    assert main(["context", "--url", database_url, "--actor", "kim", "--session", "s2",
                 "Which tea do I like?"]) == 0
    out = capsys.readouterr().out
    assert "── relevant memories" in out and "── sources" in out and "genmaicha" in out

    assert main(["context", "--url", database_url, "--actor", "kim", "--session", "s2",
                 "--format", "anthropic", "--record", "tea"]) == 0
    assert json.loads(capsys.readouterr().out)["messages"][0]["role"] == "user"
    assert store.read_session("s2")[-1].type == "context_assembled"

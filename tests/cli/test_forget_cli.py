"""`memory forget`: confirmation unless --yes, by actor or by event ids."""

from __future__ import annotations

import argparse
import io

import pytest

import memory
from memory import note
from memory.cli import forget as forget_cli
from memory.log import master_key


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="memory")
    forget_cli.add_commands(parser.add_subparsers())
    return parser.parse_args(list(argv))


def test_forget_asks_before_it_destroys(store: memory.Store, database_url: str) -> None:
    store.append("s", note("keep me unless confirmed"), actor="ann")
    args = parse("forget", "--actor", "ann", "--url", database_url)
    out = io.StringIO()
    assert forget_cli._forget(args, stdin=Terminal("n\n"), stdout=out) == 1
    assert "cannot be undone" in out.getvalue()
    assert forget_cli._forget(args, stdin=io.StringIO(""), stdout=out) == 1  # no terminal
    assert not any(e.forgotten for e in store.read())
    assert forget_cli._forget(args, stdin=Terminal("y\n"), stdout=out) == 0
    assert all(e.forgotten for e in store.read() if e.type == "note")


def test_forget_events_with_yes(store: memory.Store, database_url: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    a, b = store.append("s", [note("one"), note("two")], actor="ann")
    args = parse("forget", "--event", str(a.event_id), "--event", str(b.event_id), "--yes",
                 "--url", database_url)
    assert args.func(args) == 0
    assert "2 event payload(s) destroyed" in capsys.readouterr().out
    assert args.func(args) == 0
    assert "already forgotten" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parse("forget", "--actor", "ann", "--event", str(a.event_id))


def test_keys_generate_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("keys", "generate")
    assert args.func(args) == 0
    key = capsys.readouterr().out.strip()
    assert master_key.MasterKeys.from_text(key).current_id

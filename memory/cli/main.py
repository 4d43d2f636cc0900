"""The `memory` command: the demo, the embedded server, the log, projections, context, forgetting.

Each group of subcommands lives beside the code it drives (``add_commands(subparsers)``);
this module only assembles them, so the CLI stays a thin face over the library.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO

from ..errors import Error, ValidationError
from ..log import NewEvent
from ..pg import embedded
from .context import add_commands as retrieval_commands
from .forget import add_commands as forget_commands
from .mcp import add_commands as mcp_commands
from .options import open_store, store_command
from .projections import add_commands as projection_commands
from .views import add_commands as view_commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Error as exc:
        print(f"memory: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memory", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(metavar="COMMAND")

    with store_command(sub, "demo", _demo,
                       help="append a short conversation and show what memory does"):
        pass  # no arguments but the store's

    dbp = sub.add_parser("db", help="the embedded PostgreSQL server")
    dbp.add_argument("action", choices=["start", "stop", "status", "url"])
    dbp.set_defaults(func=_db)

    with store_command(sub, "append", _append,
                       help="append events given as JSON lines (file or stdin)") as app:
        app.add_argument("file", nargs="?", default="-", help="a .jsonl file, or - for stdin")

    for add_commands in (projection_commands, retrieval_commands, forget_commands,
                         view_commands, mcp_commands):
        add_commands(sub)
    return parser


def _db(args: argparse.Namespace) -> int:
    if args.action == "start":
        print(embedded.start())
    elif args.action == "stop":
        print("stopped" if embedded.stop() else "not running")
    elif args.action == "status":
        print(json.dumps(embedded.status(), indent=2))
    else:
        status = embedded.status()
        if not status["running"]:
            print("memory: the embedded server is not running (memory db start)",
                  file=sys.stderr)
            return 1
        print(status["url"])
    return 0


# -- append ------------------------------------------------------------------------

_LINE_KEYS = {"session_id", "actor_id", "type", "payload", "event_id", "metadata",
              "occurred_at", "schema_version", "expected_version"}


def parse_line(line: str, number: int) -> tuple[str, str, NewEvent, int | None]:
    """One JSON line -> (session, actor, event, expected_version); errors name the line."""
    def fail(message: str) -> ValidationError:
        return ValidationError(message, index=number, field=None)

    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise fail(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise fail("each line must be a JSON object")
    unknown = sorted(set(obj) - _LINE_KEYS)
    if unknown:
        raise fail(f"unknown keys {unknown}; allowed: {sorted(_LINE_KEYS)}")
    for key in ("session_id", "actor_id", "type", "payload"):
        if key not in obj:
            raise fail(f"missing {key!r}")
    occurred = obj.get("occurred_at")
    if occurred is not None:
        try:
            occurred = datetime.fromisoformat(occurred)
        except (TypeError, ValueError):
            raise fail("occurred_at must be an ISO 8601 timestamp with a zone") from None
    event = NewEvent(type=obj["type"], payload=obj["payload"], event_id=obj.get("event_id"),
                     metadata=obj.get("metadata") or {}, occurred_at=occurred,
                     schema_version=obj.get("schema_version"))
    return obj["session_id"], obj["actor_id"], event, obj.get("expected_version")


def read_lines(stream: TextIO) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line


def _append(args: argparse.Namespace) -> int:
    stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    with stream:
        parsed, errors = [], []
        for number, line in read_lines(stream):
            try:
                parsed.append((number, *parse_line(line, number)))
            except ValidationError as exc:
                errors.append(f"line {number}: {exc.reason}")
    with open_store(args) as store:
        for number, _session, actor, event, _ in parsed:
            try:  # validate everything before writing anything
                store.log.prepare(actor, [event])
            except ValidationError as exc:
                errors.append(f"line {number}: {exc.reason}"
                              + (f" ({exc.field})" if exc.field else ""))
        if errors:
            errors.sort(key=lambda e: int(e.split(":")[0].split()[1]))
            print("\n".join(errors), file=sys.stderr)
            print(f"memory: {len(errors)} bad line(s); nothing was appended", file=sys.stderr)
            return 1
        written = duplicates = 0
        for batch, session, actor, expected in _batches(parsed):
            for result in store.append(session, batch, actor=actor, expected_version=expected):
                duplicates += result.duplicate
                written += not result.duplicate
    print(f"appended {written} event(s)" + (f", {duplicates} already present" if duplicates
                                             else ""))
    return 0


def _batches(parsed: list[tuple[Any, ...]]) -> Iterator[tuple[list[NewEvent], str, str, Any]]:
    """Consecutive lines of one session (and no new expectation) go in one atomic batch."""
    batch: list[NewEvent] = []
    key: tuple[str, str] | None = None
    expected = None
    for _number, session, actor, event, line_expected in parsed:
        if batch and ((session, actor) != key or line_expected is not None):
            yield batch, key[0], key[1], expected  # type: ignore[index]
            batch = []
        if not batch:
            key, expected = (session, actor), line_expected
        batch.append(event)
    if batch:
        yield batch, key[0], key[1], expected  # type: ignore[index]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""`memory forget` and `memory keys`: forgetting an actor or events, and master-key care.

Wired into the `memory` command by memory/cli/main.py through :func:`add_commands`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from .options import add_server_options, open_store, store_command

if TYPE_CHECKING:
    from ..erasure import Erasure


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    with store_command(subparsers, "forget", _forget, help="erase an actor, or single "
                       "events, and everything derived from them") as p:
        what = p.add_mutually_exclusive_group(required=True)
        what.add_argument("--actor", help="forget every event of this actor (in --tenant)")
        what.add_argument("--event", action="append", metavar="ID",
                          help="forget this event (repeat for several)")
        what.add_argument("--erase-pending", action="store_true",
                          help="only complete the physical erasure of earlier forgets "
                               "(rewrite the key tables, vacuum the derived ones); needs "
                               "the owner's URL")
        p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        p.add_argument("--no-erase", dest="erase", action="store_false",
                       help="skip the physical erasure (it stays pending; see "
                            "--erase-pending)")
        p.add_argument("--rewrite-derived", action="store_true",
                       help="rewrite the derived tables too (VACUUM FULL): no freed space "
                            "left holding their text, but reads of them wait during the "
                            "rewrite")
        p.add_argument("--flush-wal", action="store_true",
                       help="after erasing, CHECKPOINT and switch WAL segments so the WAL "
                            "that still holds the forgotten bytes is recycled sooner")

    k = subparsers.add_parser("keys", help="the master key (encryption at rest)")
    ks = k.add_subparsers(metavar="ACTION", dest="keys_action", required=True)
    ks.add_parser("generate", help="print a new master key (for MEMORY_MASTER_KEY)"
                  ).set_defaults(func=_keys_generate)
    with store_command(ks, "rotate", _keys_rotate, options=add_server_options,
                       help="re-wrap every data key under the first key of "
                            "MEMORY_MASTER_KEY"):
        pass  # no arguments but the server's


def _confirm(question: str, stdin: TextIO, stdout: TextIO) -> bool:
    if not stdin.isatty():
        print(f"{question} refused: not a terminal; pass --yes to confirm", file=sys.stderr)
        return False
    stdout.write(f"{question} [y/N] ")
    stdout.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


def _forget(args: argparse.Namespace, stdin: TextIO | None = None,
            stdout: TextIO | None = None) -> int:
    """Destroy the keys of an actor's events (or of single events), delete every chunk,
    vector, summary and recorded context derived from them, and append a 'forgotten'
    tombstone. The log itself is never rewritten. This cannot be undone."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if args.erase_pending:
        return _erase_pending(args, stdout)
    target = (f"every event of actor {args.actor!r}" if args.actor is not None
              else f"{len(args.event)} event(s)")
    if not args.yes and not _confirm(
            f"Forget {target} in tenant {args.tenant!r}? This cannot be undone.",
            stdin, stdout):
        return 1
    with open_store(args) as store:
        result = store.forget(actor=args.actor, event_ids=args.event, erase=args.erase,
                              flush_wal=args.flush_wal,
                              rewrite_derived=args.rewrite_derived)
    if result.already_forgotten:
        print(f"{target}: already forgotten, nothing left to destroy", file=stdout)
        _print_erasure(result.erasure, stdout)
        return 0
    parts = []
    if result.actor_id is not None:
        parts.append(f"actor {result.actor_id!r}: key destroyed ({result.actor_events} "
                     "events)")
    if result.event_ids:
        parts.append(f"{len(result.event_ids)} event payload(s) destroyed")
    parts.append(f"{result.derived_rows} derived rows deleted")
    print(f"forgotten (request {result.request_id}): " + "; ".join(parts), file=stdout)
    _print_erasure(result.erasure, stdout)
    return 0


def _print_erasure(erasure: Erasure | None, stdout: TextIO) -> None:
    if erasure is None:
        print("physical erasure: skipped (pending; run `memory forget --erase-pending` "
              "with the owner's URL)", file=stdout)
    elif erasure.done:
        wal = "; WAL switched and checkpointed" if erasure.wal_flushed else ""
        print(f"physical erasure: done in {erasure.seconds:.2f} s (key tables rewritten, "
              f"derived tables vacuumed{wal})", file=stdout)
    else:
        print(f"physical erasure: pending: {erasure.reason}", file=stdout)


def _erase_pending(args: argparse.Namespace, stdout: TextIO) -> int:
    from .. import erasure
    from ..pg import make_engine, resolve_url

    engine = make_engine(resolve_url(args.url))
    try:
        result = erasure.erase(engine, flush_wal=args.flush_wal,
                               rewrite_derived=args.rewrite_derived)
    finally:
        engine.dispose()
    _print_erasure(result, stdout)
    return 0 if result.done else 1


def _keys_generate(args: argparse.Namespace) -> int:
    from ..log import generate_master_key

    print(generate_master_key())
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    """Set MEMORY_MASTER_KEY=NEW,OLD and run this: every data key is re-wrapped under NEW
    (the event log is not touched). Then drop OLD. Needs a connection that sees every
    tenant (the owner or a BYPASSRLS role)."""
    from ..log import MasterKeys, rotate_master_key
    from ..pg import make_engine, resolve_url

    engine = make_engine(resolve_url(args.url))
    try:
        master = MasterKeys.from_environment(create=False)
        n = rotate_master_key(engine, master)
    finally:
        engine.dispose()
    print(f"{n} data key(s) re-wrapped under master key {master.current_id}")
    return 0

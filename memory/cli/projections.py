"""`memory project [NAME...] [--follow]`, `memory reproject NAME [--model PATH]` and
`memory quarantine list|retry` (events a projection could not process).

Wired into the `memory` command by ``add_commands(subparsers)`` (memory/cli/main.py).

Exit codes: 0 done; 1 an error (printed); 3 done, but events were quarantined: by this
run of `memory project` / `reproject`, or, for `memory quarantine retry`, still failing.
Quarantined events left unresolved by earlier runs are mentioned, not counted: a poison
event the operator cannot fix (a forged ciphertext) would otherwise fail every later run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..projections import DEFAULT_BATCH_SIZE, DEFAULT_NAMES, RunSummary
from ..projections.quarantine import QuarantinedEvent
from .options import add_server_options, store_command

QUARANTINED_EXIT = 3


def _projector_options(p: argparse.ArgumentParser) -> None:
    # Projections run over every tenant of the database, so no --tenant here.
    add_server_options(p)
    p.add_argument("--model", metavar="PATH",
                   help="a local sentence-transformers model folder (default: the packaged "
                        "all-MiniLM-L6-v2); must be the model the live generation was built "
                        "with, except for reproject")
    p.add_argument("--embedder", choices=("onnx", "onnx-int8", "torch"),
                   help="the backend that runs the model (default: MEMORY_EMBEDDER, else "
                        "onnx); onnx-int8 is another model as far as stored vectors go, so "
                        "moving to or from it goes through reproject")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"events per transaction (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--no-wait", action="store_true",
                   help="exit at once if another runner holds the projection (default: wait)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_commands(subparsers: Any) -> None:
    with store_command(subparsers, "project", run_project, options=_projector_options,
                       help="bring projections (chunks, summaries) up to the head of the "
                            "log") as project:
        project.add_argument("names", nargs="*", metavar="NAME",
                             help=f"projections to run (default: {' '.join(DEFAULT_NAMES)})")
        project.add_argument("--follow", action="store_true",
                             help="keep following the log after catching up")
        project.add_argument("--poll-interval", type=float, default=1.0,
                             help="seconds between polls when no NOTIFY arrives (default 1)")

    with store_command(subparsers, "reproject", run_reproject, options=_projector_options,
                       help="rebuild a projection from position 0 beside the live one, "
                            "then switch (e.g. after changing the model)") as reproject:
        reproject.add_argument("name", metavar="NAME", choices=list(DEFAULT_NAMES))

    quarantine = subparsers.add_parser(
        "quarantine", help="list or retry the events a projection could not process",
        description="Events a projection could not decode or apply are quarantined (with "
                    "their error) and the projection goes on without them. List them, fix "
                    "the cause, then retry: an event that applies is marked resolved.")
    actions = quarantine.add_subparsers(metavar="ACTION", required=True)
    with store_command(actions, "list", run_quarantine_list, options=add_server_options,
                       help="the quarantined events, oldest first") as listing:
        listing.add_argument("--projection", metavar="NAME", help="only this projection's")
        listing.add_argument("--all", action="store_true", help="resolved ones too")

    with store_command(actions, "retry", run_quarantine_retry, options=_projector_options,
                       help="apply quarantined events again through their projection"
                       ) as retry:
        retry.add_argument("ids", nargs="*", type=int, metavar="ID",
                           help="entries to retry (the # of `memory quarantine list`)")
        retry.add_argument("--all", action="store_true", help="every unresolved entry")
        retry.add_argument("--projection", metavar="NAME",
                           help="with --all: only this one's")


def _projector(args: argparse.Namespace) -> Any:
    from ..embedding import load_embedder
    from ..store import Store

    store = Store.open(args.url)
    embedder = load_embedder(args.model, args.embedder) \
        if args.model or args.embedder else None
    return store, store.projector(embedder=embedder, batch_size=args.batch_size,
                                  wait=not args.no_wait,
                                  progress=False if args.no_progress else None)


def run_project(args: argparse.Namespace) -> int:
    """Bring projections up to the head of the log (building them the first time), or keep
    them following it with --follow (Ctrl-C or SIGTERM stops cleanly after the batch in
    flight)."""
    store, projector = _projector(args)
    names = args.names or None
    for n in names or []:
        projector.projection(n)  # unknown names fail before any work
    try:
        if args.follow:
            print(f"following the log with {', '.join(names or projector.names())} "
                  "(Ctrl-C to stop)", file=sys.stderr)
            results = projector.follow(names, poll_interval=args.poll_interval)
        else:
            results = projector.catch_up(names)
        return _report(results, projector)
    finally:
        store.close()


def _report(results: list[RunSummary], projector: Any) -> int:
    """Print the run's summaries and what it quarantined; exit code 3 if anything was."""
    for r in results:
        print(r)
        for q in r.quarantined:
            print(f"  quarantined {q}")
    new = {q.id for r in results for q in r.quarantined}
    older = [q for q in projector.quarantined() if q.id not in new]
    if older:
        print(f"{len(older)} event(s) quarantined by earlier runs are still unresolved "
              "(`memory quarantine list`)", file=sys.stderr)
    if new:
        print(f"{len(new)} event(s) quarantined in this run: the projections went on "
              "without them; see `memory quarantine list`, fix the cause, then "
              "`memory quarantine retry ID` (or --all)", file=sys.stderr)
        return QUARANTINED_EXIT
    return 0


def _print_entries(entries: list[QuarantinedEvent]) -> None:
    for q in entries:
        print(q)


def run_quarantine_list(args: argparse.Namespace) -> int:
    from ..projections.quarantine import entries
    from ..store import Store

    store = Store.open(args.url)
    try:
        with store.maintenance_engine.connect() as conn:
            found = entries(conn, projection=args.projection, unresolved=not args.all)
    finally:
        store.close()
    _print_entries(found)
    if not found:
        print("no quarantined events" if args.all else "no unresolved quarantined events",
              file=sys.stderr)
    return 0


def run_quarantine_retry(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all):
        print("memory: give the IDs to retry, or --all", file=sys.stderr)
        return 2
    store, projector = _projector(args)
    try:
        done = projector.retry(args.ids or None, projection=args.projection)
    finally:
        store.close()
    _print_entries(done)
    failing = [q for q in done if not q.resolved]
    print(f"{len(done) - len(failing)} resolved, {len(failing)} still quarantined",
          file=sys.stderr)
    return QUARANTINED_EXIT if failing else 0


def run_reproject(args: argparse.Namespace) -> int:
    """Rebuild NAME from position 0 into a new generation while the live one keeps serving
    reads, then switch atomically. An interrupted reproject resumes where it stopped when
    run again."""
    store, projector = _projector(args)  # with --model, the projector embeds with it
    try:
        result = projector.reproject(args.name)
        code = _report([result], projector)
    finally:
        store.close()
    if not result.switched:
        print("not switched: " + "; ".join(result.notes), file=sys.stderr)
        return 1
    return code

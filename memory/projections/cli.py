"""`memory project [NAME...] [--follow]` and `memory reproject NAME [--model PATH]`.

Wired into the `memory` command by ``add_commands(subparsers)`` (memory/cli.py).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..cli_options import add_store_options
from . import DEFAULT_NAMES
from .runner import DEFAULT_BATCH_SIZE


def _store_options(p: argparse.ArgumentParser) -> None:
    # Projections run over every tenant of the database, so no --tenant here.
    add_store_options(p, tenant=False)
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
    project = subparsers.add_parser(
        "project", help="bring projections (chunks, summaries) up to the head of the log",
        description="Bring projections up to the head of the log (building them the first "
                    "time), or keep them following it with --follow (Ctrl-C or SIGTERM stops "
                    "cleanly after the batch in flight).")
    project.add_argument("names", nargs="*", metavar="NAME",
                         help=f"projections to run (default: {' '.join(DEFAULT_NAMES)})")
    project.add_argument("--follow", action="store_true",
                         help="keep following the log after catching up")
    project.add_argument("--poll-interval", type=float, default=1.0,
                         help="seconds between polls when no NOTIFY arrives (default 1)")
    _store_options(project)
    project.set_defaults(func=run_project)

    reproject = subparsers.add_parser(
        "reproject", help="rebuild a projection from position 0 beside the live one, "
                          "then switch (e.g. after changing the model)",
        description="Rebuild NAME from position 0 into a new generation while the live one "
                    "keeps serving reads, then switch atomically. An interrupted reproject "
                    "resumes where it stopped when run again.")
    reproject.add_argument("name", metavar="NAME", choices=list(DEFAULT_NAMES))
    _store_options(reproject)
    reproject.set_defaults(func=run_reproject)


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
    finally:
        store.close()
    for r in results:
        print(r)
    return 0


def run_reproject(args: argparse.Namespace) -> int:
    store, projector = _projector(args)  # with --model, the projector embeds with it
    try:
        result = projector.reproject(args.name)
    finally:
        store.close()
    print(result)
    if not result.switched:
        print("not switched: " + "; ".join(result.notes), file=sys.stderr)
        return 1
    return 0

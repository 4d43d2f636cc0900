"""`memory fork`, `memory retract` and `memory log`: branching a session, withdrawing
events, and showing a session's view (memory/log/views.py).

Wired into the `memory` command by memory/cli/main.py through :func:`add_commands`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from ..log import FORK_TYPE, RETRACT_TYPE, SessionView, ViewEntry
from .options import open_store, store_command


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    with store_command(subparsers, "fork", _fork, help="start a session as a branch of "
                       "another at one of its versions") as f:
        f.add_argument("session", help="the parent session")
        f.add_argument("--at", type=int, required=True, metavar="N",
                       help="the parent's version the branch is rooted at")
        f.add_argument("--new", required=True, metavar="SESSION", help="the new session")
        f.add_argument("--actor", required=True, help="the actor both sessions belong to")

    with store_command(subparsers, "retract", _retract, help="hide events from a "
                       "session's view, turns and memories") as r:
        r.add_argument("session")
        r.add_argument("--actor", required=True)
        what = r.add_mutually_exclusive_group(required=True)
        what.add_argument("--event", action="append", metavar="ID",
                          help="an event of the view to hide (repeat for several)")
        what.add_argument("--last", type=int, metavar="N", help="the last N visible items")
        what.add_argument("--all", action="store_true", help="every visible item")
        r.add_argument("--reason", default="", help="why (stored in clear: no personal data)")

    with store_command(subparsers, "log", _log, help="a session's view: each event's "
                       "origin, and what is hidden") as lg:
        lg.add_argument("session")
        lg.add_argument("--as-of", type=int, metavar="POSITION",
                        help="the view as the log stood at this position")
        lg.add_argument("--visible", action="store_true", help="leave hidden events out")
        lg.add_argument("--json", action="store_true", help="one JSON object per event")


def _fork(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Append a session_forked event as version 1 of NEW: its view is SESSION's view up to
    SESSION's own version --at, then NEW's own events. Nothing is copied."""
    out = out or sys.stdout
    with open_store(args) as store:
        done = store.fork(args.session, at_version=args.at, new_session=args.new,
                          actor=args.actor)
    print(f"{args.new}: branch of {args.session} at version {args.at} (fork event "
          f"{done.event_id} at position {done.position})", file=out)
    return 0


def _retract(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Append an events_retracted event: the events named are hidden from the session's
    view, its recent turns and its memories from then on. Nothing is erased (see `memory
    forget`); a view as of an earlier position still shows them. The reason is stored in
    clear."""
    out = out or sys.stdout
    with open_store(args) as store:
        done = store.retract(args.session, actor=args.actor, event_ids=args.event,
                             last=args.last, all=args.all, reason=args.reason)
        event = store.view(args.session, as_of=done.position).entries[-1].event
    ids = event.payload.get("event_ids", [])
    print(f"{args.session}: {len(ids)} event(s) hidden from position {done.position} on "
          f"(retraction {done.event_id})", file=out)
    for eid in ids:
        print(f"  {eid}", file=out)
    return 0


def _log(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the session's view in order: position, origin session and version, type, and
    the text; events hidden by a retraction are marked with the retraction that hides
    them."""
    out = out or sys.stdout
    with open_store(args) as store:
        view = store.view(args.session, as_of=args.as_of)
    print_view(view, out, visible_only=args.visible, as_json=args.json)
    return 0


def describe(entry: ViewEntry) -> str:
    """One line of text for an event of a view."""
    e = entry.event
    p = e.payload or {}
    if e.forgotten:
        return "(forgotten)"
    if e.type == FORK_TYPE:
        return f"fork of {p.get('parent_session_id')} at version {p.get('parent_version')}"
    if e.type == RETRACT_TYPE:
        reason = f" ({p['reason']})" if p.get("reason") else ""
        return f"hides {len(p.get('event_ids', []))} event(s){reason}"
    for key in ("content", "text", "name"):
        if isinstance(p.get(key), str):
            role = p.get("role")
            return (f"{role}: " if isinstance(role, str) else "") + p[key]
    return json.dumps(p, ensure_ascii=False, default=str)


def print_view(view: SessionView, out: TextIO, *, visible_only: bool = False,
               as_json: bool = False) -> None:
    if not view.entries:
        print(f"{view.session_id}: no events", file=out)
        return
    hidden = 0
    for en in view.entries:
        if en.hidden:
            hidden += 1
            if visible_only:
                continue
        e = en.event
        if as_json:
            print(json.dumps({
                "position": e.position, "session_id": e.session_id, "version": e.version,
                "event_id": str(e.event_id), "type": e.type, "inherited": en.inherited,
                "hidden_by": str(en.hidden_by.event_id) if en.hidden_by else None,
                "payload": e.payload}, ensure_ascii=False, default=str), file=out)
            continue
        origin = f"{e.session_id}@{e.version}"
        mark = f"  [hidden by {en.hidden_by.event_id}]" if en.hidden_by else ""
        text = describe(en).replace("\n", " ")
        if len(text) > 100:
            text = text[:99] + "…"
        print(f"{e.position:>8}  {origin:<24} {e.type:<17} {text}{mark}", file=out)
    if not as_json:
        ancestors = " <- ".join(f"{s.session_id}@{s.upto}" for s in view.segments[1:])
        print(f"-- {len(view.entries) - hidden} visible, {hidden} hidden"
              + (f"; inherits {ancestors}" if ancestors else ""), file=out)

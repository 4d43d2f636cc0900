"""`memory context --actor A --session S "question"`: the context the next model call gets.

Wired into the `memory` command by ``add_commands(subparsers)`` (memory/cli/main.py). Pretty
output marks every piece with its source; ``--json`` prints the whole context (messages,
sources with their score parts, timings).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from .options import open_store, store_command

DEFAULT_BUDGET = 2000


def add_commands(subparsers: Any) -> None:
    with store_command(subparsers, "context", run_context, help="show the context built "
                       "for a query (recent turns, summary, memories)") as p:
        p.add_argument("query", help="the query (usually the newest user message)")
        p.add_argument("--actor", required=True, help="whose memory")
        p.add_argument("--session", required=True, help="the session the call is for")
        p.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                       help=f"token budget (default {DEFAULT_BUDGET})")
        p.add_argument("--as-of", type=int, metavar="POSITION",
                       help="the context as it was when the log ended at POSITION")
        p.add_argument("--strong", action="store_true",
                       help="catch the projections up before searching")
        p.add_argument("--also-actor", action="append", default=[], metavar="ACTOR",
                       help="also search this actor's memories (repeatable)")
        p.add_argument("--record", action="store_true",
                       help="append a context_assembled event (audit; replayable)")
        p.add_argument("--format", choices=["pretty", "openai", "anthropic", "text"],
                       default="pretty", help="how to print (default: pretty, with sources)")
        p.add_argument("--json", action="store_true", help="the whole context as JSON")


def run_context(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Build the context the next model call would get for ACTOR in SESSION: recent turns
    verbatim, the session summary when older turns do not fit, and the memories most
    relevant to QUERY, within --budget tokens."""
    out = out or sys.stdout
    with open_store(args) as store:
        ctx = store.context(args.query, actor=args.actor, session=args.session,
                            budget=args.budget, as_of=args.as_of, strong=args.strong,
                            actors=args.also_actor, record=args.record)
    if args.json:
        json.dump(ctx.to_dict(), out, ensure_ascii=False, indent=2, default=str)
        out.write("\n")
    elif args.format == "openai":
        json.dump(ctx.messages(), out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif args.format == "anthropic":
        system, messages = ctx.anthropic()
        json.dump({"system": system, "messages": messages}, out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif args.format == "text":
        out.write(ctx.text() + "\n")
    else:
        out.write(pretty(ctx) + "\n")
    return 0


def pretty(ctx: Any) -> str:
    """The context for a person: each piece with a [n] mark and, below, what [n] is."""
    lines = [f"context for actor {ctx.scope.actor!r}, session {ctx.scope.session!r}: "
             f"{ctx.tokens}/{ctx.budget} tokens ({ctx.counter}), log position {ctx.position}"]
    marks = {}
    for i, s in enumerate(ctx.sources, start=1):
        marks[(s.kind, s.position, s.chunk_index)] = i
    if ctx.summary is not None:
        n = marks.get(("summary", ctx.summary.covers_position, None))
        lines += ["", f"── summary of the earlier part [{n}]", ctx.summary.text]
    if ctx.memories:
        lines += ["", "── relevant memories (oldest first)"]
        for m in ctx.memories:
            n = marks.get((m.kind, m.position, m.chunk_index))
            date = m.occurred_at.strftime(ctx.settings.date_format)
            lines.append(f"[{n}] {date} {m.author or m.role}: {m.text}")
    if ctx.turns:
        lines += ["", "── recent turns (verbatim)"]
        for t in ctx.turns:
            n = marks.get(("turn", t.position, None))
            lines.append(f"[{n}] {t.role}: {t.content}")
    if not (ctx.summary or ctx.memories or ctx.turns):
        lines += ["", "(nothing: no turns in this session and no memories for this actor)"]
    lines += ["", "── sources"]
    for i, s in enumerate(ctx.sources, start=1):
        ev = str(s.event_id) if s.event_id else f"{len(s.event_ids)} events"
        lines.append(f"[{i}] {s.kind} event {ev} @ {s.position}, {s.tokens} tokens: {s.reason}")
    t = ctx.timings
    lines.append(f"\n{t.get('total_ms', 0):.1f} ms (embed {t.get('embed_ms', 0):.1f}, "
                 f"search {t.get('search_ms', 0):.1f}, assemble {t.get('assemble_ms', 0):.1f})")
    return "\n".join(lines)

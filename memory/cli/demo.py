"""`memory demo`: a short multi-session conversation, written to the log and read back.

The conversation is the project's own writing. Event ids are derived from the line, so
running the demo twice is an idempotent retry, not a second copy.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from typing import Any

from ..log import message, note

DEMO_NAMESPACE = uuid.UUID("6f1c2d7e-0b1a-4c3e-9d52-1a2b3c4d5e6f")

SESSIONS: list[tuple[str, datetime, list[tuple[str, str]]]] = [
    ("trip-planning", datetime(2026, 3, 2, 18, 5, tzinfo=UTC), [
        ("user", "I'm planning a walking holiday in the Picos de Europa for late May."),
        ("assistant", "Lovely choice. How many days do you have, and do you prefer huts "
                      "or village guesthouses?"),
        ("user", "Eight days. Guesthouses please, I sleep badly in dormitories."),
        ("user", "Also, I'm vegetarian and I can't eat walnuts, they make me ill."),
        ("assistant", "Noted: vegetarian, no walnuts. I'd base you in Sotres and Cain."),
    ]),
    ("gear", datetime(2026, 4, 11, 9, 30, tzinfo=UTC), [
        ("user", "My old boots split on the last trip. Which boots would you suggest?"),
        ("assistant", "For limestone trails, a stiff mid-cut boot with a Vibram sole. "
                      "Break them in for at least three weeks."),
        ("user", "I bought the Lowa Renegade in size 39 yesterday."),
        ("user", "My sister Ines might join for the first three days."),
    ]),
    ("packing", datetime(2026, 5, 20, 20, 0, tzinfo=UTC), [
        ("user", "Leaving on Saturday! Can you check my packing list?"),
        ("assistant", "Send it over and I'll compare it with the forecast for Sotres."),
    ]),
]

QUESTIONS = [
    "What food should the guesthouse know about?",
    "Which boots did I buy?",
    "Who is coming with me on the trip?",
]

ACTOR = "maya"


def events_for(session: str, start: datetime, turns: list[tuple[str, str]]) -> list:
    out = []
    for i, (role, text) in enumerate(turns):
        event_id = uuid.uuid5(DEMO_NAMESPACE, f"{session}/{i}")
        when = start.replace(minute=(start.minute + i) % 60)
        out.append(message(role, text, event_id=event_id, occurred_at=when))
    return out


def run(args: argparse.Namespace) -> int:
    from ..store import Store

    tenant = args.tenant if args.tenant != "default" else "demo"
    with Store.open(args.url, tenant=tenant) as store:
        print(f"memory demo: tenant {tenant!r}, actor {ACTOR!r}\n")
        for session, start, turns in SESSIONS:
            results = store.append(session, events_for(session, start, turns), actor=ACTOR)
            fresh = sum(not r.duplicate for r in results)
            print(f"appended {len(results)} events to {session!r} "
                  f"({fresh} new, {len(results) - fresh} already in the log)")
        store.append("trip-notes", note("Maya is vegetarian and allergic to walnuts.",
                                        event_id=uuid.uuid5(DEMO_NAMESPACE, "note/0"),
                                        occurred_at=datetime(2026, 3, 2, 18, 30, tzinfo=UTC)),
                     actor=ACTOR)
        print()
        for session, _start, _turns in SESSIONS:
            events = store.read_session(session)
            print(f"== session {session} ({len(events)} events)")
            for e in events:
                stamp = e.occurred_at.strftime("%Y-%m-%d %H:%M")
                print(f"  #{e.position:<4} v{e.version} {stamp} {e.payload['role']:>9}: "
                      f"{e.payload['content']}")
        print(f"\nlog head: position {store.head()}")
        show_projections(store)
        show_contexts(store)
    return 0


def show_projections(store: Any) -> None:
    print("\n== projections (chunks with embeddings and full text, session summaries)")
    for run in store.project():
        print(f"  {run.name}: generation {run.generation}, {run.events} new events, "
              f"{run.rows} rows written, at position {run.position}")


def show_contexts(store: Any) -> None:
    """The context the next model call would get, asked from the newest session."""
    for question in QUESTIONS:
        ctx = store.context(question, actor=ACTOR, session="packing", budget=260)
        print(f"\n== context for {question!r}: {ctx.tokens}/{ctx.budget} tokens")
        for turn in ctx.turns:
            print(f"  recent  #{turn.position:<4} {turn.role}: {turn.content}")
        for mem in sorted(ctx.memories, key=lambda m: m.rank)[:3]:
            print(f"  memory  #{mem.position:<4} [{mem.occurred_at:%Y-%m-%d}, {mem.session_id}, "
                  f"score {mem.score:.2f}] {mem.text}")

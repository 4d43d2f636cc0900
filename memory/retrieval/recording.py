"""Recording a context in the log: a ``context_assembled`` event holding what a replay needs
(query, budget, bound, settings, counter, projection pins) and the digest of the messages
it must reproduce."""

from __future__ import annotations

from ..log import Appended, NewEvent
from .result import Context
from .store_view import StoreView

CONTEXT_EVENT = "context_assembled"
"""The event type of a recorded context (forgetting an event also forgets the recorded
contexts that cited it: ``memory/forget.py`` looks them up by this type)."""


def record(store: StoreView, ctx: Context) -> Appended:
    """Append ``ctx`` to its session as a ``context_assembled`` event, in the actor's name."""
    payload = {
        "query": ctx.query, "budget": ctx.budget, "as_of": ctx.position,
        "actors": list(ctx.scope.actors), "settings": ctx.settings.to_dict(),
        "counter": ctx.counter, "tokens": ctx.tokens, "pins": ctx.pins,
        "source_event_ids": list(dict.fromkeys(
            str(e) for s in ctx.sources for e in ((s.event_id,) if s.event_id else s.event_ids))),
        "sources": [{"kind": s.kind, "event_id": str(s.event_id) if s.event_id else None,
                     "position": s.position, "chunk_index": s.chunk_index}
                    for s in ctx.sources],
        "messages_sha256": ctx.digest(),
    }
    appended = store.append(ctx.scope.session, NewEvent(CONTEXT_EVENT, payload),
                            actor=ctx.scope.actor)
    return appended[0]

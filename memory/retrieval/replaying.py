"""Rebuilding a recorded context (a ``context_assembled`` event) from the log, and refusing
one that was forgotten since."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigurationError, ForgottenError, ValidationError
from ..log import RecordedEvent
from .context import build_context
from .ranking import Ranker
from .recording import CONTEXT_EVENT
from .result import Context
from .settings import RetrievalSettings
from .store_view import StoreView
from .tokens import TokenCounter, default_counter

if TYPE_CHECKING:
    from ..embedding import Embedder


def replay(store: StoreView, event: RecordedEvent, *, counter: TokenCounter | None = None,
           embedder: Embedder | None = None, ranker: Ranker | None = None) -> Context:
    """Rebuild a recorded context from the log: same query, budget, settings, bound and
    projection generations. ``replay_matches`` tells whether the messages are identical
    to the recorded ones (they are, unless the recorded generation was re-built with other
    content or another counter, embedder or ranker is given)."""
    if event.type != CONTEXT_EVENT:
        raise ValidationError(f"not a {CONTEXT_EVENT} event: {event.type}", field="type")
    if event.tenant != store.tenant:
        raise ValidationError("the event belongs to another tenant", field="tenant")
    _refuse_forgotten(store, event)
    p = event.payload
    counter = counter or default_counter()
    if counter.name != p["counter"]:
        raise ConfigurationError(f"the context was counted with {p['counter']!r}; replay "
                                 f"with that counter, not {counter.name!r}")
    ctx = build_context(store, p["query"], actor=event.actor_id, session=event.session_id,
                        budget=p["budget"], settings=RetrievalSettings.from_dict(p["settings"]),
                        as_of=p["as_of"], actors=p["actors"], counter=counter,
                        embedder=embedder, ranker=ranker, _pins=p["pins"])
    ctx.replay_matches = ctx.digest() == p["messages_sha256"]
    return ctx


def _refuse_forgotten(store: StoreView, event: RecordedEvent) -> None:
    """A context forgotten since it was read (a copy held by the caller still has its
    payload) is refused like one read after: forgetting an event forgets the contexts
    that cited it (memory/forget.py), and a replay would rebuild what they said."""
    now = store.log.read_session(store.tenant, event.session_id, event.version)[:1]
    if not now or now[0].event_id != event.event_id:
        raise ValidationError(f"event {event.event_id} is not in this tenant's log",
                              field="event_id")
    if event.forgotten or now[0].forgotten:
        raise ForgottenError(
            f"recorded context {event.event_id} was forgotten (it, or an event it cited, "
            "was erased by forget); it cannot be replayed", event_id=str(event.event_id))

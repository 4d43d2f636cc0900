"""The OpenAI Agents SDK (``pip install 'memory-pg[openai-agents]'``) with a store as its
memory: :class:`MemorySession` is the SDK's ``Session`` (the conversation history the
Runner reads and extends) and :class:`LongTermMemory` gives an ``Agent`` what the store
remembers for the current input (dynamic instructions and a recall tool, with sources).

Items are events of the log, in order (memory/integrations/agent_items.py says how each
SDK item maps to a typed event). History is never rewritten: ``pop_item`` and
``clear_session`` append a retraction (``Store.retract``) that the session's view honours,
so ``store.view(session, as_of=...)`` still shows what the session held before; erasing
the text itself is ``store.forget``.

Faces: these adapters call the sync :class:`memory.Store` through
``asyncio.to_thread`` (the store is thread-safe), so one session object works from any
event loop: ``Runner.run``, ``Runner.run_sync``, several threads each with its own loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agents import Agent, FunctionTool, RunContextWrapper, function_tool
from agents.memory import SessionSettings
from agents.memory.session_settings import coerce_session_settings, resolve_session_limit

from ..errors import ConcurrencyError, RetractionError, UnknownSession
from ..retrieval import DEFAULT_SETTINGS, Context, RetrievalSettings
from ..retrieval.render import system_text
from ..store import Store
from .agent_items import from_event, is_item, text_of, to_event

__all__ = ["LongTermMemory", "MemorySession"]

_T = TypeVar("_T")
POP_ATTEMPTS = 64
"""How often a pop reads the session again when concurrent pops took its last item."""


async def _finish(call: Callable[[], _T]) -> _T:
    """Run a write in a thread and wait for its outcome even if the caller is cancelled
    meanwhile (the write cannot be stopped halfway; the caller learns of the cancellation
    once it is done), as the SDK's own sessions do."""
    task = asyncio.ensure_future(asyncio.to_thread(call))
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    if cancelled is not None:
        raise cancelled
    return task.result()


class MemorySession:
    """The SDK's ``Session`` protocol on a store: the history of ``session_id``, a
    session of the log that belongs to ``actor``.

    ``session_settings`` (the SDK's ``SessionSettings`` or a dict, e.g. ``{"limit": 20}``)
    bounds what ``get_items()`` returns when no limit is passed, as in the SDK's own
    sessions."""

    session_settings: SessionSettings | None = None

    def __init__(self, session_id: str, store: Store, *, actor: str,
                 session_settings: SessionSettings | dict[str, Any] | None = None) -> None:
        self.session_id = session_id
        self.store = store
        self.actor = actor
        self.session_settings = (coerce_session_settings(session_settings)
                                 if session_settings is not None else SessionSettings())

    # -- the protocol -------------------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[Any]:
        """The latest ``limit`` items in order (all when None and the settings set no
        limit; none for 0; all for a negative limit, as the SDK's SQLite session)."""
        return await asyncio.to_thread(self.items, limit)

    async def add_items(self, items: list[Any]) -> None:
        """Append ``items`` in order, in one batch (one transaction)."""
        if items:
            await _finish(lambda: self.append(items))

    async def pop_item(self) -> Any | None:
        """Hide the most recent item and return it; None when there is none."""
        return await _finish(self.pop)

    async def clear_session(self) -> None:
        """Hide every item (one retraction); the log keeps them."""
        await _finish(self.clear)

    # -- the same, synchronous -----------------------------------------------------------

    def items(self, limit: int | None = None) -> list[Any]:
        n = resolve_session_limit(limit, self.session_settings)
        try:
            events = [e for e in self.store.read_session(self.session_id) if is_item(e)]
        except UnknownSession:
            return []
        if n is not None and n >= 0:
            events = events[-n:] if n else []
        return [from_event(e) for e in events]

    def append(self, items: list[Any]) -> None:
        self.store.append(self.session_id, [to_event(i) for i in items], actor=self.actor)

    def pop(self) -> Any | None:
        for _ in range(POP_ATTEMPTS):
            events = [e for e in self.store.read_session(self.session_id) if is_item(e)]
            if not events:
                return None
            last = events[-1]
            try:
                self.store.retract(self.session_id, actor=self.actor,
                                   event_ids=[last.event_id], reason="pop_item")
            except (RetractionError, ConcurrencyError):
                continue  # another pop hid it, or the session moved: read again
            return from_event(last)
        raise ConcurrencyError(f"session {self.session_id!r}: pop_item lost to concurrent "
                               f"writers {POP_ATTEMPTS} times")

    def clear(self) -> None:
        for _ in range(POP_ATTEMPTS):
            try:
                self.store.retract(self.session_id, actor=self.actor, all=True,
                                   reason="clear_session")
                return
            except (RetractionError, UnknownSession):
                return  # nothing visible to hide
            except ConcurrencyError:
                continue
        raise ConcurrencyError(f"session {self.session_id!r}: clear_session lost to "
                               f"concurrent writers {POP_ATTEMPTS} times")


class LongTermMemory:
    """What the store remembers for the current input, for an ``Agent``: the actor's
    earlier sessions and this session's older part, ranked for the question, in at most
    ``budget`` tokens (``Store.context``), with their sources.

    * :meth:`instructions` makes the agent's dynamic instructions: your own, then the
      memories for the latest user message of the turn and the sources they came from.
    * :meth:`tool` is a ``recall(query)`` function tool the model may call itself.

    The recent turns are not repeated (the session gives the model those): the context is
    asked for with ``recent_share=0``. ``strong=True`` brings the projections up to the
    head of the log before each call (slower; otherwise run ``store.project()`` or a
    projection worker). :attr:`last_context` is the last context built (its ``sources``
    say which events were used and why)."""

    def __init__(self, session: MemorySession, *, budget: int = 1000, strong: bool = False,
                 settings: RetrievalSettings | None = None) -> None:
        self.session = session
        self.budget = budget
        self.strong = strong
        self.settings = dataclasses.replace(settings or DEFAULT_SETTINGS, recent_share=0.0)
        self.last_context: Context | None = None

    def context(self, query: str) -> Context:
        s = self.session
        ctx = s.store.context(query, actor=s.actor, session=s.session_id, budget=self.budget,
                              settings=self.settings, strong=self.strong)
        self.last_context = ctx
        return ctx

    def recall_text(self, query: str) -> str:
        """The memories for ``query`` and their sources, as text for a model."""
        ctx = self.context(query)
        remembered = system_text(ctx)
        if not remembered:
            return "Nothing relevant is remembered."
        return remembered + "\n\n" + _sources(ctx)

    def instructions(self, base: str = "") -> Callable[[RunContextWrapper[Any], Agent[Any]],
                                                       Awaitable[str]]:
        """Dynamic instructions for ``Agent(instructions=...)``: ``base``, then what the
        store remembers for the turn's latest user message."""

        async def instructions(wrapper: RunContextWrapper[Any], agent: Agent[Any]) -> str:
            query = _latest_question(wrapper.turn_input)
            if not query:
                return base
            remembered = await asyncio.to_thread(self.recall_text, query)
            return f"{base}\n\n{remembered}" if base else remembered

        return instructions

    def tool(self, name: str = "recall") -> FunctionTool:
        """A function tool: ``recall(query)`` returns the memories for ``query`` with
        their sources."""

        async def recall(query: str) -> str:
            """Look up what is remembered about the user and earlier conversations.

            Args:
                query: what to look up, as a question or a few words.
            """
            return await asyncio.to_thread(self.recall_text, query)

        return function_tool(recall, name_override=name)


def _latest_question(items: list[Any]) -> str | None:
    for item in reversed(items or []):
        if isinstance(item, dict):
            text = text_of(item)
            if text:
                return text
    return None


def _sources(ctx: Context) -> str:
    lines = ["Sources:"]
    for s in ctx.sources:
        if s.kind == "turn":
            continue
        where = f"event {s.event_id}" if s.event_id else f"{len(s.event_ids)} events"
        score = f", score {s.score:.2f}" if s.score is not None else ""
        lines.append(f"- {s.kind}: {where} in session {s.session_id!r} "
                     f"(position {s.position}{score}; {s.reason})")
    return "\n".join(lines)

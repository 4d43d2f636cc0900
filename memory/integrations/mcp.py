"""An MCP server that gives a client this library as its memory, for one tenant and one actor.

``build_server(store, actor)`` registers the tools on the SDK's ``MCPServer``:
``remember`` (append a message to a session), ``recall`` (the budgeted context for a
question: its text and its sources), ``search`` (the actor's most relevant memories) and,
only when built with ``allow_forget=True``, ``forget``. The tenant is the store's and the
actor is fixed when the server starts: no tool has a parameter naming either, so a client
cannot reach another actor's or tenant's memories. ``memory mcp`` (memory/cli/mcp.py) runs
it over stdio or streamable HTTP.

The tools are plain functions over the sync :class:`memory.Store`; the SDK runs sync tools
in a worker thread (``anyio.to_thread``), so the event loop is never held by a query.
A library error (bad role, empty content, a session of another actor, an out-of-range
budget) is raised as the SDK's ``ToolError``: the client gets a tool error with the
library's message, and nothing is written, because the library validates before it writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from ..errors import Error, InvalidArgument
from ..log import message
from ..store import Store

DEFAULT_BUDGET = 2000
MAX_SEARCH_LIMIT = 50

_F = TypeVar("_F", bound=Callable[..., Any])


def tool_errors(fn: _F) -> _F:
    """The library's typed errors become tool errors that carry their message."""
    @wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Error as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}") from exc
    return call  # type: ignore[return-value]


class MemoryTools:
    """The tools' bodies, bound to one store (one tenant) and one actor."""

    def __init__(self, store: Store, actor: str) -> None:
        self.store = store
        self.actor = actor

    def remember(self, session: str, content: str, role: str = "user") -> dict[str, Any]:
        """Append a message to ``session`` (of this actor); returns where it went."""
        appended = self.store.append(session, message(role, content), actor=self.actor)[0]
        return {"event_id": str(appended.event_id), "session": session,
                "version": appended.version, "position": appended.position,
                "duplicate": appended.duplicate}

    def recall(self, question: str, session: str, budget: int = DEFAULT_BUDGET
               ) -> dict[str, Any]:
        """The context for ``question`` in ``session``: text for the model, with sources."""
        ctx = self.store.context(question, actor=self.actor, session=session, budget=budget,
                                 strong=True)
        return {"text": ctx.text(), "tokens": ctx.tokens, "budget": ctx.budget,
                "position": ctx.position, "sources": [s.to_dict() for s in ctx.sources]}

    def search(self, query: str, limit: int = 5) -> dict[str, Any]:
        """The actor's memories most relevant to ``query``, across its sessions, best
        first, each with its source (:meth:`memory.Store.search`)."""
        if isinstance(limit, bool) or not isinstance(limit, int) \
                or not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise InvalidArgument("limit", f"must be an integer from 1 to {MAX_SEARCH_LIMIT}")
        found = self.store.search(query, actor=self.actor, limit=limit, strong=True)
        return {"memories": [
            {"text": m.text, "session": m.session_id, "role": m.role,
             "occurred_at": m.occurred_at.isoformat(), "score": m.score, "rank": m.rank,
             "event_id": str(m.event_id), "position": m.position, "chunk_index": m.chunk_index}
            for m in found]}

    def forget(self, event_ids: list[str] | None = None, everything: bool = False
               ) -> dict[str, Any]:
        """Erase ``event_ids`` (this actor's events) or, with ``everything``, all of them."""
        if everything == bool(event_ids):
            raise InvalidArgument("event_ids", "give event_ids or everything=true (one of them)")
        if everything:
            result = self.store.forget(actor=self.actor)
        else:
            wanted = {self._event_id(e) for e in event_ids or ()}
            own = {e.event_id for e in self.store.read(actor=self.actor)}
            foreign = sorted(str(e) for e in wanted - own)
            if foreign:
                raise InvalidArgument("event_ids", f"not events of this actor: {foreign}")
            result = self.store.forget(event_ids=sorted(wanted, key=str))
        return {"actor_events": result.actor_events,
                "event_ids": [str(e) for e in result.event_ids],
                "already_forgotten": result.already_forgotten}

    @staticmethod
    def _event_id(value: str) -> uuid.UUID:
        try:
            return uuid.UUID(value)
        except (TypeError, ValueError, AttributeError):
            raise InvalidArgument("event_ids", f"{value!r} is not a UUID") from None


def build_server(store: Store, actor: str, *, allow_forget: bool = False,
                 name: str = "memory") -> MCPServer:
    """An ``MCPServer`` whose tools read and write ``actor``'s memory in ``store``'s tenant."""
    from ..log import check_id

    tools = MemoryTools(store, check_id(actor, "actor", store.limits))
    server = MCPServer(name, instructions=(
        f"Long-term memory of actor {actor!r}. remember appends a message to a session; "
        "recall gives the context for a question (text plus sources); search finds "
        "relevant memories across sessions."))
    server.tool(description="Append a message (role user, assistant, system or tool) to a "
                "session of this actor's memory.")(tool_errors(tools.remember))
    server.tool(description="The context for a question in a session: recent turns, the "
                "session summary and the relevant memories, within a token budget, with "
                "their sources.")(tool_errors(tools.recall))
    server.tool(description="The memories most relevant to a query, across this actor's "
                "sessions, best first.")(tool_errors(tools.search))
    if allow_forget:
        server.tool(description="Erase events of this actor (event_ids), or all of its "
                    "memory (everything=true). Cannot be undone.")(tool_errors(tools.forget))
    return server

"""What :meth:`Store.context` returns: the packed context and where each part came from.

Kept apart from the building (``context.py``, ``packing.py``) so that a caller, a renderer
(``render.py``) or a recorded context's reader needs only these plain values, not the
machinery that builds them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from ..log import Appended
from . import render
from .search import Scope
from .settings import RetrievalSettings


@dataclass(frozen=True)
class Turn:
    """A recent turn of the session, verbatim from the log."""

    event_id: UUID
    position: int
    version: int
    type: str
    role: str
    content: str
    occurred_at: datetime
    tokens: int
    truncated: bool = False


@dataclass(frozen=True)
class Summary:
    text: str
    covers_position: int
    events_covered: int
    source_event_ids: tuple[UUID, ...]
    tokens: int
    truncated: bool = False


@dataclass(frozen=True)
class Memory:
    """A relevant chunk from the actor's memory, with its date and why it was chosen."""

    event_id: UUID
    position: int
    chunk_index: int
    session_id: str
    actor_id: str
    role: str | None
    author: str | None
    occurred_at: datetime
    text: str
    tokens: int
    score: float
    rank: int
    parts: dict[str, float]
    reasons: tuple[str, ...]
    kind: str = "memory"
    """``memory`` (a ranked hit) or ``neighbour`` (a turn next to one)."""


@dataclass(frozen=True)
class Source:
    """Where one piece of the context came from and why it is there."""

    kind: str
    """``turn``, ``summary``, ``memory`` or ``neighbour``."""
    event_id: UUID | None
    position: int
    session_id: str
    tokens: int
    reason: str
    chunk_index: int | None = None
    score: float | None = None
    parts: dict[str, float] = field(default_factory=dict)
    event_ids: tuple[UUID, ...] = ()
    """For a summary: the events it was made from."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "event_id": str(self.event_id) if self.event_id else None,
                "position": self.position, "session_id": self.session_id,
                "chunk_index": self.chunk_index, "tokens": self.tokens,
                "score": self.score, "parts": self.parts, "reason": self.reason,
                "event_ids": [str(e) for e in self.event_ids]}


@dataclass
class Context:
    """What to put in front of a model call. ``tokens`` <= ``budget`` always."""

    query: str
    budget: int
    tokens: int
    position: int
    """The log position the context was built at (the bound of everything in it)."""
    scope: Scope
    turns: list[Turn]
    summary: Summary | None
    memories: list[Memory]
    sources: list[Source]
    settings: RetrievalSettings
    counter: str
    timings: dict[str, float] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    pins: dict[str, Any] = field(default_factory=dict)
    """What a replay needs beyond the settings: projection generations and bounds."""
    recorded: Appended | None = None
    replay_matches: bool | None = None
    """After :func:`replay`: whether the rebuilt messages equal the recorded ones."""

    def messages(self) -> list[dict[str, str]]:
        """OpenAI-style ``[{"role", "content"}]``."""
        return render.openai_messages(self)

    def anthropic(self) -> tuple[str, list[dict[str, str]]]:
        """``(system, messages)`` for the Anthropic Messages API."""
        return render.anthropic(self)

    def text(self) -> str:
        return render.plain_text(self)

    def digest(self) -> str:
        """SHA-256 of the OpenAI-style messages (what a replay must reproduce)."""
        blob = json.dumps(self.messages(), ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query, "budget": self.budget, "tokens": self.tokens,
            "position": self.position, "counter": self.counter,
            "scope": {"tenant": self.scope.tenant, "actor": self.scope.actor,
                      "session": self.scope.session, "actors": list(self.scope.actors)},
            "messages": self.messages(),
            "sources": [s.to_dict() for s in self.sources],
            "timings_ms": self.timings, "plan": self.plan,
            "recorded": ({"event_id": str(self.recorded.event_id),
                          "position": self.recorded.position} if self.recorded else None),
        }

"""Renderings of a context for the common chat APIs, and the text of each piece.

Every rendering uses the same piece texts, so their token counts agree: the budget is
enforced on the OpenAI-style messages (content tokens plus
``settings.message_overhead_tokens`` per message), and the other two renderings can only
be shorter (Anthropic merges consecutive turns of one role and drops a message's overhead;
plain text spends a role label of one or two tokens instead of the overhead).

Turns are rendered as plain user/assistant/system text: a tool call or result becomes text
with a bracketed label rather than an API tool message, because a window of recent turns
may cut a call from its result, and chat APIs refuse an orphan tool message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

SUMMARY_HEADER = "Summary of the earlier part of this conversation:"
MEMORIES_HEADER = "Relevant memories (date, speaker: text):"
SECTION_SEPARATOR = "\n\n"
LINE_SEPARATOR = "\n"


def turn_role_and_content(event_type: str, payload: dict[str, Any]) -> tuple[str, str]:
    """How one session event reads as a chat turn."""
    if event_type == "message":
        role = payload.get("role", "user")
        content = str(payload.get("content", ""))
        name = payload.get("name")
        if name:
            content = f"{name}: {content}"
        if role == "tool":
            return "user", f"[tool] {content}"
        return role, content
    if event_type == "tool_call":
        args = json.dumps(payload.get("arguments", {}), ensure_ascii=False, sort_keys=True)
        return "assistant", f"[tool call {payload.get('name', '')}] {args}"
    if event_type == "tool_result":
        label = f"tool result {payload['name']}" if payload.get("name") else "tool result"
        if payload.get("is_error"):
            label += " (error)"
        return "user", f"[{label}] {payload.get('content', '')}"
    if event_type == "note":
        return "user", f"[note] {payload.get('text', '')}"
    return "user", json.dumps(payload, ensure_ascii=False, sort_keys=True)


@lru_cache(maxsize=8192)
def format_date(when: datetime, fmt: str) -> str:
    """Remembered: packing writes the date of every candidate, and the same chunks come
    back call after call (strftime was ~1 ms of a call with 100 candidates)."""
    return when.astimezone(UTC).strftime(fmt)


class Dated(Protocol):
    """What a memory line is made of (a ``result.Memory``, or a search ``Hit`` while
    packing, which saves building a Memory for every candidate)."""

    @property
    def author(self) -> str | None: ...
    @property
    def role(self) -> str | None: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def text(self) -> str: ...


class Spoken(Protocol):
    """What a turn is rendered from (a ``result.Turn``)."""

    @property
    def role(self) -> str: ...
    @property
    def content(self) -> str: ...


class Summarised(Protocol):
    """What a summary is rendered from (a ``result.Summary``)."""

    @property
    def text(self) -> str: ...


class Formatted(Protocol):
    """The one setting rendering reads (``RetrievalSettings.date_format``)."""

    @property
    def date_format(self) -> str: ...


class Renderable(Protocol):
    """What a rendering reads from a context (a ``result.Context``, which calls these
    functions for its own ``messages()``, ``anthropic()`` and ``text()``; the renderings
    see only this shape, so they do not import the values that call them)."""

    @property
    def summary(self) -> Summarised | None: ...
    @property
    def memories(self) -> Sequence[Dated]: ...
    @property
    def turns(self) -> Sequence[Spoken]: ...
    @property
    def settings(self) -> Formatted: ...


def memory_line(m: Dated, date_format: str) -> str:
    speaker = m.author or m.role or "note"
    return f"- [{format_date(m.occurred_at, date_format)}] {speaker}: {m.text}"


def system_text(ctx: Renderable) -> str:
    """The system part: the session summary and the relevant memories (may be empty)."""
    sections = []
    if ctx.summary is not None:
        sections.append(SUMMARY_HEADER + LINE_SEPARATOR + ctx.summary.text)
    if ctx.memories:
        lines = [memory_line(m, ctx.settings.date_format) for m in ctx.memories]
        sections.append(MEMORIES_HEADER + LINE_SEPARATOR + LINE_SEPARATOR.join(lines))
    return SECTION_SEPARATOR.join(sections)


def openai_messages(ctx: Renderable) -> list[dict[str, str]]:
    """``[{"role": ..., "content": ...}, ...]``: a system message (if there is anything
    to remember), then the recent turns, oldest first."""
    out = []
    system = system_text(ctx)
    if system:
        out.append({"role": "system", "content": system})
    out.extend({"role": t.role, "content": t.content} for t in ctx.turns)
    return out


def anthropic(ctx: Renderable) -> tuple[str, list[dict[str, str]]]:
    """``(system, messages)`` for the Anthropic Messages API: roles are user/assistant only
    (a system turn of the session is shown as a user turn) and consecutive turns of one
    role are merged. If the window starts with an assistant turn, so does the list: put
    your own user turn first if your API version requires it."""
    messages: list[dict[str, str]] = []
    for t in ctx.turns:
        role = "assistant" if t.role == "assistant" else "user"
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += SECTION_SEPARATOR + t.content
        else:
            messages.append({"role": role, "content": t.content})
    return system_text(ctx), messages


def plain_text(ctx: Renderable) -> str:
    """The whole context as one text: the system part, then ``role: content`` lines."""
    parts = []
    system = system_text(ctx)
    if system:
        parts.append(system)
    if ctx.turns:
        parts.append(LINE_SEPARATOR.join(f"{t.role}: {t.content}" for t in ctx.turns))
    return SECTION_SEPARATOR.join(parts)

"""Conversation items of the OpenAI Agents SDK (Responses-API input items, plain dicts) as
typed events of the log, and back, so that what a session is given reads back equal.

Why typed events rather than one opaque blob per item: the log's own types are what the
rest of the library understands. A chat message becomes a ``message`` event (its text is
chunked, embedded, summarized and recalled like any other turn), a function call a
``tool_call``, its output a ``tool_result``. What the typed payload does not hold (an
item's ``type``, ``id``, ``status``, the parts of a multi-part content, the exact argument
string) is kept in the event's metadata under :data:`ITEM_KEY`; metadata is sealed with
the payload, so ``forget`` erases both. An item none of these types fits (a reasoning
item, a hosted tool call...) is an ``agent_item`` event (schemas/agent_item.v1.json)
holding its JSON as is. No SDK import here: items are plain JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..log import NewEvent, RecordedEvent

ITEM_KEY = "agents_item"
"""The metadata key holding what an item has beyond its typed payload."""
AGENT_ITEM = "agent_item"
ITEM_TYPES = ("message", "tool_call", "tool_result", AGENT_ITEM)
"""Event types that are items of a session (a ``note`` or a recorded context is not)."""
_ROLES = ("user", "assistant", "system")


def to_event(item: Mapping[str, Any]) -> NewEvent:
    """The event that stores ``item``."""
    item = dict(item)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message" and item.get("role") in _ROLES:
        text = _text(item.get("content"))
        if text is not None:
            rest = {k: v for k, v in item.items() if k != "role"}
            if isinstance(item.get("content"), str):
                del rest["content"]
            return NewEvent("message", {"role": item["role"], "content": text},
                            metadata={ITEM_KEY: rest})
    if (kind == "function_call" and _nonempty(item.get("name"))
            and _nonempty(item.get("call_id")) and isinstance(item.get("arguments"), str)):
        rest = {k: v for k, v in item.items() if k not in ("name", "call_id")}
        payload = {"name": item["name"], "arguments": _arguments(item["arguments"]),
                   "call_id": item["call_id"]}
        return NewEvent("tool_call", payload, metadata={ITEM_KEY: rest})
    if kind == "function_call_output" and _nonempty(item.get("call_id")) and "output" in item:
        output = item["output"]
        rest = {k: v for k, v in item.items() if k != "call_id"}
        if isinstance(output, str):
            del rest["output"]
            text = output
        else:
            text = _text(output)
            if text is None:
                text = json.dumps(output, ensure_ascii=False)
        return NewEvent("tool_result", {"call_id": item["call_id"], "content": text},
                        metadata={ITEM_KEY: rest})
    return NewEvent(AGENT_ITEM, {"item": item})


def is_item(event: RecordedEvent) -> bool:
    """Whether ``event`` is an item of a session (a forgotten one is not: its payload is
    gone)."""
    return event.type in ITEM_TYPES and not event.forgotten


def from_event(event: RecordedEvent) -> dict[str, Any]:
    """The item ``event`` stores. Events written by other code than the session (e.g.
    ``memory.message``) become the plain items the SDK accepts."""
    payload = event.payload
    if event.type == AGENT_ITEM:
        return dict(payload["item"])
    rest = (event.metadata or {}).get(ITEM_KEY)
    if event.type == "message":
        if rest is None:
            role = payload.get("role")
            if role not in _ROLES:  # a tool's message written through the library
                return {"role": "user", "content": f"[tool] {payload.get('content', '')}"}
            return {"role": role, "content": payload.get("content", "")}
        item = {"role": payload["role"], **rest}
        item.setdefault("content", payload["content"])
        return item
    if event.type == "tool_call":
        if rest is None:
            rest = {"type": "function_call",
                    "arguments": json.dumps(payload.get("arguments", {}), ensure_ascii=False)}
        return {**rest, "name": payload["name"], "call_id": payload["call_id"]}
    if event.type == "tool_result":
        if rest is None:
            rest = {"type": "function_call_output"}
        item = {**rest, "call_id": payload["call_id"]}
        item.setdefault("output", payload.get("content", ""))
        return item
    raise ValueError(f"event type {event.type!r} is not a session item")


def text_of(item: Mapping[str, Any]) -> str | None:
    """The text of a user message item (what a question to remember by is), else None."""
    if item.get("role") != "user":
        return None
    return _text(item.get("content"))


def _text(content: Any) -> str | None:
    """A message's text: the string itself, or its text parts joined; None when it has
    none (e.g. only an image)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts = [part["text"] for part in content
             if isinstance(part, dict) and isinstance(part.get("text"), str)]
    if not texts and content:
        return None
    return "\n".join(texts)


def _arguments(raw: str) -> dict[str, Any]:
    """A call's arguments as the ``tool_call`` schema wants them (an object); the exact
    string stays in the metadata, so malformed or non-object JSON loses nothing."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and bool(value)

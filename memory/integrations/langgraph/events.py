"""The event types LangGraph's state is stored as, and how serialized values ride in them.

A checkpoint, a task's pending writes, a stored item and its removal are each one event of
a registered type, so they are validated like any other event, sealed under the actor's
key and erasable by ``forget``. Values serialized by the saver's serde, ``(type, bytes)``,
are stored as ``{"type": ..., "data": <base64>}``: the bytes read back exactly as written.
"""

from __future__ import annotations

import base64
from typing import Any

from ...log import SchemaRegistry

CHECKPOINT = "langgraph_checkpoint"
WRITES = "langgraph_writes"
ITEM_PUT = "langgraph_item"
ITEM_DELETED = "langgraph_item_deleted"

_TYPED: dict[str, Any] = {
    "type": "object",
    "required": ["type", "data"],
    "properties": {"type": {"type": "string"},
                   "data": {"type": "string", "contentEncoding": "base64"}},
    "additionalProperties": False,
}
_VERSION: dict[str, Any] = {"type": ["string", "integer", "number"]}
_NAMESPACE: dict[str, Any] = {"type": "array", "items": {"type": "string"}}

SCHEMAS: dict[str, dict[str, Any]] = {
    CHECKPOINT: {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "a LangGraph checkpoint of one thread and namespace",
        "type": "object",
        "required": ["checkpoint_ns", "checkpoint_id", "parent_checkpoint_id", "checkpoint",
                     "metadata", "run_id", "channels"],
        "properties": {
            "checkpoint_ns": {"type": "string"},
            "checkpoint_id": {"type": "string"},
            "parent_checkpoint_id": {"type": ["string", "null"]},
            "checkpoint": _TYPED,
            "metadata": _TYPED,
            "run_id": {"type": ["string", "null"]},
            "channels": {"type": "array", "items": {
                "type": "object", "required": ["channel", "version", "value"],
                "properties": {"channel": {"type": "string"}, "version": _VERSION,
                               "value": _TYPED},
                "additionalProperties": False}},
            "sources": {
                "description": "for each channel value held by an earlier checkpoint "
                               "event: [that event's id, the value's version key]",
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"},
                                         "minItems": 2, "maxItems": 2}},
            "latest": {"description": "the greatest checkpoint id of the namespace in "
                                      "the thread when this one was put",
                       "type": "string"},
        },
        "additionalProperties": False,
    },
    WRITES: {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "the pending writes of one LangGraph task at a checkpoint",
        "type": "object",
        "required": ["checkpoint_ns", "checkpoint_id", "task_id", "task_path", "writes"],
        "properties": {
            "checkpoint_ns": {"type": "string"},
            "checkpoint_id": {"type": "string"},
            "task_id": {"type": "string"},
            "task_path": {"type": "string"},
            "writes": {"type": "array", "items": {
                "type": "object", "required": ["idx", "channel", "value"],
                "properties": {"idx": {"type": "integer"}, "channel": {"type": "string"},
                               "value": _TYPED},
                "additionalProperties": False}},
        },
        "additionalProperties": False,
    },
    ITEM_PUT: {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "a LangGraph store item, put (a put replaces the key's earlier value)",
        "type": "object",
        "required": ["namespace", "key", "value", "note_id"],
        "properties": {
            "namespace": _NAMESPACE,
            "key": {"type": "string"},
            "value": {"type": "object"},
            "note_id": {"type": ["string", "null"],
                        "description": "the note event carrying the item's indexed text"},
        },
        "additionalProperties": False,
    },
    ITEM_DELETED: {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "a LangGraph store item, deleted",
        "type": "object",
        "required": ["namespace", "key"],
        "properties": {"namespace": _NAMESPACE, "key": {"type": "string"}},
        "additionalProperties": False,
    },
}


def register(registry: SchemaRegistry) -> None:
    """Make the LangGraph event types known to a store's registry (idempotent)."""
    known = registry.types()
    for type_, schema in SCHEMAS.items():
        if type_ not in known:
            registry.register(type_, schema)


def encode(typed: tuple[str, bytes]) -> dict[str, str]:
    kind, data = typed
    return {"type": kind, "data": base64.b64encode(bytes(data)).decode("ascii")}


def decode(stored: dict[str, str]) -> tuple[str, bytes]:
    return stored["type"], base64.b64decode(stored["data"])

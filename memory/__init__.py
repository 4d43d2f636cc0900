"""memory: a durable, searchable memory for stateless language-model calls.

The public API is what this module exports; everything else is internal.
"""

from .config import Limits
from .errors import (
    AppendOnlyViolation,
    ConcurrencyError,
    ConfigurationError,
    Error,
    IdempotencyConflict,
    PayloadTooLarge,
    SessionOwnershipError,
    UnknownEventType,
    ValidationError,
)
from .events import Appended, NewEvent, RecordedEvent, message, note, tool_call, tool_result
from .log import ANY, NO_STREAM, Subscription
from .schemas import SchemaRegistry
from .store import Store

__all__ = [
    "ANY",
    "NO_STREAM",
    "AppendOnlyViolation",
    "Appended",
    "ConcurrencyError",
    "ConfigurationError",
    "Error",
    "IdempotencyConflict",
    "Limits",
    "NewEvent",
    "PayloadTooLarge",
    "RecordedEvent",
    "SchemaRegistry",
    "SessionOwnershipError",
    "Store",
    "Subscription",
    "UnknownEventType",
    "ValidationError",
    "message",
    "note",
    "tool_call",
    "tool_result",
]

open = Store.open

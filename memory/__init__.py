"""memory: a durable, searchable memory for stateless language-model calls.

The public API is what this module exports; everything else is internal.
"""

from .config import Limits
from .embedding import Embedder, SentenceTransformerEmbedder
from .embedding_onnx import OnnxEmbedder
from .errors import (
    AppendOnlyViolation,
    ConcurrencyError,
    ConfigurationError,
    DecryptionError,
    Error,
    IdempotencyConflict,
    PayloadTooLarge,
    SessionOwnershipError,
    UnknownEventType,
    ValidationError,
)
from .events import Appended, NewEvent, RecordedEvent, message, note, tool_call, tool_result
from .forget import ForgetError, ForgetResult
from .log import ANY, NO_STREAM, Subscription
from .projections import (
    ExtractiveSummarizer,
    ProjectionBusy,
    ProjectionConfigMismatch,
    Projector,
    Summarizer,
)
from .retrieval import Context, RetrievalSettings, TokenCounter
from .schemas import SchemaRegistry
from .store import Store

__all__ = [
    "ANY",
    "NO_STREAM",
    "AppendOnlyViolation",
    "Appended",
    "ConcurrencyError",
    "ConfigurationError",
    "Context",
    "DecryptionError",
    "Embedder",
    "Error",
    "ExtractiveSummarizer",
    "ForgetError",
    "ForgetResult",
    "IdempotencyConflict",
    "Limits",
    "NewEvent",
    "OnnxEmbedder",
    "PayloadTooLarge",
    "ProjectionBusy",
    "ProjectionConfigMismatch",
    "Projector",
    "RecordedEvent",
    "RetrievalSettings",
    "SchemaRegistry",
    "SentenceTransformerEmbedder",
    "SessionOwnershipError",
    "Store",
    "Subscription",
    "Summarizer",
    "TokenCounter",
    "UnknownEventType",
    "ValidationError",
    "message",
    "note",
    "tool_call",
    "tool_result",
]

open = Store.open

"""memory: a durable, searchable memory for stateless language-model calls.

The public API is what this module exports; everything else is internal.
"""

from .config import Limits
from .embedding import Embedder, SentenceTransformerEmbedder
from .errors import (
    AppendOnlyViolation,
    ConcurrencyError,
    ConfigurationError,
    DecryptionError,
    Error,
    ForgottenError,
    IdempotencyConflict,
    InvalidArgument,
    PayloadTooLarge,
    SessionOwnershipError,
    TenantAccessError,
    UnknownEventType,
    ValidationError,
)
from .forget import ForgetError, ForgetResult
from .log import (
    ANY,
    NO_STREAM,
    Appended,
    EventLog,
    EventSubscription,
    NewEvent,
    RecordedEvent,
    SchemaRegistry,
    Subscription,
    message,
    note,
    tool_call,
    tool_result,
)
from .projections import (
    ExtractiveSummarizer,
    ProjectionBusy,
    ProjectionConfigMismatch,
    Projector,
    Summarizer,
)
from .retrieval import Context, RetrievalSettings, TokenCounter
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
    "EventLog",
    "EventSubscription",
    "ExtractiveSummarizer",
    "ForgetError",
    "ForgetResult",
    "ForgottenError",
    "IdempotencyConflict",
    "InvalidArgument",
    "Limits",
    "NewEvent",
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
    "TenantAccessError",
    "TokenCounter",
    "UnknownEventType",
    "ValidationError",
    "message",
    "note",
    "tool_call",
    "tool_result",
]

open = Store.open

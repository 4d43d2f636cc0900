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
    ForkPointError,
    IdempotencyConflict,
    InvalidArgument,
    PayloadTooLarge,
    RetractionError,
    SessionExists,
    SessionOwnershipError,
    TenantAccessError,
    UnknownEventType,
    UnknownSession,
    ValidationError,
    ViewError,
)
from .forget import ForgetError, ForgetResult
from .log import (
    ANY,
    NO_STREAM,
    Appended,
    NewEvent,
    RecordedEvent,
    SchemaRegistry,
    SessionView,
    Subscription,
    ViewEntry,
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
    "ExtractiveSummarizer",
    "ForgetError",
    "ForgetResult",
    "ForgottenError",
    "ForkPointError",
    "IdempotencyConflict",
    "InvalidArgument",
    "Limits",
    "NewEvent",
    "PayloadTooLarge",
    "ProjectionBusy",
    "ProjectionConfigMismatch",
    "Projector",
    "RecordedEvent",
    "RetractionError",
    "RetrievalSettings",
    "SchemaRegistry",
    "SentenceTransformerEmbedder",
    "SessionExists",
    "SessionOwnershipError",
    "SessionView",
    "Store",
    "Subscription",
    "Summarizer",
    "TenantAccessError",
    "TokenCounter",
    "UnknownEventType",
    "UnknownSession",
    "ValidationError",
    "ViewEntry",
    "ViewError",
    "message",
    "note",
    "tool_call",
    "tool_result",
]

open = Store.open

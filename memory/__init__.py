"""memory: a durable, searchable memory for stateless language-model calls.

The public API is what this module exports; everything else is internal. Every type a
caller passes to a :class:`Store` or gets back from one is here: the events and what an
append returns, a :class:`Context` and its parts (:class:`Turn`, :class:`Memory`,
:class:`Summary`, :class:`Source`, its :class:`Scope`), the ranker seam that
``Store.context(ranker=...)`` accepts (:data:`Ranker`: a :class:`RankRequest` of
:class:`Hit` candidates in, :class:`Ranked` out), what ``forget`` and the projections
report (:class:`ForgetResult` with its :class:`Erasure`, :class:`RunSummary`,
:class:`QuarantinedEvent`), the settings, limits and errors.
"""

from .config import Limits
from .embedding import Embedder, SentenceTransformerEmbedder
from .embedding_onnx import OnnxEmbedder
from .erasure import Erasure
from .errors import (
    AppendOnlyViolation,
    ConcurrencyError,
    ConfigurationError,
    DecryptionError,
    DependencyError,
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
    Crypto,
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
    QuarantinedEvent,
    RunSummary,
    Summarizer,
)
from .retrieval import (
    DEFAULT_SETTINGS,
    CharCounter,
    Context,
    Hit,
    Memory,
    Ranked,
    Ranker,
    RankRequest,
    RetrievalSettings,
    Scope,
    Source,
    Summary,
    TokenCounter,
    Turn,
    WordPieceCounter,
)
from .store import Store

__all__ = [
    "ANY",
    "DEFAULT_SETTINGS",
    "NO_STREAM",
    "AppendOnlyViolation",
    "Appended",
    "CharCounter",
    "ConcurrencyError",
    "ConfigurationError",
    "Context",
    "Crypto",
    "DecryptionError",
    "DependencyError",
    "Embedder",
    "Erasure",
    "Error",
    "EventLog",
    "EventSubscription",
    "ExtractiveSummarizer",
    "ForgetError",
    "ForgetResult",
    "ForgottenError",
    "Hit",
    "IdempotencyConflict",
    "InvalidArgument",
    "Limits",
    "Memory",
    "NewEvent",
    "OnnxEmbedder",
    "PayloadTooLarge",
    "ProjectionBusy",
    "ProjectionConfigMismatch",
    "Projector",
    "QuarantinedEvent",
    "RankRequest",
    "Ranked",
    "Ranker",
    "RecordedEvent",
    "RetrievalSettings",
    "RunSummary",
    "SchemaRegistry",
    "Scope",
    "SentenceTransformerEmbedder",
    "SessionOwnershipError",
    "Source",
    "Store",
    "Subscription",
    "Summarizer",
    "Summary",
    "TenantAccessError",
    "TokenCounter",
    "Turn",
    "UnknownEventType",
    "ValidationError",
    "WordPieceCounter",
    "message",
    "note",
    "tool_call",
    "tool_result",
]

open = Store.open

"""The exceptions of the library. Each carries the context a caller needs to act on it.

Everything raised on purpose derives from :class:`memory.Error`, so one ``except`` clause
catches the library's refusals without swallowing unrelated bugs.
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every error the library raises on purpose."""


class ConfigurationError(Error):
    """The store cannot be opened as configured (bad URL, missing server, wrong model)."""


class ValidationError(Error):
    """An event was refused before anything was written.

    ``index`` is the position of the offending event in the batch (0 for a single
    event), ``field`` the part that failed, when known.
    """

    def __init__(self, message: str, *, index: int = 0, field: str | None = None) -> None:
        where = f"event {index}" + (f", {field}" if field else "")
        super().__init__(f"{where}: {message}")
        self.index = index
        self.field = field
        self.reason = message


class InvalidArgument(ValidationError, ValueError):
    """An argument of a call, not an event, is of the wrong type or out of range (e.g.
    ``expected_version=2**63``, a negative ``from_position``, a ``Limits`` field); nothing
    was read or written. ``field`` (and ``name``) is the argument."""

    def __init__(self, name: str, message: str) -> None:
        Error.__init__(self, f"{name}: {message}")
        self.index = 0
        self.field = self.name = name
        self.reason = message


class UnknownEventType(ValidationError):
    """The event's type (or its schema version) is not registered."""


class PayloadTooLarge(ValidationError):
    """The serialized payload is over the configured limit (default 1 MiB)."""


class ConcurrencyError(Error):
    """The session was not at the version the append expected; nothing was written."""

    def __init__(self, session_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"session {session_id!r} is at version {actual}, the append expected {expected}; "
            "re-read the session and retry"
        )
        self.session_id = session_id
        self.expected = expected
        self.actual = actual


class IdempotencyConflict(Error):
    """An event id was re-used for different content; nothing was written."""

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"event id {event_id} was already appended with other content "
            "(or as part of another batch); event ids must identify one event"
        )
        self.event_id = event_id


class SessionOwnershipError(Error):
    """A session belongs to one actor; an append named another."""


class AppendOnlyViolation(Error):
    """Something tried to change or remove history in the event log."""


class TenantAccessError(Error):
    """A call named another tenant than the one its connection's role acts for (or the
    role acts for none): nothing was read or written. A tenant's role is bound to its
    tenant (memory/pg/tenancy.py)."""


class DecryptionError(Error):
    """A sealed payload or a wrapped key failed authentication (wrong master key or
    tampered data): never silently treated as forgotten."""


class DependencyError(Error):
    """Something a projection depends on failed (the embedder, a summarizer's model):
    not the fault of the event being projected, so the projection runner stops and
    raises it instead of quarantining the event (memory/projections/quarantine.py)."""


class ForgottenError(Error):
    """The event asked for was forgotten (``Store.forget``): its payload is gone, so
    what needs it (e.g. replaying a recorded context) cannot be done. ``event_id`` names
    it."""

    def __init__(self, message: str, *, event_id: str) -> None:
        super().__init__(message)
        self.event_id = event_id

"""What a projection is: the :class:`Projection` protocol the runner drives, the defaults
of :class:`BaseProjection`, and the errors a run raises when it cannot write.

A projection is a small object with a ``name``, a ``version``, a ``config()`` and an
``apply(conn, generation, events)`` that writes what a batch of events derives; the
runner (memory/projections/runner.py) feeds it the log in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..errors import ConfigurationError, Error
from ..log import RecordedEvent


class ProjectionBusy(Error):
    """Another runner is writing this projection generation."""


class ProjectionConfigMismatch(ConfigurationError):
    """The live generation was built with another configuration (e.g. another model)."""


@runtime_checkable
class Projection(Protocol):
    """What the runner needs from a projection."""

    name: str
    version: int

    def config(self) -> dict[str, Any]:
        """What shapes the rows (model, dimension, rules); recorded per generation."""
        ...

    def apply(self, conn: sa.Connection, generation: int,
              events: Sequence[RecordedEvent]) -> int:
        """Write what ``events`` (in log order) derive; return the number of rows written.
        Runs inside the runner's transaction: never commit here."""
        ...

    def setup(self, conn: sa.Connection, generation: int) -> None:
        """A new generation was created (in the caller's transaction)."""
        ...

    def finalize(self, engine: Engine, generation: int) -> None:
        """The generation is about to go live (e.g. build its vector index). Idempotent;
        runs outside any transaction."""
        ...

    def drop(self, conn: sa.Connection, generation: int) -> None:
        """Remove every row and index of ``generation``."""
        ...

    def drop_indexes(self, engine: Engine, generation: int) -> None:
        """Drop the generation's own indexes without blocking readers (e.g. CONCURRENTLY);
        called outside any transaction before a retired generation is dropped."""
        ...

    def idle(self, conn: sa.Connection, generation: int) -> int:
        """Called by ``follow()`` when the log is quiet; may write (wall-clock work)."""
        ...

    def forget(self, conn: sa.Connection, tenant: str, *, actor_id: str | None = None,
               event_ids: Sequence[Any] | None = None) -> int:
        """Delete derived rows of a forgotten actor or events, in every generation."""
        ...


class BaseProjection:
    """Defaults for the optional parts of :class:`Projection`."""

    name = "base"
    version = 1

    def config(self) -> dict[str, Any]:
        return {}

    def setup(self, conn: sa.Connection, generation: int) -> None:
        return None

    def finalize(self, engine: Engine, generation: int) -> None:
        return None

    def drop(self, conn: sa.Connection, generation: int) -> None:
        return None

    def drop_indexes(self, engine: Engine, generation: int) -> None:
        return None

    def idle(self, conn: sa.Connection, generation: int) -> int:
        return 0

    def forget(self, conn: sa.Connection, tenant: str, *, actor_id: str | None = None,
               event_ids: Sequence[Any] | None = None) -> int:
        return 0


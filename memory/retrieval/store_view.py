"""What building a context needs from the store, as a Protocol: retrieval sits below the
``Store`` facade and reads it only through these members, so it never imports the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.engine import Engine

from ..config import Limits
from ..log import Appended, Log, NewEvent
from .scopecache import ScopeCache


class StoreView(Protocol):
    """The parts of a :class:`memory.Store` a context is built from. Optional extras, read
    with ``getattr`` when present: ``project()`` (to catch the projections up) and
    ``embedder`` (the query embedder)."""

    @property
    def tenant(self) -> str: ...

    @property
    def limits(self) -> Limits: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def log(self) -> Log: ...

    @property
    def scope_cache(self) -> ScopeCache: ...

    def append(self, session_id: str, events: NewEvent | Sequence[NewEvent], *, actor: str,
               expected_version: int | None = ...) -> list[Appended]: ...

"""The ranker seam: what a ranker is given (:class:`RankRequest`) and what it returns.

To try another ranker, pass ``ranker=`` to ``Store.context`` (any callable with the
signature of :data:`Ranker`). Keep it deterministic: the same inputs must give the same
order (ties break on the chunk's position), or replaying a recorded context would not
rebuild the same messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from ..search import Hit, NeighbourLookup
from ..settings import RetrievalSettings

if TYPE_CHECKING:
    from ..search import ChunkSearch


@dataclass
class Ranked:
    """A hit with its final score and why it is where it is."""

    hit: Hit
    score: float
    parts: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RankRequest:
    query: str
    hits: Sequence[Hit]
    neighbours: NeighbourLookup
    settings: RetrievalSettings
    now: datetime
    """The moment the context is for (the log's bound, for recency)."""
    embeddings: Callable[[Sequence[Hit]], None] | None = None
    """Fills ``hit.embedding`` for the given hits (used by MMR)."""
    query_vec: np.ndarray | None = None
    """The query's embedding (of :func:`vector_query`), for whole-scope ranking."""
    finder: ChunkSearch | None = None
    """The scope's search, for whole-scope ranking; without it, only the hits are ranked."""
    embed: Callable[[Sequence[str]], np.ndarray] | None = None
    """The query's embedder, for query words the scope's vocabulary lacks (the query
    expansion); without it those words are not expanded."""


Ranker = Callable[[RankRequest], list[Ranked]]

"""A candidate chunk as the searches return it (:class:`Hit`), built from a row of
``HIT_COLUMNS``, and the merge of several searches' hits into one per chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import numpy as np


@dataclass
class Hit:
    """One candidate chunk with the raw score parts each search gave it."""

    event_position: int
    chunk_index: int
    event_id: UUID
    session_id: str
    actor_id: str
    role: str | None
    author: str | None
    occurred_at: datetime
    text: str
    parts: dict[str, float] = field(default_factory=dict)
    embedding: np.ndarray | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.event_position, self.chunk_index)


NeighbourLookup = Callable[[Sequence[Hit], int], dict[tuple[int, int], list[Hit]]]
"""Given hits and a window w, the chunks of the w events before and after each hit in its
session (keyed by the hit's key)."""


def hit_from_row(row: Sequence[Any]) -> Hit:
    """A :class:`Hit` from the first nine columns of a row (``search.scope.HIT_COLUMNS``)."""
    return Hit(event_position=row[0], chunk_index=row[1], event_id=row[2], session_id=row[3],
               actor_id=row[4], role=row[5], author=row[6], occurred_at=row[7], text=row[8])


def merge(*lists: Sequence[Hit]) -> list[Hit]:
    """One hit per chunk, score parts of every search that found it merged, in a stable
    order (first seen)."""
    merged: dict[tuple[int, int], Hit] = {}
    for hits in lists:
        for h in hits:
            if h.key in merged:
                merged[h.key].parts.update(h.parts)
            else:
                merged[h.key] = h
    return list(merged.values())

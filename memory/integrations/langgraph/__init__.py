"""LangGraph on this store: :class:`MemoryCheckpointer` (a ``BaseCheckpointSaver``: a graph's
checkpoints and pending writes as events of the thread's session) and :class:`MemoryStore`
(a ``BaseStore``: long-term items as events, searched with this library's retrieval).

Needs the ``langgraph`` extra (``pip install 'memory-pg[langgraph]'``).
"""

from .checkpointer import MemoryCheckpointer
from .items import MemoryStore

__all__ = ["MemoryCheckpointer", "MemoryStore"]

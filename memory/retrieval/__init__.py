"""The retriever: context for each stateless model call, under a token budget, with sources.

``search/`` finds candidates (pgvector cosine and Postgres full text, scope first),
``ranking/`` fuses and orders them (a replaceable seam), ``context.py`` builds a context
under the budget (recent turns from ``turns.py``, memories packed by ``packing.py``) into
the values of ``result.py`` (``memories.py`` searches memories without packing
a context), ``recording.py`` and ``replaying.py`` record it in the log and
rebuild it, ``render.py`` renders it for chat APIs, ``tokens.py`` counts tokens offline.
It reads the store only through ``store_view.StoreView``. Entry point:
:meth:`memory.Store.context`.
"""

from .context import build_context
from .memories import search_memories
from .ranking import Ranked, Ranker, RankRequest, rank
from .recording import CONTEXT_EVENT
from .replaying import replay
from .result import Context, Memory, Source, Summary, Turn
from .scopecache import ScopeCache
from .search import Hit, Scope
from .settings import DEFAULT_SETTINGS, RetrievalSettings
from .store_view import StoreView
from .tokens import CharCounter, TokenCounter, WordPieceCounter, default_counter

__all__ = [
    "CONTEXT_EVENT",
    "DEFAULT_SETTINGS",
    "CharCounter",
    "Context",
    "Hit",
    "Memory",
    "RankRequest",
    "Ranked",
    "Ranker",
    "RetrievalSettings",
    "Scope",
    "ScopeCache",
    "Source",
    "StoreView",
    "Summary",
    "TokenCounter",
    "Turn",
    "WordPieceCounter",
    "build_context",
    "default_counter",
    "rank",
    "replay",
    "search_memories",
]

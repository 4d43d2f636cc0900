"""The retriever: context for each stateless model call, under a token budget, with sources.

``search.py`` finds candidates (pgvector cosine and Postgres full text, scope first),
``ranking/`` fuses and orders them (a replaceable seam), ``context.py`` packs recent
turns, the session summary and memories under the budget into the values of ``result.py``,
``render.py`` renders them for chat APIs, ``tokens.py`` counts tokens offline. Entry
point: :meth:`memory.Store.context`.
"""

from .context import build_context, replay
from .ranking import Ranked, RankRequest, rank
from .result import Context, Memory, Source, Summary, Turn
from .search import Hit
from .settings import DEFAULT_SETTINGS, RetrievalSettings
from .tokens import CharCounter, TokenCounter, WordPieceCounter, default_counter

__all__ = [
    "DEFAULT_SETTINGS",
    "CharCounter",
    "Context",
    "Hit",
    "Memory",
    "RankRequest",
    "Ranked",
    "RetrievalSettings",
    "Source",
    "Summary",
    "TokenCounter",
    "Turn",
    "WordPieceCounter",
    "build_context",
    "default_counter",
    "rank",
    "replay",
]

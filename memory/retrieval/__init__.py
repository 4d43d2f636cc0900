"""The retriever: context for each stateless model call, under a token budget, with sources.

``search.py`` finds candidates (pgvector cosine and Postgres full text, scope first),
``ranking.py`` fuses and orders them (a replaceable seam), ``context.py`` packs recent
turns, the session summary and memories under the budget, ``render.py`` renders the result
for chat APIs, ``tokens.py`` counts tokens offline. Entry point: :meth:`memory.Store.context`.
"""

from .context import Context, Memory, Source, Summary, Turn, build_context, replay
from .ranking import Ranked, RankRequest, rank
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

"""Ranking: how the retriever orders what the searches found.

Open ``request`` for the seam a ranker plugs into (``RankRequest`` in, ``Ranked`` out);
``fusion`` for the default ranker (fusing vector and full-text hits), which hands a small
scope to ``scope`` (the whole-scope ranker with its session prior); ``dates`` and ``names``
for what it reads in the query; ``mmr`` for diversity; ``expansion`` for widening a
question's lexical query with the scope's nearest words. The rest of the retriever imports
from here.
"""

from . import expansion
from .fusion import rank
from .names import vector_query
from .request import Ranked, Ranker, RankRequest
from .scope import rank_scope

__all__ = [
    "RankRequest",
    "Ranked",
    "Ranker",
    "expansion",
    "rank",
    "rank_scope",
    "vector_query",
]

"""Ranking: how the retriever orders what the searches found.

Open ``fusion`` for the rankers (fusing vector and full-text hits, the whole-scope ranker
with its date matching and session prior, MMR) and the ``RankRequest`` they read;
``expansion`` for widening a question's lexical query with the scope's nearest words. The
rest of the retriever imports from here.
"""

from . import expansion
from .fusion import Ranked, Ranker, RankRequest, rank, vector_query

__all__ = [
    "RankRequest",
    "Ranked",
    "Ranker",
    "expansion",
    "rank",
    "vector_query",
]

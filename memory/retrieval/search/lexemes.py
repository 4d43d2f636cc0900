"""The query's lexemes as the chunks' tsvector holds them, asked of Postgres once per text
and remembered in the store's :class:`~memory.retrieval.scopecache.LexemeMemo`.
"""

from __future__ import annotations

from .chunks import ChunkSearch

QUERY_LEXEMES = """
SELECT lex FROM unnest(tsvector_to_array(to_tsvector(%(config)s::regconfig, %(query)s))) lex
"""

def query_lexemes(finder: ChunkSearch, query: str) -> list[str]:
    """The query's lexemes as the chunks' tsvector would hold them (stemmed, no stop
    words), distinct, in the order Postgres gives them, at most ``max_query_terms``."""
    config = finder.settings.text_search_config
    found = finder.lexemes.get(finder.conn, config, query)
    if found is None:
        rows = finder.conn.exec_driver_sql(QUERY_LEXEMES, {
            "config": config, "query": query}).fetchall()
        found = [r[0] for r in rows]
        finder.lexemes.put(finder.conn, config, query, found)
    return list(found)[: finder.settings.max_query_terms]

"""Finding the scope's author names in a query: removed from the vector query (a small
embedding model otherwise ranks every turn of the named person alike) and read as the
speaker the query asks about."""

from __future__ import annotations

import re
from collections.abc import Sequence


def names_pattern(names: Sequence[str]) -> re.Pattern[str] | None:
    names = [n for n in names if n and n.strip()]
    if not names:
        return None
    alts = "|".join(re.escape(n.strip()) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alts})(?:'s|\u2019s)?(?!\w)", re.IGNORECASE)


def vector_query(query: str, authors: Sequence[str]) -> str:
    """The query for the vector search: the scope's author names removed (a small
    embedding model otherwise ranks every turn of the named person alike). Unchanged if
    nothing else would be left."""
    pattern = names_pattern(authors)
    if pattern is None:
        return query
    out = re.sub(r"\s+", " ", pattern.sub(" ", query)).strip()
    return out if re.search(r"\w", out) else query


def named_authors(query: str, authors: Sequence[str]) -> list[str]:
    """The authors whose names the query mentions (whole words, any case)."""
    return [a for a in authors
            if a and (p := names_pattern([a])) is not None and p.search(query)]

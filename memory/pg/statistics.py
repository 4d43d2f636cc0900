"""Planner statistics that hold no content: the statistics target of an index's
expression columns set to 0, and what an ANALYZE already stored for them cleared.

The baseline migration gives every content column of a memory_* relation a target of 0
(alembic/sql/08_statistics.sql, allow-list in ``memory.pg.constants``); an index created
at run time (a projection's HNSW index) gets the same here, so no sample of its values
reaches ``pg_statistic``.
"""

from __future__ import annotations

import sqlalchemy as sa


def no_statistics(conn: sa.Connection, index: str) -> int:
    """Give the expression columns of ``index`` a statistics target of 0 and clear what
    an ANALYZE may already have stored for them (an index the projection runner creates
    at run time gets what the baseline migration gives the others). Returns how many columns."""
    cols = conn.exec_driver_sql(
        "SELECT a.attnum, a.attname FROM pg_index i JOIN pg_attribute a "
        "ON a.attrelid = i.indexrelid WHERE i.indexrelid = to_regclass(%s) "
        "AND a.attnum > 0 AND i.indkey[a.attnum - 1] = 0", (index,)).fetchall()
    for attnum, attname in cols:
        conn.exec_driver_sql(
            f"ALTER INDEX {quote_ident(conn, index)} ALTER COLUMN {int(attnum)} SET STATISTICS 0")
        clear_statistics(conn, index, attname)
    return len(cols)


def clear_statistics(conn: sa.Connection, relation: str, column: str) -> None:
    """Drop what ANALYZE stored for ``relation.column`` (pg_clear_attribute_stats where the
    server has it, else a DELETE from pg_statistic, which needs the owner)."""
    if conn.exec_driver_sql("SELECT to_regprocedure('pg_clear_attribute_stats"
                            "(text, text, text, boolean)') IS NOT NULL").scalar_one():
        conn.exec_driver_sql(
            "SELECT pg_clear_attribute_stats(current_schema(), %s, %s, b) "
            "FROM unnest(ARRAY[false, true]) b", (relation, column)).fetchall()
    else:
        conn.exec_driver_sql(
            "DELETE FROM pg_statistic WHERE starelid = to_regclass(%s) AND staattnum = "
            "(SELECT attnum FROM pg_attribute WHERE attrelid = to_regclass(%s) "
            "AND attname = %s)", (relation, relation, column))


def quote_ident(conn: sa.Connection, name: str) -> str:
    """``name`` quoted as the server quotes an identifier."""
    return str(conn.exec_driver_sql("SELECT quote_ident(%s)", (name,)).scalar_one())

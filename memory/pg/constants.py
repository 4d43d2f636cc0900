"""The names and numbers the schema's SQL and the library's Python share.

The baseline migration (alembic/versions/0001_baseline.py) writes these into the server
functions it creates (``{{NAME}}`` in alembic/sql/*.sql); the library uses the same
values to take locks, listen, recognise the errors the functions raise and name roles.
Each is defined here once; tests/pg/test_migrations.py checks that the functions in the
database carry the same values. A value changed here needs a migration that re-creates
the functions holding it (with their whole new text).

This module imports nothing of the library, so any layer (and any migration) may read it.
"""

from __future__ import annotations

import re

APPEND_LOCK_KEY = 7_263_520_011
"""The transaction-level advisory lock every append holds until commit: positions become
visible in increasing order, so a reader's checkpoint never skips one (memory/log/sql.py)."""

MIGRATE_LOCK_KEY = 7_263_520_000
"""The advisory lock that serialises concurrent migrations (memory.pg.engine.migrate)."""

NOTIFY_CHANNEL = "memory_events"
"""The channel an append's wake-up goes to (empty payload: listeners then read the log)."""

APP_ROLE = "memory_app"
"""The group role (NOLOGIN) that holds the tenant roles' privileges."""

ROLE_PREFIX = "memory_t_"
"""A tenant's login role: this prefix, then 24 hex digits of
sha256(database || 0x1f || tenant)."""

# SQLSTATEs raised by the server functions and the append-only trigger.
SQLSTATE_CONCURRENCY = "MM001"
"""The session is not at the version the append expected."""
SQLSTATE_IDEMPOTENCY = "MM002"
"""An event id was used before for other content, or in another batch."""
SQLSTATE_OWNERSHIP = "MM003"
"""The session belongs to another actor."""
SQLSTATE_STALE_KEY = "MM004"
"""The actor key or epoch an append is sealed under was destroyed (a forget meanwhile)."""
SQLSTATE_APPEND_ONLY = "MM010"
"""An UPDATE, DELETE or TRUNCATE of the event log."""
SQLSTATE_RESEND = "MM020"
"""A set-based append met an event id seen before; nothing was written."""
SQLSTATE_TENANT = "MM030"
"""A call named another tenant than its login role's, or came from no tenant's role."""
SQLSTATE_MALFORMED = "MM031"
"""Input a SECURITY DEFINER function refuses by its shape or size."""

STATISTICS_ALLOWED = ("tenant", "actor_id", "session_id", "key_id", "batch", "master_id",
                      "name", "status", "type")
"""The text columns of memory_* tables whose planner statistics stay: identifiers, no
content. Every other text, JSON, bytes, tsvector or vector column has a statistics target
of 0 (the baseline migration; memory/erasure.py for indexes made at run time)."""

SQL_CONSTANTS: dict[str, str] = {
    "APPEND_LOCK_KEY": str(APPEND_LOCK_KEY),
    "NOTIFY_CHANNEL": NOTIFY_CHANNEL,
    "APP_ROLE": APP_ROLE,
    "ROLE_PREFIX": ROLE_PREFIX,
    "SQLSTATE_CONCURRENCY": SQLSTATE_CONCURRENCY,
    "SQLSTATE_IDEMPOTENCY": SQLSTATE_IDEMPOTENCY,
    "SQLSTATE_OWNERSHIP": SQLSTATE_OWNERSHIP,
    "SQLSTATE_STALE_KEY": SQLSTATE_STALE_KEY,
    "SQLSTATE_APPEND_ONLY": SQLSTATE_APPEND_ONLY,
    "SQLSTATE_RESEND": SQLSTATE_RESEND,
    "SQLSTATE_TENANT": SQLSTATE_TENANT,
    "SQLSTATE_MALFORMED": SQLSTATE_MALFORMED,
    "STATISTICS_ALLOWED": ", ".join(f"'{name}'" for name in STATISTICS_ALLOWED),
}
"""What ``{{NAME}}`` stands for in alembic/sql/*.sql (the text that goes into the SQL)."""

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def render_sql(text: str, where: str = "SQL") -> str:
    """``text`` with every ``{{NAME}}`` replaced by ``SQL_CONSTANTS[NAME]``; an unknown
    name is a KeyError naming ``where``, so a typo never reaches the database."""

    def constant(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in SQL_CONSTANTS:
            raise KeyError(f"{where}: no constant {key} in memory.pg.constants")
        return SQL_CONSTANTS[key]

    return _PLACEHOLDER.sub(constant, text)

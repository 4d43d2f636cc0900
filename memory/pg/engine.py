"""Connecting to PostgreSQL and bringing its schema to the current migration.

One engine per store. Every connection carries ``lock_timeout``, ``statement_timeout``
and ``idle_in_transaction_session_timeout`` so that no call waits forever on a lock or a
forgotten transaction.
"""

from __future__ import annotations

from importlib import util as importlib_util
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..config import Limits, database_url_from_env
from ..errors import ConfigurationError
from . import embedded
from .codec import parse_json
from .constants import MIGRATE_LOCK_KEY

if TYPE_CHECKING:
    from alembic.config import Config

SCHEMA_HEAD = "0003"
"""The newest migration in alembic/versions (tests/pg/test_migrations.py checks it): a
database already there is opened after reading one row, without loading Alembic, whose
~150 modules and ~20k objects would otherwise stay in every process (a quarter of what the
garbage collector walks in a full pass)."""


def resolve_url(url: str | None) -> str:
    """An explicit URL, else ``MEMORY_DATABASE_URL``, else the embedded server."""
    chosen = url or database_url_from_env()
    if chosen is None:
        return embedded.start()
    if chosen.startswith(("postgres://", "postgresql://")):
        chosen = "postgresql+psycopg://" + chosen.split("://", 1)[1]
    if not chosen.startswith("postgresql+psycopg://"):
        raise ConfigurationError(
            f"unsupported database URL {chosen.split('://', 1)[0]}://...: "
            "memory needs PostgreSQL with pgvector (postgresql://...)"
        )
    return chosen


def connect_args(limits: Limits | None = None) -> dict[str, str]:
    """What every connection of the library logs in with: the limits as session settings
    and the application name. The engines pass it to psycopg through SQLAlchemy; the async
    face (memory/aio) passes it to ``psycopg.AsyncConnection.connect``."""
    limits = limits or Limits()
    options = " ".join(
        [
            f"-c lock_timeout={limits.lock_timeout_ms}",
            f"-c statement_timeout={limits.statement_timeout_ms}",
            f"-c idle_in_transaction_session_timeout={limits.idle_in_transaction_timeout_ms}",
        ]
    )
    return {"options": options, "application_name": "memory"}


def make_engine(url: str, limits: Limits | None = None, *, pool_size: int = 5) -> Engine:
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=10,
        pool_pre_ping=True,
        connect_args=connect_args(limits),
        json_deserializer=parse_json,  # as sealed payloads are read (memory/pg/codec.py)
    )


def migrations_dir() -> Path:
    """The Alembic scripts: inside the wheel as memory/_alembic, else the repo's alembic/."""
    spec = importlib_util.find_spec("memory._alembic")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "alembic"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def current_revision(conn: sa.Connection) -> str | None:
    """The revision the database is at (``alembic_version``), None before the first."""
    if conn.execute(sa.text("SELECT to_regclass('alembic_version')")).scalar() is None:
        return None
    versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
    found = list(versions)
    return found[0] if len(found) == 1 else None


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision``; safe to call on every open (a database at
    :data:`SCHEMA_HEAD` costs one read)."""
    with engine.begin() as conn:
        if revision == "head" and current_revision(conn) == SCHEMA_HEAD:
            return
        from alembic import command

        # Serialise concurrent openers: two processes migrating at once would race.
        conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({MIGRATE_LOCK_KEY})"))
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)

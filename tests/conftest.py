"""One embedded PostgreSQL per test run; a fresh database per test, cloned from a migrated
template (cloning takes milliseconds; migrating every test would take seconds)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from support import TEMPLATE, new_database

import memory
from memory.pg import embedded
from memory.pg import engine as db


@pytest.fixture(scope="session")
def memory_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The embedded server's home for this run; MEMORY_HOME points here so nothing the
    tests run (the CLI included) touches the user's own data folder."""
    home = tmp_path_factory.mktemp("memory-home")
    previous = os.environ.get("MEMORY_HOME")
    os.environ["MEMORY_HOME"] = str(home)
    os.environ.pop("MEMORY_DATABASE_URL", None)
    yield home
    embedded.stop(home)
    if previous is None:
        os.environ.pop("MEMORY_HOME", None)
    else:
        os.environ["MEMORY_HOME"] = previous


@pytest.fixture(scope="session")
def server_url(memory_home: Path) -> str:
    """URL of the embedded server's maintenance database (over its Unix socket)."""
    return embedded.start(memory_home)


def _with_database(url: str, name: str) -> str:
    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def template_url(server_url: str) -> str:
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        conn.exec_driver_sql(f"CREATE DATABASE {TEMPLATE}")
    url = _with_database(server_url, TEMPLATE)
    engine = db.make_engine(url)
    db.migrate(engine)
    engine.dispose()
    admin.dispose()
    return url


@pytest.fixture
def database_url(server_url: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    assert template_url
    with new_database(server_url, "test") as url:
        yield url


@pytest.fixture
def store(database_url: str) -> Iterator[memory.Store]:
    with memory.Store.open(database_url, migrate=False) as s:
        yield s


@pytest.fixture
def engine(store: memory.Store) -> sa.Engine:
    return store.engine


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    """The real default model (all-MiniLM-L6-v2, offline), loaded once per run."""
    from memory.embedding import default_embedder

    return default_embedder()

"""The database a benchmark runs in: a PostgreSQL server and a scratch database on it.

Appended events cannot be deleted, so a benchmark never writes into a database that
matters: it makes its own database on the server and drops it when done. The server is
the one a URL names, else an embedded server; one started in a temporary folder is
stopped and the folder removed when the run ends, one started in a given ``MEMORY_HOME``
is left running for the next run. The role behind a URL needs CREATEDB.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from memory.pg import embedded
from memory.pg import engine as db


@dataclass(frozen=True)
class Server:
    url: str
    """The server's SQLAlchemy URL (its maintenance database)."""
    home: Path | None
    """The ``MEMORY_HOME`` of the embedded server, if the run uses one."""


@contextmanager
def server(url: str | None = None, *, home: Path | None = None,
           prefix: str = "memory-bench-", isolate_home: bool = False,
           keep: bool = False) -> Iterator[Server]:
    """The server ``url`` names; else the embedded server in ``home`` (left running);
    else an embedded server in a new temporary folder, stopped and removed at the end
    unless ``keep`` (a database kept for inspection lives there).

    A temporary server gets its own master key file in its folder; with
    ``isolate_home`` the whole run's ``MEMORY_HOME`` is that folder (keys, model
    exports), so nothing of the user's is read or written."""
    if url:
        yield Server(db.resolve_url(url), None)
        return
    if home is not None:
        yield Server(embedded.start(home), home)
        return
    temp = Path(tempfile.mkdtemp(prefix=prefix))
    if isolate_home:
        os.environ["MEMORY_HOME"] = str(temp)
    else:
        os.environ.setdefault("MEMORY_MASTER_KEY_FILE", str(temp / "master.key"))
    try:
        yield Server(embedded.start(temp), temp)
    finally:
        if keep:
            print(f"kept: the embedded server in {temp} (memory db stop with "
                  f"MEMORY_HOME={temp} stops it)", file=sys.stderr)
        else:
            embedded.stop(temp)
            shutil.rmtree(temp, ignore_errors=True)


def database_url(server_url: str, name: str) -> str:
    """The URL of database ``name`` on the server ``server_url`` names."""
    return sa.engine.make_url(server_url).set(database=name).render_as_string(
        hide_password=False)


def _admin(server_url: str, *statements: str) -> None:
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        admin.dispose()


def create_database(server_url: str, name: str, *, template: str | None = None) -> str:
    """A new database ``name`` (a leftover of an interrupted run dropped first), copied
    from ``template`` if given; its URL."""
    _admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
           f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    return database_url(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name``, closing any session still connected to it."""
    _admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def scratch_database(server_url: str, name: str, *, keep: bool = False) -> Iterator[str]:
    """A new database ``name`` for the ``with`` block (its URL), dropped afterwards
    unless ``keep``."""
    url = create_database(server_url, name)
    try:
        yield url
    finally:
        if not keep:
            drop_database(server_url, name)

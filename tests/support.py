"""Helpers shared by the tests: fresh databases from the template, URLs."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import sqlalchemy as sa

import memory
from memory.log import sql as log_sql

TEMPLATE = "memory_template"  # made by conftest.template_url
_counter = itertools.count()


def psycopg_url(url: str) -> str:
    """A SQLAlchemy URL as libpq/psycopg takes it."""
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
        hide_password=False)


@contextmanager
def new_database(server_url: str, tag: str, *, template: str | None = TEMPLATE
                 ) -> Iterator[str]:
    """A fresh database cloned from the migrated template (milliseconds, not a migration
    run), or an empty one with ``template=None``; dropped on exit. Fixtures and hypothesis
    examples both use it."""
    name = f"{tag}_{os.getpid()}_{next(_counter)}"
    clone = f" TEMPLATE {template}" if template else ""
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}{clone}")
    try:
        yield sa.engine.make_url(server_url).set(database=name).render_as_string(
            hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@contextmanager
def open_append(database_url: str, store: memory.Store, session: str,
                events: list[memory.NewEvent], actor: str = "slow") -> Iterator[list[Any]]:
    """An append whose transaction stays open inside the block: a foreign writer of the
    same database (BEGIN, the statement the library runs, ..., COMMIT when the block
    ends), to test what readers and other writers see meanwhile."""
    prepared = store.log.prepare(actor, events)
    params = log_sql.append_params(store.tenant, actor, session, None, prepared)
    with psycopg.connect(psycopg_url(database_url)) as conn:
        rows = conn.execute(log_sql.APPEND, params).fetchall()
        yield rows
        conn.commit()


@contextmanager
def new_store(server_url: str, tag: str) -> Iterator[memory.Store]:
    with new_database(server_url, tag) as url, memory.Store.open(url, migrate=False) as store:
        yield store


@contextmanager
def shared_store(server_url: str, template_url: str, tag: str) -> Iterator[memory.Store]:
    """One migrated database for a whole module of tests that never write (every call in
    them is refused), so each case does not pay for a database of its own."""
    assert template_url
    with new_store(server_url, f"test_{tag}") as store:
        yield store


def forget_during_open_append(admin: sa.Engine, statement: str, params: Any,
                              forget: Callable[[], Any]) -> Any:
    """Run an append ``statement`` in a transaction left open, start ``forget`` in a
    thread, check that it waits for that transaction, commit, and return what the forget
    returned."""
    return waits_for_open_transaction(
        admin, lambda conn: conn.exec_driver_sql(statement, params).fetchall(), forget)


def waits_for_open_transaction(admin: sa.Engine, hold: Callable[[sa.Connection], Any],
                               action: Callable[[], Any],
                               meanwhile: Callable[[], Any] | None = None) -> Any:
    """Run ``hold`` in a transaction left open, start ``action`` in a thread, check that
    it waits for that transaction (running ``meanwhile`` while it does), commit, and
    return what ``action`` returned."""
    done: list[Any] = []
    with admin.connect() as conn:
        hold(conn)
        thread = threading.Thread(target=lambda: done.append(action()))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # waiting for the open transaction
        if meanwhile is not None:
            meanwhile()
            assert thread.is_alive()
        conn.commit()
    thread.join(10)
    assert not thread.is_alive() and done
    return done[0]

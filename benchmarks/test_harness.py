"""The scratch server and databases the benchmarks run in (benchmarks/harness.py), on a
real embedded server in a temporary folder. Run with ``pytest benchmarks/test_harness.py``."""

from __future__ import annotations

import harness
import pytest
import sqlalchemy as sa


def databases(server_url: str) -> set[str]:
    engine = sa.create_engine(server_url)
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.exec_driver_sql("SELECT datname FROM pg_database")}
    finally:
        engine.dispose()


def test_a_temporary_server_and_its_scratch_databases_leave_nothing_behind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMORY_MASTER_KEY_FILE", raising=False)
    with harness.server(prefix="memory-bench-test-") as srv:
        assert srv.home is not None and srv.home.is_dir()
        with harness.scratch_database(srv.url, "bench_scratch") as url:
            assert sa.engine.make_url(url).database == "bench_scratch"
            assert "bench_scratch" in databases(srv.url)
            engine = sa.create_engine(url)  # a session still open does not stop the drop
            conn = engine.connect()
        assert "bench_scratch" not in databases(srv.url)
        conn.close()
        engine.dispose()

        # A leftover of an interrupted run is replaced, not an error; keep=True keeps it.
        harness.create_database(srv.url, "bench_left")
        with harness.scratch_database(srv.url, "bench_left", keep=True):
            pass
        assert "bench_left" in databases(srv.url)
        harness.drop_database(srv.url, "bench_left")
        assert "bench_left" not in databases(srv.url)
    assert not srv.home.exists()  # stopped and removed


def test_a_url_names_the_server_and_nothing_is_started() -> None:
    with harness.server("postgresql://user@db.example/x") as srv:
        assert srv.url == "postgresql+psycopg://user@db.example/x"
        assert srv.home is None

"""Erasure that reaches what PostgreSQL keeps: no content or key material in
planner statistics, a forgotten actor's key material gone from the database's files after
a checkpoint, pending erasure when the connection may not vacuum, and a typed error when a
forgotten recorded context is replayed."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import memory
from memory import erasure, message
from memory.cli import forget as forget_cli
from memory.pg import embedded
from memory.pg import engine as db
from memory.pg.constants import render_sql

A_MARK = "zqamark" + uuid.uuid4().hex[:8]
B_MARK = "zqbmark" + uuid.uuid4().hex[:8]
# The statistics step of the baseline migration, run again on a database an ANALYZE filled.
STATISTICS_SQL = Path(__file__).resolve().parents[2] / "alembic" / "sql" / "08_statistics.sql"
CONTENT_TYPES = ("text", "bytea", "jsonb", "tsvector", "vector", "vector[]")


@pytest.fixture
def admin(database_url: str) -> Iterator[sa.Engine]:
    """The owner (a superuser): sees every tenant, reads pg_statistic, runs CHECKPOINT."""
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def append_markers(store: memory.Store) -> None:
    t0 = datetime(2024, 3, 1, 9, tzinfo=UTC)  # long quiet: the sessions get summaries
    for actor, mark in (("ann", A_MARK), ("bea", B_MARK)):
        for s in range(3):
            store.append(f"{actor}-{s}", [
                message("user", f"My locker code is {mark} and I keep it secret.",
                        occurred_at=t0 + timedelta(hours=s)),
                message("assistant", f"Noted: the locker code {mark}.",
                        occurred_at=t0 + timedelta(hours=s, minutes=1)),
            ], actor=actor)
    # A later event: every session above is quiet by then, so each gets its summary.
    store.append("cal-0", message("user", "Good morning.", occurred_at=t0 + timedelta(days=2)),
                 actor="cal")


def find_in_tables(engine: sa.Engine, mark: str) -> dict[str, int]:
    """Every table whose rows, cast to text (bytea as hex, tsvector lexemes), hold
    ``mark`` in clear or as hex bytes."""
    found = {}
    with engine.connect() as conn:
        tables = [r[0] for r in conn.exec_driver_sql(
            "SELECT quote_ident(table_name) FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")]
        for table in tables:
            n = conn.exec_driver_sql(
                f"SELECT count(*) FROM {table} t WHERE t::text ILIKE %s OR t::text ILIKE %s",
                (f"%{mark}%", f"%{mark.encode().hex()}%")).scalar_one()
            if n:
                found[table] = n
    return found


def statistics_text(engine: sa.Engine) -> str:
    """Every value pg_statistic holds for this database's relations, as text."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT concat_ws(' ', stavalues1::text, stavalues2::text, stavalues3::text, "
            "stavalues4::text, stavalues5::text) FROM pg_statistic s "
            "JOIN pg_class c ON c.oid = s.starelid "
            "WHERE c.relnamespace = 'public'::regnamespace").fetchall()
    return "\n".join(r[0] or "" for r in rows)


def key_material(engine: sa.Engine, actor: str) -> list[bytes]:
    """The actor's wrapped data key and every 32-byte secret of its epochs and events."""
    with engine.connect() as conn:
        wrapped = [bytes(r[0]) for r in conn.exec_driver_sql(
            "SELECT wrapped FROM memory_keys WHERE actor_id = %s", (actor,))]
        keys = [r[0] for r in conn.exec_driver_sql(
            "SELECT key_id FROM memory_keys WHERE actor_id = %s", (actor,))]
        secrets = [bytes(r[0]) for r in conn.exec_driver_sql(
            "SELECT secrets FROM memory_event_secrets WHERE key_id = ANY(%s) UNION ALL "
            "SELECT secret FROM memory_event_keys WHERE key_id = ANY(%s) "
            "AND secret IS NOT NULL", (keys, keys))]
    pieces = [s[i:i + 32] for s in secrets for i in range(0, len(s), 32)]
    return wrapped + [p for p in pieces if any(p)]


def database_files(engine: sa.Engine, home: Path) -> list[Path]:
    """The table and index files of this database (base/<oid>/), after a CHECKPOINT has
    written every dirty page to them."""
    with engine.connect() as conn:
        conn.exec_driver_sql("CHECKPOINT")
        oid = conn.exec_driver_sql(
            "SELECT oid FROM pg_database WHERE datname = current_database()").scalar_one()
    folder = embedded.data_dir(home) / "base" / str(oid)
    files = [p for p in folder.iterdir() if p.is_file()]
    assert files
    return files


def found_on_disk(files: list[Path], needles: list[bytes]) -> int:
    data = [p.read_bytes() for p in files]
    return sum(any(n in d for d in data) for n in needles)


def test_every_content_column_has_no_statistics(store: memory.Store, admin: sa.Engine,
                                                embedder) -> None:  # type: ignore[no-untyped-def]
    """Every text/bytea/jsonb/tsvector/vector column of every memory_* table, and every
    expression column of every memory_* index (the runner's HNSW indexes included), has
    statistics target 0 unless it is an identifier on the allow-list: a migration that
    adds such a column and forgets fails here."""
    store.append("s", message("user", "hello there"), actor="ann")
    store.project(embedder=embedder)  # creates a generation's HNSW index at run time
    with admin.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT c.relname, c.relkind, a.attname, format_type(a.atttypid, NULL), "
            "coalesce(a.attstattarget, -1), i.indkey[a.attnum - 1] "
            "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
            "LEFT JOIN pg_index i ON i.indexrelid = c.oid "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relname LIKE 'memory\\_%%' "
            "AND c.relkind IN ('r', 'p', 'm', 'i', 'I') AND a.attnum > 0 "
            "AND NOT a.attisdropped").fetchall()
        hnsw = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'memory\\_chunks\\_hnsw%%'"
        ).scalar_one()
    assert hnsw >= 1
    content = [r for r in rows if r[3] in CONTENT_TYPES and (
        (r[1] in "rpm" and r[2] not in erasure.STATISTICS_ALLOWED) or (r[1] in "iI" and r[5] == 0))]
    assert {(r[0], r[2]) for r in content} >= {
        ("memory_events", "payload"), ("memory_events", "payload_enc"),
        ("memory_events", "metadata"), ("memory_chunks", "text"), ("memory_chunks", "tsv"),
        ("memory_chunks", "embedding"), ("memory_chunks", "pieces"), ("memory_words", "word"),
        ("memory_words", "embedding"), ("memory_summaries", "text"),
        ("memory_keys", "wrapped"), ("memory_event_secrets", "secrets"),
        ("memory_event_keys", "secret")}
    assert [(r[0], r[2]) for r in content if r[4] != 0] == []
    # The allow-list holds identifiers only.
    assert not set(erasure.STATISTICS_ALLOWED) & {"text", "word", "lexeme", "payload",
                                                   "metadata", "wrapped", "secrets"}


def test_analyze_copies_no_marker_into_statistics(store: memory.Store, admin: sa.Engine,
                                                  embedder) -> None:  # type: ignore[no-untyped-def]
    append_markers(store)
    store.project(embedder=embedder)
    assert find_in_tables(admin, A_MARK)  # the projections hold the text in clear
    with admin.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    stats = statistics_text(admin)
    assert "ann" in stats and "bea" in stats  # identifier columns keep their statistics
    assert A_MARK not in stats and B_MARK not in stats
    for secret in key_material(admin, "ann"):
        assert secret.hex() not in stats


def test_migration_clears_statistics_an_earlier_analyze_left(
        store: memory.Store, admin: sa.Engine, database_url: str,
        embedder) -> None:  # type: ignore[no-untyped-def]
    append_markers(store)
    store.project(embedder=embedder)
    owner = db.make_engine(database_url)
    try:
        with admin.connect() as conn:  # default targets, then ANALYZE
            for rel, col in conn.exec_driver_sql(
                    "SELECT attrelid::regclass::text, quote_ident(attname) FROM pg_attribute "
                    "WHERE attstattarget = 0 AND attrelid::regclass::text LIKE 'memory%%' "
                    "AND attnum > 0").fetchall():
                conn.exec_driver_sql(f"ALTER TABLE {rel} ALTER COLUMN {col} "
                                     "SET STATISTICS -1")
            conn.exec_driver_sql("ANALYZE")
        assert A_MARK in statistics_text(admin)
        with owner.begin() as conn:  # what the baseline migration runs last
            conn.execute(sa.text(render_sql(STATISTICS_SQL.read_text(encoding="utf-8"))))
    finally:
        owner.dispose()
    assert A_MARK not in statistics_text(admin) and B_MARK not in statistics_text(admin)


def test_forget_erases_statistics_tables_and_key_bytes_on_disk(
        store: memory.Store, admin: sa.Engine, database_url: str, memory_home: Path,
        embedder) -> None:  # type: ignore[no-untyped-def]
    append_markers(store)
    store.project(embedder=embedder)
    with admin.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    ann_keys, bea_keys = key_material(admin, "ann"), key_material(admin, "bea")
    assert len(ann_keys) >= 2 and len(bea_keys) >= 2  # a wrapped key and an epoch secret
    files = database_files(admin, memory_home)
    # The scan sees what it looks for: every key is in the files before the forget.
    assert found_on_disk(files, ann_keys) == len(ann_keys)

    result = store.forget(actor="ann")
    assert result.erasure is not None and result.erasure.done, result.erasure
    assert result.erasure.pending == 0

    assert find_in_tables(admin, A_MARK) == {}
    assert set(find_in_tables(admin, B_MARK)) >= {"memory_chunks", "memory_summaries"}
    stats = statistics_text(admin)
    assert A_MARK not in stats
    for secret in ann_keys:
        assert secret.hex() not in stats
    with admin.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM memory_forget_requests "
                                    "WHERE erased_at IS NULL").scalar_one() == 0

    files = database_files(admin, memory_home)  # after a CHECKPOINT
    assert found_on_disk(files, ann_keys) == 0
    assert found_on_disk(files, bea_keys) == len(bea_keys)

    # Nothing left that the master key opens: a fresh store (no cached key) reads ann's
    # events as forgotten, bea's in clear.
    with memory.Store.open(database_url, migrate=False) as fresh:
        events = [e for e in fresh.read() if e.type == "message"]
    ann = [e for e in events if e.actor_id == "ann"]
    assert ann and all(e.forgotten and e.payload == {} for e in ann)
    assert all(B_MARK in e.payload["content"] for e in events if e.actor_id == "bea")


def test_rewriting_the_derived_tables_leaves_no_text_in_their_files(
        store: memory.Store, admin: sa.Engine, memory_home: Path,
        embedder) -> None:  # type: ignore[no-untyped-def]
    """The default VACUUM frees the derived rows' space without zeroing it (the text stays
    in the files until reused, docs/threat-model.md, "What forget leaves behind");
    ``rewrite_derived`` rewrites those tables, and nothing of the forgotten actor's text is
    left in base/."""
    append_markers(store)
    store.project(embedder=embedder)
    mark = [A_MARK.encode()]
    assert found_on_disk(database_files(admin, memory_home), mark) == 1
    result = store.forget(actor="ann")
    assert result.erasure is not None and result.erasure.done
    assert found_on_disk(database_files(admin, memory_home), mark) == 1  # freed, not gone
    done = erasure.erase(admin, rewrite_derived=True)
    assert done.done
    files = database_files(admin, memory_home)
    assert found_on_disk(files, mark) == 0
    assert found_on_disk(files, [B_MARK.encode()]) == 1


def test_forgetting_single_events_erases_their_secrets(
        store: memory.Store, admin: sa.Engine, memory_home: Path) -> None:
    out = store.append("s", [message("user", f"one {A_MARK}"), message("user", "two")],
                       actor="ann")
    store.append("s", message("user", "three"), actor="ann")  # a later epoch, kept
    with admin.connect() as conn:
        before = {bytes(r[0]) for r in conn.exec_driver_sql(
            "SELECT secrets FROM memory_event_secrets")}
    pieces = [s[i:i + 32] for s in before for i in range(0, len(s), 32)]
    assert found_on_disk(database_files(admin, memory_home), pieces) == len(pieces)
    result = store.forget(event_ids=[out[0].event_id])
    assert result.erasure is not None and result.erasure.done
    with admin.connect() as conn:
        after = {bytes(r[0]) for r in conn.exec_driver_sql(
            "SELECT secrets FROM memory_event_secrets")}
    gone = [s[i:i + 32] for s in before - after for i in range(0, len(s), 32)]
    gone = [g for g in gone if not any(g in a for a in after)]
    assert gone
    assert found_on_disk(database_files(admin, memory_home), gone) == 0
    # The other events of the forgotten event's epoch keep their keys.
    assert [e.forgotten for e in store.read_session("s")] == [True, False, False]


def test_erasure_waits_for_an_older_snapshot_then_is_pending(
        store: memory.Store, admin: sa.Engine, database_url: str) -> None:
    store.append("s", message("user", f"hold {A_MARK}"), actor="ann")
    reader = sa.create_engine(database_url)
    try:
        with reader.connect() as conn:
            conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ")
            conn.exec_driver_sql("SELECT count(*) FROM memory_keys").scalar_one()
            result = store.forget(actor="ann", erase_wait=0.3)
            assert result.erasure is not None and not result.erasure.done
            assert "snapshot older than the forget" in (result.erasure.reason or "")
            assert result.erasure.pending == 1
            conn.rollback()
    finally:
        reader.dispose()
    out = io.StringIO()
    args = _parse("forget", "--erase-pending", "--url", database_url)
    assert forget_cli._forget(args, stdout=out) == 0
    assert "physical erasure: done" in out.getvalue()
    assert erasure.pending_requests(admin) == 0


def test_app_role_cannot_erase_and_says_so(store: memory.Store, admin: sa.Engine,
                                           memory_home: Path) -> None:
    """A store with only the tenant role's connection (it owns nothing, so it may not
    vacuum) forgets, and says the physical erasure is pending and why; the owner's
    erasure (`memory forget --erase-pending`) completes it."""
    assert store.engine.url.username != admin.url.username  # the tenant's own role
    app_only = memory.Store(store.engine, tenant=store.tenant, _owns_engine=False)
    store.append("s", message("user", f"text {A_MARK}"), actor="ann")
    keys = key_material(admin, "ann")
    result = app_only.forget(actor="ann")
    assert not result.already_forgotten and result.erasure is not None
    assert not result.erasure.done and "may not vacuum" in (result.erasure.reason or "")
    assert "memory_keys" in (result.erasure.reason or "")
    assert "--erase-pending" in (result.erasure.reason or "")
    # Deleted, not erased: the rows' bytes are still in the files.
    assert found_on_disk(database_files(admin, memory_home), keys) == len(keys)
    assert erasure.pending_requests(admin) == 1
    done = erasure.erase(admin, flush_wal=True)
    assert done.done and done.pending == 0 and done.wal_flushed
    assert found_on_disk(database_files(admin, memory_home), keys) == 0


def test_replaying_a_forgotten_context_is_a_typed_error(
        store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    append_markers(store)
    store.project(embedder=embedder)
    ctx = store.context("what is my locker code", actor="bea", session="bea-0", budget=400,
                        actors=["bea", "ann"], record=True, embedder=embedder)
    assert ctx.recorded is not None and A_MARK in ctx.text()
    [held] = [e for e in store.read_session("bea-0") if e.event_id == ctx.recorded.event_id]
    assert store.replay_context(held, embedder=embedder).replay_matches

    store.forget(actor="ann")  # bea's context cited ann's events: forgotten with them
    [now] = [e for e in store.read_session("bea-0") if e.event_id == ctx.recorded.event_id]
    assert now.forgotten
    for event in (now, held):  # read after the forget, or a copy held from before
        with pytest.raises(memory.ForgottenError) as err:
            store.replay_context(event, embedder=embedder)
        assert err.value.event_id == str(ctx.recorded.event_id)


def _parse(*argv: str):  # type: ignore[no-untyped-def]
    import argparse

    parser = argparse.ArgumentParser(prog="memory")
    forget_cli.add_commands(parser.add_subparsers())
    return parser.parse_args(list(argv))

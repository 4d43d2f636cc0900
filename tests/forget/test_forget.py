"""Encryption at rest and forgetting, against the real server and model: payloads
and metadata sealed, keyed idempotency hash, forget by actor and by event following the
lineage into every table, idempotent and crash-safe, master-key rotation."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import memory
from memory import forget as forget_mod
from memory import message, note
from memory.log import master_key
from memory.log.events import hash_parts

MARKER = "qzvmarker" + uuid.uuid4().hex[:10]


@pytest.fixture
def admin(database_url: str) -> Iterator[sa.Engine]:
    """A superuser connection (sees every tenant) for inspecting the raw tables."""
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


def tables(conn: sa.Connection) -> list[str]:
    return [r[0] for r in conn.exec_driver_sql(
        "SELECT quote_ident(table_name) FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")]


def find_marker(engine: sa.Engine, marker: str = MARKER) -> dict[str, int]:
    """Every table and every column (the whole row cast to text, bytea as hex, tsvector
    lexemes included) that holds the marker, in clear or as raw bytes."""
    hexed = marker.encode().hex()
    found = {}
    with engine.connect() as conn:
        for table in tables(conn):
            n = conn.exec_driver_sql(
                f"SELECT count(*) FROM {table} t WHERE t::text ILIKE %s OR t::text ILIKE %s",
                (f"%{marker}%", f"%{hexed}%")).scalar_one()
            if n:
                found[table] = n
    return found


def test_payload_and_metadata_are_sealed_at_rest(store: memory.Store,
                                                 admin: sa.Engine) -> None:
    out = store.append("s1", message("user", f"my code is {MARKER}",
                                     metadata={"email": f"{MARKER}@example.com"}),
                       actor="alice")
    with admin.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT payload, payload_enc, key_id, metadata, type, actor_id "
            "FROM memory_events").one()
    assert row.payload is None and row.payload_enc is not None and row.key_id
    assert row.metadata == {}
    assert (row.type, row.actor_id) == ("message", "alice")  # the log keeps its shape
    assert find_marker(admin) == {}
    [event] = store.read_session("s1")
    assert event.payload == {"role": "user", "content": f"my code is {MARKER}"}
    assert event.metadata == {"email": f"{MARKER}@example.com"}
    assert not event.forgotten and event.position == out[0].position


def test_content_hash_is_keyed_and_idempotency_still_holds(store: memory.Store,
                                                           admin: sa.Engine) -> None:
    ev = note("short secret", event_id=uuid.uuid4())
    first = store.append("s1", ev, actor="alice")
    again = store.append("s1", ev, actor="alice")
    assert again[0].duplicate and again[0].position == first[0].position
    with pytest.raises(memory.IdempotencyConflict):
        store.append("s1", note("other text", event_id=ev.event_id), actor="alice")
    with admin.connect() as conn:
        stored = conn.exec_driver_sql("SELECT content_hash FROM memory_events").scalar_one()
    plain = hash_parts("alice", "note", 1, '{"text":"short secret"}', "{}", None)
    assert bytes(stored) != plain and bytes(stored) != hashlib.sha256(b"short secret").digest()


def conversation(store: memory.Store) -> dict[str, list[memory.Appended]]:
    """Alice's session goes quiet (bob speaks a day later), so it gets summarized."""
    t0 = datetime.now(UTC) - timedelta(days=2)
    return {
        "alice": store.append("a-trip", [
            message("user", f"My passport number is {MARKER} please remember it",
                    occurred_at=t0),
            message("assistant", "Noted, I will remember your passport number.",
                    occurred_at=t0),
            note(f"Alice travels with passport {MARKER}", metadata={"src": MARKER},
                 occurred_at=t0),
        ], actor="alice"),
        "bob": store.append("b-chat", [
            message("user", "Bob likes climbing in the Alps every summer.",
                    occurred_at=t0 + timedelta(days=1)),
            message("assistant", "The Alps are great for climbing.",
                    occurred_at=t0 + timedelta(days=1)),
        ], actor="bob"),
    }


def test_forget_actor_leaves_no_trace_in_any_table(store: memory.Store, admin: sa.Engine,
                                                   embedder) -> None:  # type: ignore[no-untyped-def]
    appended = conversation(store)
    store.project(embedder=embedder)
    own = store.context("what is my passport number", actor="alice", session="a-trip",
                        budget=400, record=True, embedder=embedder)
    other = store.context("passport number", actor="bob", session="b-chat", budget=400,
                          actors=["bob", "alice"], record=True, embedder=embedder)
    assert MARKER in own.text() and MARKER in other.text()
    before = find_marker(admin)
    assert {"memory_chunks", "memory_summaries"} <= set(before), before
    assert "memory_events" not in before  # sealed from the start

    result = store.forget(actor="alice")
    assert result.actor_events >= 4 and not result.already_forgotten
    assert other.recorded is not None and other.recorded.event_id in result.event_ids
    assert find_marker(admin) == {}

    events = list(store.read())
    alice = [e for e in events if e.actor_id == "alice" and e.type != "forgotten"]
    assert alice and all(e.forgotten and e.payload == {} and e.metadata == {} for e in alice)
    tombs = {e.actor_id: e.payload for e in events if e.type == "forgotten"}
    assert tombs["alice"]["scope"] == "actor" and tombs["alice"]["event_ids"] == []
    assert tombs["bob"] == {"request_id": tombs["alice"]["request_id"], "scope": "events",
                            "actor_id": "bob", "event_ids": [str(other.recorded.event_id)]}
    bob = {e.event_id: e for e in events if e.actor_id == "bob"}
    assert not any(bob[a.event_id].forgotten for a in appended["bob"])
    assert bob[other.recorded.event_id].forgotten  # bob's context cited alice's events
    with admin.connect() as conn:
        n = conn.exec_driver_sql("SELECT count(*) FROM memory_chunks WHERE actor_id = 'bob'"
                                 ).scalar_one()
    assert n > 0  # bob's memories stay

    # Replays never resurrect: catch up, rebuild, and a context built afresh.
    store.project(embedder=embedder)
    projector = store.projector(embedder=embedder)
    projector.rebuild("chunks")
    projector.rebuild("summaries")
    again = store.context("passport number", actor="bob", session="b-chat", budget=400,
                          actors=["bob", "alice"], embedder=embedder)
    assert MARKER not in again.text()
    assert find_marker(admin) == {}

    # Idempotent: nothing left to destroy, no second tombstone.
    assert store.forget(actor="alice").already_forgotten
    assert sum(e.type == "forgotten" for e in store.read()) == 2


def test_forget_single_event_without_updating_the_log(store: memory.Store, admin: sa.Engine,
                                                      embedder) -> None:  # type: ignore[no-untyped-def]
    appended = conversation(store)
    store.project(embedder=embedder)
    with admin.connect() as conn:
        versions_before = conn.exec_driver_sql(
            "SELECT event_id, xmin::text, ctid::text FROM memory_events ORDER BY position"
        ).fetchall()
    first, second, third = (a.event_id for a in appended["alice"])
    result = store.forget(event_ids=[first, str(third)])
    assert set(result.event_ids) == {first, third}
    assert find_marker(admin) == {}
    with admin.connect() as conn:
        versions_after = conn.exec_driver_sql(
            "SELECT event_id, xmin::text, ctid::text FROM memory_events ORDER BY position "
            "LIMIT %s", (len(versions_before),)).fetchall()
    assert versions_after == versions_before  # not one row of the log was rewritten
    by_id = {e.event_id: e for e in store.read_session("a-trip")}
    assert by_id[first].forgotten and by_id[third].forgotten
    assert by_id[second].payload["content"].startswith("Noted")  # its neighbour stays
    store.projector(embedder=embedder).rebuild("chunks")
    assert find_marker(admin) == {}
    with admin.connect() as conn:
        kept = conn.exec_driver_sql("SELECT count(*) FROM memory_chunks WHERE event_id = %s",
                                    (second,)).scalar_one()
    assert kept > 0
    # A retried append of a forgotten event is a duplicate; it does not bring it back.
    again = store.forget(event_ids=[first])
    assert again.already_forgotten


def test_forget_completes_after_a_crash_half_way(store: memory.Store, database_url: str,
                                                 admin: sa.Engine,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store.append("s", note(f"remember {MARKER}"), actor="carol")

    def crash(*a: object, **k: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(forget_mod, "_append_tombstones", crash)
    with pytest.raises(RuntimeError):
        store.forget(actor="carol")
    monkeypatch.undo()
    # The keys went in the first transaction: already unreadable, request still pending.
    assert all(e.forgotten for e in store.read(actor="carol"))
    with admin.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM memory_forget_requests WHERE "
                                    "completed_at IS NULL").scalar_one() == 1
    # A restart (opening the store) completes it: the tombstone is appended once.
    with memory.Store.open(database_url, migrate=False) as reopened:
        types = [e.type for e in reopened.read(actor="carol")]
    assert types == ["note", "forgotten"]
    with admin.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM memory_forget_requests WHERE "
                                    "completed_at IS NULL").scalar_one() == 0
    assert find_marker(admin) == {}


def test_an_actor_forgotten_elsewhere_gets_a_new_key(store: memory.Store,
                                                     database_url: str) -> None:
    store.append("s", note("before"), actor="dave")
    with memory.Store.open(database_url, migrate=False) as other:
        other.append("s", note("cached key"), actor="dave")  # caches dave's key
        store.forget(actor="dave")
        other.append("s2", note("after"), actor="dave")  # the stale key is refused, renewed
        events = {e.payload.get("text"): e for e in other.read(actor="dave")
                  if e.type == "note"}
    assert events["after"].payload == {"text": "after"}
    assert [e.forgotten for e in store.read(actor="dave") if e.type == "note"] == \
        [True, True, False]


def test_bad_forget_requests_are_refused(store: memory.Store) -> None:
    with pytest.raises(memory.ValidationError):
        store.forget()
    with pytest.raises(memory.ValidationError):
        store.forget(actor="a", event_ids=[uuid.uuid4()])
    with pytest.raises(memory.ValidationError):
        store.forget(event_ids=["not-a-uuid"])
    with pytest.raises(memory.ValidationError, match="no event"):
        store.forget(event_ids=[uuid.uuid4()])


def test_clear_payloads_cannot_be_forgotten(database_url: str) -> None:
    with memory.Store.open(database_url, migrate=False, encrypt=False) as clear:
        clear.append("s", note("in clear"), actor="erin")
        with pytest.raises(memory.ForgetError, match="without encryption"):
            clear.forget(actor="erin")
        assert [e.payload for e in clear.read()] == [{"text": "in clear"}]


def test_master_key_rotation_leaves_the_log_alone(database_url: str, admin: sa.Engine,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = master_key.generate_master_key(), master_key.generate_master_key()
    monkeypatch.setenv(master_key.ENV_KEY, old)
    with memory.Store.open(database_url, migrate=False) as s:
        s.append("s", [note("one"), note("two")], actor="frank")
    with admin.connect() as conn:
        log_before = conn.exec_driver_sql(
            "SELECT xmin::text, payload_enc FROM memory_events ORDER BY position").fetchall()
    rotated = master_key.rotate_master_key(admin, master_key.MasterKeys.from_text(f"{new},{old}"))
    assert rotated == 1
    with admin.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT xmin::text, payload_enc FROM memory_events ORDER BY position"
        ).fetchall() == log_before
    monkeypatch.setenv(master_key.ENV_KEY, new)  # the old key is no longer needed
    with memory.Store.open(database_url, migrate=False) as s:
        assert [e.payload["text"] for e in s.read()] == ["one", "two"]
    monkeypatch.setenv(master_key.ENV_KEY, old)  # ... and no longer opens anything
    with memory.Store.open(database_url, migrate=False) as s, \
            pytest.raises(memory.ConfigurationError, match="not configured"):
        list(s.read())


def test_a_tampered_ciphertext_is_an_error_not_a_forget(store: memory.Store,
                                                        database_url: str) -> None:
    store.append("s", note("a"), actor="gina")
    store.append("s", note("b"), actor="gina")
    # Swap two sealed payloads through a copy of the log (the log refuses UPDATE).
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TEMP TABLE t AS SELECT * FROM memory_events "
                             "ORDER BY position")
        rows = conn.exec_driver_sql(
            "SELECT position, event_id, tenant, actor_id, session_id, version, type, "
            "schema_version, payload, payload_enc, key_id, metadata, occurred_at, recorded_at "
            "FROM t ORDER BY position").fetchall()
        swapped = [(*rows[0][:9], rows[1][9], *rows[0][10:])]
        with pytest.raises(memory.DecryptionError):
            store.log.crypto.open_rows(conn, swapped)
    engine.dispose()


def test_threads_creating_the_master_key_file_at_once_share_one_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded default creates the master key file on first use; threads (or
    processes) doing so at the same moment never read it half-written, and all end up
    with the one key that was linked into place."""
    from memory.log.master_key import ENV_KEY, ENV_KEY_FILE, MasterKeys

    monkeypatch.delenv(ENV_KEY, raising=False)
    monkeypatch.setenv(ENV_KEY_FILE, str(tmp_path / "keys" / "master.key"))
    barrier = threading.Barrier(8)
    ids: list[str] = []
    errors: list[BaseException] = []

    def load() -> None:
        barrier.wait()
        try:
            ids.append(MasterKeys.from_environment().current_id)
        except BaseException as exc:
            errors.append(exc)

    for _ in range(5):  # several rounds, each on a fresh path
        (tmp_path / "keys" / "master.key").unlink(missing_ok=True)
        ids.clear()
        threads = [threading.Thread(target=load) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(ids) == 8 and len(set(ids)) == 1
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["master.key"]  # no temp left

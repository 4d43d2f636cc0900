"""Epochs (alembic/sql/06_secrets.sql, memory/log/sealing.py): sealed appends write no secrets row
of their own; forgetting one event of an epoch destroys the epoch and keeps its other
events' keys, masked under the actor key; an append holding an epoch is waited for;
a store whose cached epoch was destroyed seals again under a new one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from support import forget_during_open_append, waits_for_open_transaction

import memory
from memory import note
from memory.log import keyring
from memory.log import sealing as crypto
from memory.log import sql as log_sql


@pytest.fixture
def admin(database_url: str) -> Iterator[sa.Engine]:
    """A superuser connection (sees every tenant) for inspecting the raw tables."""
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


def epochs(admin: sa.Engine) -> list[tuple[str, str]]:
    """(name, actor key id) of every epoch row."""
    with admin.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT batch, key_id FROM memory_event_secrets WHERE batch LIKE 'e:%%' "
            "ORDER BY batch")]


def kept_keys(admin: sa.Engine) -> dict[Any, bytes | None]:
    with admin.connect() as conn:
        return {r[0]: r[1] for r in conn.exec_driver_sql(
            "SELECT event_id, secret FROM memory_event_keys")}


def test_inline_sealing_agrees_with_the_formulas(store: memory.Store) -> None:
    log = store.log
    epoch = log.crypto.epoch(log.engine, store.tenant, "alice", 2)
    prepared = log.prepare("alice", [note("one"), note("two")])
    sealed = log.crypto.seal(store.tenant, epoch, prepared)
    assert sealed.batch == epoch.name and sealed.batch.startswith(crypto.EPOCH_PREFIX)
    assert sealed.key_id is None and sealed.secrets is None
    with store.engine.connect() as conn:
        secret = bytes(conn.exec_driver_sql(
            "SELECT secrets FROM memory_event_secrets WHERE batch = %s",
            (epoch.name,)).scalar_one())
    for i, (event, blob) in enumerate(zip(prepared, sealed.blobs, strict=True)):
        event_key = crypto.epoch_key(epoch.key.key, secret, event.event_id)
        plain = AESGCM(event_key).decrypt(
            blob[1:13], blob[13:], crypto.seal_aad(store.tenant, event.event_id,
                                                    sealed.batch))
        assert orjson.loads(plain) == {"m": {}, "p": {"text": ["one", "two"][i]}}
        assert sealed.hashes[i] == crypto.keyed_hash(epoch.key.hash_key, event.content_hash)


def test_appends_of_an_actor_share_one_epoch(store: memory.Store, admin: sa.Engine,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(4):
        store.append("s", note(f"single {i}"), actor="alice")
    store.append("s", [note(f"batch {i}") for i in range(20)], actor="alice")
    store.append("b", note("bob's"), actor="bob")
    rows = epochs(admin)
    assert len(rows) == 2  # one per actor, whatever the number of appends
    with admin.connect() as conn:
        named = conn.exec_driver_sql(
            "SELECT actor_id, count(DISTINCT key_id) FROM memory_events GROUP BY actor_id "
            "ORDER BY actor_id").fetchall()
    assert [tuple(r) for r in named] == [("alice", 1), ("bob", 1)]
    assert [e.payload["text"] for e in store.read_session("s")][-1] == "batch 19"
    # A full epoch gives way to a new one at the next append; a batch is never split.
    monkeypatch.setattr(keyring, "EPOCH_EVENTS", 3)
    store.log.crypto.forget_cached(store.tenant, "carol")
    for i in range(3):
        store.append("c", note(f"c{i}"), actor="carol")
    store.append("c", [note(f"c-batch {i}") for i in range(5)], actor="carol")
    with admin.connect() as conn:
        per_epoch = [r[0] for r in conn.exec_driver_sql(
            "SELECT count(*) FROM memory_events WHERE actor_id = 'carol' "
            "GROUP BY key_id ORDER BY min(position)")]
    assert per_epoch == [3, 5]
    assert [e.payload["text"] for e in store.read_session("c")][-1] == "c-batch 4"


def test_forgetting_one_event_keeps_the_rest_of_its_epoch(store: memory.Store,
                                                          admin: sa.Engine) -> None:
    out = store.append("s", [note(f"turn {i}") for i in range(5)], actor="alice")
    out += store.append("s", note("turn 5"), actor="alice")
    (name, _), = epochs(admin)
    with admin.connect() as conn:
        log_before = conn.exec_driver_sql(
            "SELECT xmin::text, ctid::text FROM memory_events ORDER BY position").fetchall()
    result = store.forget(event_ids=[out[2].event_id])
    assert not result.already_forgotten
    assert epochs(admin) == []  # the epoch's secret is gone...
    kept = kept_keys(admin)  # ...the other events' keys are kept, one row each
    assert set(kept) == {a.event_id for a in out} - {out[2].event_id}
    assert all(k is not None and len(k) == 32 for k in kept.values())
    events = store.read_session("s")
    assert [e.forgotten for e in events] == [i == 2 for i in range(6)]
    assert [e.payload.get("text") for e in events] == [
        "turn 0", "turn 1", None, "turn 3", "turn 4", "turn 5"]
    with admin.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT xmin::text, ctid::text FROM memory_events ORDER BY position LIMIT %s",
            (len(log_before),)).fetchall() == log_before  # the log was not rewritten
    assert store.forget(event_ids=[out[2].event_id]).already_forgotten
    # A kept key is forgotten like an event of before 0005: its row is nulled.
    assert not store.forget(event_ids=[out[4].event_id]).already_forgotten
    assert kept_keys(admin)[out[4].event_id] is None
    assert [e.forgotten for e in store.read_session("s")] == [i in (2, 4) for i in range(6)]
    # The actor goes on under a new epoch; forgetting the actor takes everything.
    store.append("s", note("turn 6"), actor="alice")
    assert len(epochs(admin)) == 1 and epochs(admin)[0][0] != name
    assert store.read_session("s")[-1].payload == {"text": "turn 6"}
    store.forget(actor="alice")
    assert epochs(admin) == [] and kept_keys(admin) == {}
    assert all(e.forgotten for e in store.read_session("s"))


def test_a_cached_epoch_destroyed_elsewhere_is_replaced(store: memory.Store,
                                                       database_url: str,
                                                       admin: sa.Engine) -> None:
    first = store.append("s", note("before"), actor="dave")
    with memory.Store.open(database_url, migrate=False) as other:
        other.forget(event_ids=[first[0].event_id])  # destroys the epoch store caches
    after = store.append("s", note("after"), actor="dave")
    assert after[0].version == 2 and not after[0].duplicate
    assert [e.payload.get("text") for e in store.read_session("s")] == [None, "after"]
    assert len(epochs(admin)) == 1


def epoch_append(store: memory.Store, actor: str, session: str, text: str
                 ) -> tuple[Any, tuple[Any, ...]]:
    """An event sealed under the actor's epoch and log_sql.APPEND's parameters: a lone
    append, which checks its epoch itself (memory_append_request)."""
    log = store.log
    epoch = log.crypto.epoch(log.engine, store.tenant, actor, 1)
    prepared = log.prepare(actor, [note(text)])
    sealed = log.crypto.seal(store.tenant, epoch, prepared)
    return prepared[0], (store.tenant, actor, session, None,
                         log_sql.events_json(prepared, sealed.blobs, sealed.hashes), None,
                         sealed.batch, None)


def test_a_forget_waits_for_an_append_holding_the_epoch(store: memory.Store,
                                                        admin: sa.Engine) -> None:
    """An append under the epoch is in flight (its transaction open) when one event of
    the epoch is forgotten: the forget waits for it, then keeps its key too."""
    done = store.append("s", note("committed"), actor="erin")
    event, params = epoch_append(store, "erin", "s", "in flight")
    result = forget_during_open_append(
        admin, log_sql.APPEND, params,
        lambda: store.forget(event_ids=[done[0].event_id]))
    assert not result.already_forgotten
    events = store.read_session("s")
    assert [e.forgotten for e in events] == [True, False]
    assert events[1].payload == {"text": "in flight"}
    assert set(kept_keys(admin)) == {event.event_id}


def test_a_forget_of_the_actor_waits_for_an_append_holding_its_epoch(
        store: memory.Store, admin: sa.Engine) -> None:
    """The same with a forget of the whole actor: it waits for the append in flight, then
    deletes the epoch with everything else, so the append's event goes with the actor."""
    store.append("s", note("committed"), actor="fay")
    _, params = epoch_append(store, "fay", "s", "in flight")
    result = forget_during_open_append(admin, log_sql.APPEND, params,
                                       lambda: store.forget(actor="fay"))
    assert not result.already_forgotten
    assert [e.forgotten for e in store.read_session("s")] == [True, True]
    assert epochs(admin) == []


def test_appends_hold_their_epochs_in_the_order_forgets_lock_them() -> None:
    """Bytewise name order on both sides, so a group holding two epochs and a forget
    destroying both cannot wait for each other."""
    requests = [("a", "s", None, "[]", None, "e:f0", None),
                ("b", "t", None, "[]", None, "e:0a", None),
                ("c", "u", None, "[]", "key", "s:batch", b"x"),  # a 0005 batch: no epoch
                ("d", "v", None, "[]", None, None, None),  # clear
                ("a", "w", None, "[]", None, "e:f0", None)]
    assert log_sql.epochs_of(requests) == ["e:0a", "e:f0"]


def test_a_lone_append_waits_for_a_forget_of_its_epoch_without_holding_up_others(
        store: memory.Store, admin: sa.Engine) -> None:
    """A forget destroying the epoch is in flight (its transaction open, the epoch's lock
    held) when a lone append under that epoch arrives: the append waits for it before
    taking the append lock, so another actor's append goes through meanwhile; then it
    finds the epoch gone and fails with MM004, writing nothing."""
    store.append("s", note("first"), actor="gus")
    _, params = epoch_append(store, "gus", "s", "late")
    epoch = params[6]

    def forget_left_open(conn: sa.Connection) -> None:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(memory_epoch_lock(%s))",
                             (epoch,))
        conn.exec_driver_sql("DELETE FROM memory_event_secrets WHERE batch = %s", (epoch,))

    def late_append() -> str | None:
        with admin.connect() as conn:
            try:
                conn.exec_driver_sql(log_sql.APPEND, params).fetchall()
            except sa.exc.DBAPIError as exc:
                return getattr(exc.orig, "sqlstate", None)
        return None

    def meanwhile() -> None:
        other = store.append("t", note("meanwhile"), actor="hal")
        assert other[0].version == 1

    assert waits_for_open_transaction(admin, forget_left_open, late_append,
                                      meanwhile) == "MM004"
    # Nothing written: "first" alone (unreadable now: its epoch went without its key kept).
    assert [e.version for e in store.read_session("s")] == [1]

"""Events sealed in the formats before epochs stay readable and forgettable: one secrets
row per appended batch: forgetting one event zeroes only its 32 bytes, forgetting an actor
deletes its batch rows; one ``memory_event_keys`` row per event. The library seals under epochs now
(tests/forget/test_forget_epochs.py), so these tests write the old formats themselves, with the
formulas memory/log/sealing.py opens them by."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from support import forget_during_open_append, waits_for_open_transaction

import memory
from memory import note
from memory.log import sealing as crypto
from memory.log import sql as log_sql


@pytest.fixture
def admin(database_url: str) -> Iterator[sa.Engine]:
    """A superuser connection (sees every tenant) for inspecting the raw tables."""
    engine = sa.create_engine(database_url)
    yield engine
    engine.dispose()


def secrets_rows(admin: sa.Engine) -> list[tuple[str, str, int, bytes]]:
    with admin.connect() as conn:
        return [(r[0], r[1], r[2], bytes(r[3])) for r in conn.exec_driver_sql(
            "SELECT batch, key_id, first_version, secrets FROM memory_event_secrets "
            "ORDER BY first_version")]


def seal_batch(store: memory.Store, actor: str, events: list[memory.NewEvent]
               ) -> tuple[list[Any], crypto.Sealed]:
    """Seal in the batch format: a fresh secret per event, all of them in one
    secrets row named by the batch (``s:``), which the events' ``key_id`` names."""
    log = store.log
    key = log.crypto.actor_key(log.engine, store.tenant, actor)
    prepared = log.prepare(actor, events)
    batch = crypto.BATCH_PREFIX + os.urandom(16).hex()
    secrets = os.urandom(32 * len(prepared))
    blobs = []
    for i, e in enumerate(prepared):
        nonce = os.urandom(12)
        plain = orjson.dumps({"m": orjson.loads(e.metadata_json),
                              "p": orjson.loads(e.payload_json)})
        event_key = crypto.event_key(key.key, secrets[32 * i:32 * i + 32], e.event_id)
        blobs.append(crypto.FORMAT + nonce + AESGCM(event_key).encrypt(
            nonce, plain, crypto.seal_aad(store.tenant, e.event_id, batch)))
    hashes = [crypto.keyed_hash(key.hash_key, e.content_hash) for e in prepared]
    return prepared, crypto.Sealed(key.key_id, batch, blobs, hashes, secrets)


def batch_params(store: memory.Store, actor: str, session: str,
                 events: list[memory.NewEvent]) -> tuple[Any, ...]:
    """log_sql.APPEND's parameters for ``events`` sealed as one 0005 batch."""
    prepared, sealed = seal_batch(store, actor, events)
    return (store.tenant, actor, session, None,
            log_sql.events_json(prepared, sealed.blobs, sealed.hashes), sealed.key_id,
            sealed.batch, sealed.secrets)


def batch_append(store: memory.Store, admin: sa.Engine, session: str,
                 events: list[memory.NewEvent], actor: str) -> list[Any]:
    with admin.begin() as conn:
        return conn.exec_driver_sql(log_sql.APPEND, batch_params(
            store, actor, session, events)).fetchall()


def test_one_row_per_batch_and_forgetting_one_event_zeroes_its_bytes(
        store: memory.Store, admin: sa.Engine) -> None:
    batch_append(store, admin, "s", [note("first batch")], actor="alice")
    out = batch_append(store, admin, "s", [note(f"turn {i}") for i in range(50)],
                       actor="alice")
    rows = secrets_rows(admin)
    assert [(r[2], len(r[3])) for r in rows] == [(1, 32), (2, 32 * 50)]
    with admin.connect() as conn:
        key_ids = {r[0] for r in conn.exec_driver_sql(
            "SELECT DISTINCT key_id FROM memory_events WHERE version > 1")}
        log_before = conn.exec_driver_sql(
            "SELECT xmin::text, ctid::text FROM memory_events ORDER BY position").fetchall()
    assert key_ids == {rows[1][0]}  # every event of the batch names its row
    result = store.forget(event_ids=[out[7][0]])
    assert not result.already_forgotten
    after = secrets_rows(admin)[1][3]
    assert after[7 * 32:8 * 32] == bytes(32)
    assert after[:7 * 32] == rows[1][3][:7 * 32] and after[8 * 32:] == rows[1][3][8 * 32:]
    events = store.read_session("s")
    assert [e.forgotten for e in events] == [i == 8 for i in range(51)]
    assert events[9].payload == {"text": "turn 8"}
    with admin.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT xmin::text, ctid::text FROM memory_events ORDER BY position LIMIT %s",
            (len(log_before),)).fetchall() == log_before  # the log was not rewritten
    assert store.forget(event_ids=[out[7][0]]).already_forgotten


def test_forgetting_an_actor_deletes_its_batch_rows(store: memory.Store,
                                                    admin: sa.Engine) -> None:
    batch_append(store, admin, "a", [note("a1"), note("a2")], actor="alice")
    store.append("a", [note("a3")], actor="alice")  # under an epoch: a row of its own
    batch_append(store, admin, "b", [note("b1")], actor="bob")
    store.forget(actor="alice")
    with admin.connect() as conn:
        alive = conn.exec_driver_sql(
            "SELECT k.actor_id FROM memory_event_secrets s JOIN memory_keys k "
            "ON k.tenant = s.tenant AND k.key_id = s.key_id").fetchall()
        orphans = conn.exec_driver_sql(
            "SELECT count(*) FROM memory_event_secrets s WHERE NOT EXISTS ("
            "SELECT FROM memory_keys k WHERE k.tenant = s.tenant AND k.key_id = s.key_id)"
        ).scalar_one()
    assert [r[0] for r in alive] == ["bob"]  # the tombstones are in clear
    assert orphans == 0
    assert all(e.forgotten for e in store.read(actor="alice") if e.type == "note")
    assert [e.payload for e in store.read(actor="bob")] == [{"text": "b1"}]


def legacy_append(store: memory.Store, admin: sa.Engine, actor: str, session: str,
                  text: str) -> uuid.UUID:
    """An event sealed with a secret of its own: ``key_id`` = the actor key, one
    ``memory_event_keys`` row, written by the old ``memory_append``."""
    key = store.log.crypto.actor_key(store.engine, store.tenant, actor)
    event_id, secret, nonce = uuid.uuid4(), os.urandom(32), os.urandom(12)
    plain = orjson.dumps({"m": {"from": "0004"}, "p": {"text": text}})
    blob = crypto.FORMAT + nonce + AESGCM(crypto.event_key(key.key, secret, event_id)) \
        .encrypt(nonce, plain, crypto.seal_aad(store.tenant, event_id, key.key_id))
    with admin.begin() as conn:
        conn.exec_driver_sql(
            "SELECT * FROM memory_append(%s, %s, %s, NULL, ARRAY[%s::uuid], ARRAY['note'], "
            "ARRAY[1], ARRAY[NULL::jsonb], ARRAY[%s::bytea], ARRAY[%s], ARRAY['{}'::jsonb], "
            "ARRAY[%s::bytea], ARRAY[%s::timestamptz])",
            (store.tenant, actor, session, event_id, blob, key.key_id, os.urandom(32),
             datetime.now(UTC)))
        conn.exec_driver_sql(
            "INSERT INTO memory_event_keys (tenant, event_id, key_id, secret) "
            "VALUES (%s, %s, %s, %s)", (store.tenant, event_id, key.key_id, secret))
    return event_id


def test_events_sealed_before_0005_stay_readable_and_forgettable(
        store: memory.Store, admin: sa.Engine) -> None:
    old = legacy_append(store, admin, "carol", "s", "sealed the old way")
    store.append("s", note("sealed the new way"), actor="carol")
    other = legacy_append(store, admin, "carol", "s", "another old one")
    events = store.read_session("s")
    assert [e.payload for e in events] == [{"text": "sealed the old way"},
                                          {"text": "sealed the new way"},
                                          {"text": "another old one"}]
    assert events[0].metadata == {"from": "0004"}
    assert [e.payload for e in store.read(actor="carol")] == [e.payload for e in events]
    store.forget(event_ids=[old])
    assert [e.forgotten for e in store.read_session("s")] == [True, False, False]
    store.forget(actor="carol")
    assert all(e.forgotten for e in store.read_session("s"))
    with admin.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM memory_event_keys WHERE "
                                    "event_id = %s", (other,)).scalar_one() == 0


def test_an_append_racing_a_forget_of_its_actor(store: memory.Store,
                                                admin: sa.Engine) -> None:
    """Both orders of an append and a forget of the same actor. A batch append holds the
    actor's key row FOR KEY SHARE (memory_append_request), so the forget's DELETE of that
    row waits for it, then deletes its secrets too. An epoch's append holds its epoch's
    advisory lock (shared, memory_epoch_lock): a forget in flight first (holding the lock
    exclusively, its deletions not yet committed) makes the append wait, find the epoch gone, write
    nothing, and the library retry under a new key and epoch."""
    log = store.log
    # 1. The append holds the key (its transaction still open): the forget waits.
    params = batch_params(store, "racer", "race", [note("in flight")])
    result = forget_during_open_append(admin, log_sql.APPEND, params,
                                       lambda: store.forget(actor="racer"))
    assert not result.already_forgotten
    with admin.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM memory_event_secrets WHERE batch = %s",
            (params[6],)).scalar_one() == 0
    assert [e.forgotten for e in store.read_session("race")] == [True]

    # 2. A forget in flight: the append waits for it, then uses a new key and epoch.
    store.append("race2", note("before"), actor="racer2")
    old = log.crypto.actor_key(log.engine, store.tenant, "racer2")  # cached

    def forget_left_open(conn: sa.Connection) -> None:  # what forget(actor) does
        conn.exec_driver_sql("DELETE FROM memory_keys WHERE tenant = %s AND actor_id = %s",
                             (store.tenant, "racer2"))
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(memory_epoch_lock(batch)) "
                             "FROM memory_event_secrets WHERE tenant = %s AND key_id = %s "
                             "AND batch LIKE 'e:%%'", (store.tenant, old.key_id)).fetchall()
        conn.exec_driver_sql("DELETE FROM memory_event_secrets WHERE tenant = %s "
                             "AND key_id = %s", (store.tenant, old.key_id))

    waits_for_open_transaction(
        admin, forget_left_open,
        lambda: store.append("race2", note("after"), actor="racer2"))
    new = log.crypto.actor_key(log.engine, store.tenant, "racer2")
    assert new.key_id != old.key_id
    events = store.read_session("race2")
    assert [e.forgotten for e in events] == [True, False]
    assert events[1].payload == {"text": "after"}

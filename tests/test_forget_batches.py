"""Event secrets one row per appended batch (alembic/versions/0005, memory/crypto.py):
forgetting one event zeroes only its 32 bytes, forgetting an actor deletes its batch rows,
events sealed before 0005 (one ``memory_event_keys`` row each) stay readable and
forgettable, and the inlined sealing agrees with the formulas opening relies on."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import memory
from memory import crypto, log_sql, note


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


def test_inline_sealing_agrees_with_the_formulas(store: memory.Store) -> None:
    log = store.log
    key = log.crypto.actor_key(log.engine, store.tenant, "alice")
    prepared = log.prepare("alice", [note("one"), note("two")])
    sealed = log.crypto.seal(store.tenant, key, prepared)
    assert sealed.batch.startswith(crypto.BATCH_PREFIX) and len(sealed.secrets) == 64
    for i, (event, blob) in enumerate(zip(prepared, sealed.blobs, strict=True)):
        event_key = crypto._event_key(key.key, sealed.secrets[32 * i:32 * i + 32],
                                      event.event_id)
        plain = AESGCM(event_key).decrypt(
            blob[1:13], blob[13:], crypto._seal_aad(store.tenant, event.event_id,
                                                    sealed.batch))
        assert orjson.loads(plain) == {"m": {}, "p": {"text": ["one", "two"][i]}}
        assert sealed.hashes[i] == crypto._keyed_hash(key.hash_key, event.content_hash)


def test_one_row_per_batch_and_forgetting_one_event_zeroes_its_bytes(
        store: memory.Store, admin: sa.Engine) -> None:
    store.append("s", note("first batch"), actor="alice")
    out = store.append("s", [note(f"turn {i}") for i in range(50)], actor="alice")
    rows = secrets_rows(admin)
    assert [(r[2], len(r[3])) for r in rows] == [(1, 32), (2, 32 * 50)]
    with admin.connect() as conn:
        key_ids = {r[0] for r in conn.exec_driver_sql(
            "SELECT DISTINCT key_id FROM memory_events WHERE version > 1")}
        log_before = conn.exec_driver_sql(
            "SELECT xmin::text, ctid::text FROM memory_events ORDER BY position").fetchall()
    assert key_ids == {rows[1][0]}  # every event of the batch names its row
    result = store.forget(event_ids=[out[7].event_id])
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
    assert store.forget(event_ids=[out[7].event_id]).already_forgotten


def test_forgetting_an_actor_deletes_its_batch_rows(store: memory.Store,
                                                    admin: sa.Engine) -> None:
    store.append("a", [note("a1"), note("a2")], actor="alice")
    store.append("b", [note("b1")], actor="bob")
    store.forget(actor="alice")
    with admin.connect() as conn:
        alive = conn.exec_driver_sql(
            "SELECT k.actor_id FROM memory_event_secrets s JOIN memory_keys k "
            "ON k.tenant = s.tenant AND k.key_id = s.key_id").fetchall()
        orphans = conn.exec_driver_sql(
            "SELECT count(*) FROM memory_event_secrets s WHERE NOT EXISTS ("
            "SELECT FROM memory_keys k WHERE k.tenant = s.tenant AND k.key_id = s.key_id)"
        ).scalar_one()
    assert [r[0] for r in alive] == ["bob"]  # the tombstone is in clear
    assert orphans == 0
    assert all(e.forgotten for e in store.read(actor="alice") if e.type == "note")
    assert [e.payload for e in store.read(actor="bob")] == [{"text": "b1"}]


def legacy_append(store: memory.Store, admin: sa.Engine, actor: str, session: str,
                  text: str) -> uuid.UUID:
    """An event sealed the way revision 0004 did: ``key_id`` = the actor key, one
    ``memory_event_keys`` row, written by the old ``memory_append``."""
    key = store.log.crypto.actor_key(store.engine, store.tenant, actor)
    event_id, secret, nonce = uuid.uuid4(), os.urandom(32), os.urandom(12)
    plain = orjson.dumps({"m": {"from": "0004"}, "p": {"text": text}})
    blob = crypto.FORMAT + nonce + AESGCM(crypto._event_key(key.key, secret, event_id)) \
        .encrypt(nonce, plain, crypto._seal_aad(store.tenant, event_id, key.key_id))
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
    """Both orders of an append and a forget of the same actor (alembic/versions/0005:
    the append holds the actor's key row FOR KEY SHARE, so a DELETE of that row waits
    for it). An append in flight first: the forget waits for its commit, then deletes
    its secrets too. A key deletion in flight first: the append
    waits, finds the key gone, writes nothing, and the library retries with a new key."""
    log = store.log
    # 1. The append holds the key (its transaction still open): the forget waits.
    key = log.crypto.actor_key(log.engine, store.tenant, "racer")
    prepared = log.prepare("racer", [note("in flight")])
    sealed = log.crypto.seal(store.tenant, key, prepared)
    forgot: list[Any] = []
    with admin.connect() as conn:
        conn.exec_driver_sql(log_sql.APPEND, (
            store.tenant, "racer", "race", None,
            log_sql.events_json(prepared, sealed.blobs, sealed.hashes), sealed.key_id,
            sealed.batch, sealed.secrets)).fetchall()
        forget = threading.Thread(target=lambda: forgot.append(store.forget(actor="racer")))
        forget.start()
        forget.join(0.5)
        assert forget.is_alive()  # waiting for the append's transaction
        conn.commit()
    forget.join(10)
    assert not forget.is_alive() and forgot and not forgot[0].already_forgotten
    with admin.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM memory_event_secrets WHERE batch = %s",
            (sealed.batch,)).scalar_one() == 0
    assert [e.forgotten for e in store.read_session("race")] == [True]

    # 2. A key deletion in flight: the append waits for it, then uses a new key.
    store.append("race2", note("before"), actor="racer2")
    old = log.crypto.actor_key(log.engine, store.tenant, "racer2")  # cached
    appended: list[Any] = []
    with admin.connect() as conn:
        conn.exec_driver_sql("DELETE FROM memory_keys WHERE tenant = %s AND actor_id = %s",
                             (store.tenant, "racer2"))
        append = threading.Thread(target=lambda: appended.append(
            store.append("race2", note("after"), actor="racer2")))
        append.start()
        append.join(0.5)
        assert append.is_alive()  # waiting for the deletion's transaction
        conn.commit()
    append.join(10)
    assert not append.is_alive() and appended
    new = log.crypto.actor_key(log.engine, store.tenant, "racer2")
    assert new.key_id != old.key_id
    events = store.read_session("race2")
    assert [e.payload for e in events[1:]] == [{"text": "after"}]

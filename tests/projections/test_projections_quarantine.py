"""Poison events are quarantined, not fatal: an event a projection cannot decode or apply
is recorded with its error and every other event and tenant is still projected.

Poison is planted the way a bad writer or an injected statement would: a raw INSERT into
the log as the owner (a garbage ciphertext under the tenant's own epoch, JSON nested past
the decoder's depth, a payload its upcaster refuses). Everything runs against the real
embedded PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

import memory
from memory.cli import main
from memory.embedding import HashEmbedder
from memory.errors import DependencyError
from memory.projections import ChunksProjection, Projector, is_poison

EMBEDDER = HashEmbedder(32, name="hash-32-quarantine")


def raw_copy(store: memory.Store, like: int, *, session: str, version: int = 1,
             payload_enc: bytes | None = None, payload: Any = None,
             schema_version: int | None = None) -> tuple[int, uuid.UUID]:
    """Insert a copy of the event at position ``like`` as the owner, bypassing the append
    functions: same tenant, actor, type and key (epoch), with what is given replaced.
    Returns its (position, event_id)."""
    event_id = uuid.uuid4()
    clear = payload is not None
    with store.maintenance_engine.begin() as conn:
        position = conn.exec_driver_sql(
            "INSERT INTO memory_events (position, event_id, tenant, actor_id, session_id, "
            "version, type, schema_version, payload, payload_enc, key_id, metadata, "
            "content_hash, occurred_at) "
            "SELECT nextval('memory_events_position_seq'), %s, tenant, actor_id, %s, %s, "
            "type, coalesce(%s, schema_version), "
            "CASE WHEN %s THEN %s::jsonb ELSE payload END, "
            "CASE WHEN %s THEN NULL ELSE %s::bytea END, CASE WHEN %s THEN NULL ELSE key_id END, "
            "metadata, content_hash, occurred_at FROM memory_events WHERE position = %s "
            "RETURNING position",
            (event_id, session, version, schema_version, clear,
             payload if isinstance(payload, str) else json.dumps(payload), clear,
             payload_enc, clear, like)).scalar_one()
    return position, event_id


def garbage(store: memory.Store, like: int, session: str = "forged", version: int = 1
            ) -> tuple[int, uuid.UUID]:
    """A ciphertext that fails authentication, under the tenant's own epoch."""
    return raw_copy(store, like, session=session, version=version,
                    payload_enc=b"\x01" + os.urandom(80))


def say(store: memory.Store, session: str, actor: str, *texts: str) -> list[int]:
    return [store.append(session, memory.message("user", t), actor=actor)[0].position
            for t in texts]


def chunk_positions(store: memory.Store, tenant: str, generation: int | None = None
                    ) -> list[int]:
    with store.maintenance_engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT DISTINCT event_position FROM memory_chunks WHERE tenant = %s AND "
            "generation = coalesce(%s, (SELECT generation FROM memory_projections WHERE "
            "name = 'chunks' AND status = 'live')) ORDER BY 1",
            (tenant, generation)).scalars().all()


def summarized(store: memory.Store, tenant: str) -> int:
    with store.maintenance_engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT coalesce(max(covers_position), 0) FROM memory_summaries WHERE tenant = %s "
            "AND generation = (SELECT generation FROM memory_projections WHERE "
            "name = 'summaries' AND status = 'live')", (tenant,)).scalar_one()


def log_head(store: memory.Store) -> int:
    with store.maintenance_engine.connect() as conn:
        return conn.exec_driver_sql("SELECT max(position) FROM memory_events").scalar_one()


def checkpoints(store: memory.Store) -> dict[str, int]:
    with store.maintenance_engine.connect() as conn:
        return dict(conn.exec_driver_sql(
            "SELECT name, position FROM memory_projections WHERE status = 'live'").fetchall())


def quarantine_rows(store: memory.Store) -> list[tuple[Any, ...]]:
    with store.maintenance_engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT projection, generation, position, tenant, error_class, attempts, "
            "resolved_at IS NOT NULL FROM memory_quarantine "
            "ORDER BY projection, generation, position").fetchall()


@pytest.fixture
def poisoned(store: memory.Store) -> dict[str, Any]:
    """Tenant alice with three kinds of poison between good events; tenant bob writes
    before and after them."""
    alice, bob = store.for_tenant("alice"), store.for_tenant("bob")
    first = say(alice, "s1", "alice", "I adopted a cat named Miso.", "She likes boxes.")
    bob_before = say(bob, "s2", "bob", "My sister lives in Lisbon.", "We hike in the Alps.")
    forged = garbage(store, first[0])
    deep = raw_copy(store, first[0], session="deep",
                    payload='{"role": "user", "content": ' + "[" * 1100 + "]" * 1100 + "}")
    refused = raw_copy(store, first[0], session="old", schema_version=1,
                       payload={"role": "user"})  # a v1 message with no text to upcast
    bob_after = say(bob, "s2", "bob", "The report is due on Friday.", "Rain all week.",
                    "Melanie runs a bakery near the station.", "Do you like jazz?")
    last = say(alice, "s1", "alice", "Miso sleeps all day.", "Miso chases the light.")
    return {"alice": first + last, "bob": bob_before + bob_after,
            "poison": {forged[0]: "memory.errors.DecryptionError",
                       deep[0]: "orjson.JSONDecodeError", refused[0]: "KeyError"},
            "forged": forged}


def projector(store: memory.Store, **options: Any) -> Projector:
    return store.projector(embedder=EMBEDDER, summary_every=2, progress=False, **options)


def test_poison_in_one_tenant_does_not_stop_another(store: memory.Store,
                                                    poisoned: dict[str, Any]) -> None:
    results = projector(store).catch_up()
    head = log_head(store)
    for r in results:
        assert r.position == head
        assert {q.position: q.error_class for q in r.quarantined} == poisoned["poison"], r
        assert all(q.tenant == "alice" and q.projection == r.name for q in r.quarantined)
        assert f"{len(poisoned['poison'])} quarantined" in str(r)
    assert checkpoints(store) == {"chunks": head, "summaries": head}
    # every good event of both tenants is projected, chunks and summaries alike
    assert chunk_positions(store, "bob") == poisoned["bob"]
    assert chunk_positions(store, "alice") == poisoned["alice"]
    assert summarized(store, "bob") == poisoned["bob"][-1]
    assert summarized(store, "alice") == poisoned["alice"][-1]
    # listed, with the error that says what is wrong
    listed = projector(store).quarantined()
    assert sorted((q.projection, q.position) for q in listed) == sorted(
        (n, p) for n in ("chunks", "summaries") for p in poisoned["poison"])
    forged = next(q for q in listed if q.position == poisoned["forged"][0])
    assert forged.event_id == poisoned["forged"][1]
    assert "failed authentication" in forged.error_message and forged.attempts == 1
    # the next run meets nothing new and quarantines nothing again
    again = projector(store).catch_up()
    assert [(r.events, r.quarantined) for r in again] == [(0, []), (0, [])]
    assert len(quarantine_rows(store)) == 2 * len(poisoned["poison"])
    # row-level security like every tenant table; tenants may not write it (forget
    # deletes their own entries, see test_forget_deletes_the_actors_entries)
    with store.maintenance_engine.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT relrowsecurity AND relforcerowsecurity FROM pg_class "
            "WHERE relname = 'memory_quarantine'").scalar_one()
        assert conn.exec_driver_sql(
            "SELECT bool_or(has_table_privilege(r.oid, 'memory_quarantine', p)) "
            "FROM pg_roles r, unnest(ARRAY['INSERT', 'UPDATE', 'TRUNCATE']) p "
            "WHERE r.rolname = 'memory_app'").scalar() is not True


def test_cli_reports_lists_and_retries(database_url: str, store: memory.Store,
                                       poisoned: dict[str, Any],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["project", "--url", database_url, "--no-progress"]) == 3
    out, err = capsys.readouterr()
    forged_position, forged_id = poisoned["forged"]
    assert "chunks: rebuilt generation" in out and "3 quarantined" in out
    assert f"position {forged_position} tenant 'alice' event {forged_id}" in out
    assert "6 event(s) quarantined in this run" in err and "memory quarantine retry" in err
    assert chunk_positions(store, "bob") == poisoned["bob"]

    assert main(["quarantine", "list", "--url", database_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all("tenant 'alice'" in ln for ln in lines)
    assert sum(str(forged_id) in ln and "DecryptionError" in ln for ln in lines) == 2
    assert main(["quarantine", "list", "--projection", "summaries", "--url",
                 database_url]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3

    # the forged ciphertext fails again: still quarantined, its attempt counted
    first_id = int(lines[0].split()[0][1:])
    assert main(["quarantine", "retry", "--all", "--url", database_url,
                 "--no-progress"]) == 3
    out, err = capsys.readouterr()
    assert "0 resolved, 6 still quarantined" in err
    assert all("2 attempts" in ln for ln in out.splitlines())
    assert main(["quarantine", "retry", str(first_id), "--url", database_url]) == 3
    assert "3 attempts" in capsys.readouterr().out
    assert main(["quarantine", "retry", "--url", database_url]) == 2  # IDs or --all

    # a later run quarantines nothing new: exit 0, the old entries mentioned
    say(store.for_tenant("bob"), "s2", "bob", "One more thing.")
    assert main(["project", "--url", database_url, "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "quarantined" not in out and "6 event(s) quarantined by earlier runs" in err


class Picky(ChunksProjection):
    """Chunks whose apply fails on any event that says "boom" while ``broken``."""

    def __init__(self, embedder: Any = EMBEDDER) -> None:
        super().__init__(embedder, pieces=False, words=False)
        self.broken = True
        self.applied: list[int] = []

    def apply(self, conn: sa.Connection, generation: int,
              events: Any) -> int:
        if self.broken and any("boom" in str(e.payload) for e in events):
            raise ValueError("cannot chunk an explosion")
        self.applied.append(len(events))
        return super().apply(conn, generation, events)


def test_retry_after_the_cause_is_fixed(store: memory.Store) -> None:
    good = say(store, "s", "ann", *[f"line {i}" for i in range(12)])
    boom = say(store, "s", "ann", "boom goes the line")[0]
    good += say(store, "s", "ann", *[f"more {i}" for i in range(12)])
    picky = Picky()
    p = Projector(store.maintenance_engine, log=store.log, progress=False,
                  projections=[picky])
    [r] = p.catch_up(["chunks"])
    assert [(q.position, q.error_class) for q in r.quarantined] == [(boom, "ValueError")]
    assert r.events == 25 and chunk_positions(store, "default") == good
    # found by halving: far fewer applies than one per event, most of them whole parts
    assert len(picky.applied) < 12 and max(picky.applied) >= 6

    picky.broken = False
    [entry] = p.retry()
    assert entry.resolved and entry.attempts == 2 and entry.position == boom
    assert chunk_positions(store, "default") == sorted([*good, boom])
    assert p.quarantined() == []
    assert [q.resolved for q in p.quarantined(unresolved=False)] == [True]
    assert p.retry([entry.id])[0].attempts == 2  # resolved already: nothing applied


def test_rebuild_meets_the_poison_again_and_goes_on(store: memory.Store,
                                                    poisoned: dict[str, Any]) -> None:
    p = projector(store)
    p.catch_up(["chunks"])
    rebuilt = p.rebuild("chunks")
    assert rebuilt.switched and rebuilt.generation == 2
    assert {q.position for q in rebuilt.quarantined} == set(poisoned["poison"])
    assert chunk_positions(store, "bob") == poisoned["bob"]
    # the retired generation's entries went with its rows
    assert {(r[0], r[1]) for r in quarantine_rows(store)} == {("chunks", 2)}
    assert {q.generation for q in p.quarantined("chunks")} == {2}


class Failing(HashEmbedder):
    def embed(self, texts: Any) -> np.ndarray:
        raise RuntimeError("CUDA out of memory")


def test_errors_that_are_not_the_events_fault_still_raise(store: memory.Store) -> None:
    say(store, "s", "ann", "one", "two", "three")
    p = Projector(store.maintenance_engine, log=store.log, progress=False,
                  projections=[ChunksProjection(Failing(32, name="hash-32-quarantine"))])
    with pytest.raises(DependencyError, match="CUDA out of memory"):
        p.catch_up(["chunks"])
    assert quarantine_rows(store) == []

    # a lock timeout inside apply: raised, nothing quarantined, nothing moved
    class Locked(ChunksProjection):
        def apply(self, conn: sa.Connection, generation: int, events: Any) -> int:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
            conn.exec_driver_sql("LOCK TABLE memory_chunks IN EXCLUSIVE MODE")
            return super().apply(conn, generation, events)

    holder = store.maintenance_engine.connect()
    holder.begin()
    holder.exec_driver_sql("LOCK TABLE memory_chunks IN ACCESS EXCLUSIVE MODE")
    try:
        p = Projector(store.maintenance_engine, log=store.log, progress=False,
                      projections=[Locked(EMBEDDER)])
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            p.catch_up(["chunks"])
    finally:
        holder.rollback()
        holder.close()
    assert quarantine_rows(store) == []
    with store.maintenance_engine.connect() as conn:
        assert conn.exec_driver_sql(
            "SELECT max(position) FROM memory_projections").scalar_one() == 0


def test_is_poison_draws_the_line() -> None:
    assert is_poison(memory.errors.DecryptionError("x"))
    assert is_poison(KeyError("text")) and is_poison(RecursionError())
    assert is_poison(json.JSONDecodeError("bad", "{", 0))
    assert not is_poison(DependencyError("model"))
    assert not is_poison(ConnectionResetError()) and not is_poison(MemoryError())
    assert not is_poison(KeyboardInterrupt())
    import psycopg

    assert is_poison(psycopg.errors.UntranslatableCharacter("nul"))
    assert not is_poison(psycopg.errors.LockNotAvailable("timeout"))
    assert not is_poison(psycopg.errors.InsufficientPrivilege("no"))
    assert not is_poison(psycopg.OperationalError("server closed the connection"))


# -- crash safety: SIGKILL after the quarantine row is written, before the commit ------------

WORKER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import memory
    from memory.embedding import HashEmbedder
    from memory.projections import ChunksProjection, Projector, quarantine

    url, flag = sys.argv[1], Path(sys.argv[2])
    real = quarantine.record

    def record_then_die(conn, *args):
        entry = real(conn, *args)              # written in the batch's transaction
        n = conn.exec_driver_sql("SELECT count(*) FROM memory_quarantine").scalar_one()
        flag.write_text(str(n))
        os.kill(os.getpid(), signal.SIGKILL)   # before the checkpoint commits

    quarantine.record = record_then_die
    store = memory.Store.open(url, migrate=False)
    projection = ChunksProjection(HashEmbedder(32, name="hash-32-quarantine"),
                                  pieces=False, words=False)
    Projector(store.maintenance_engine, log=store.log, progress=False,
              projections=[projection]).catch_up(["chunks"])
""")


def test_sigkill_between_quarantine_and_commit_leaves_neither(
        tmp_path: Path, database_url: str, store: memory.Store) -> None:
    good = say(store, "s", "ann", "one", "two")
    forged = garbage(store, good[0])[0]
    good += say(store, "s", "ann", "three")
    p = Projector(store.maintenance_engine, log=store.log, progress=False,
                  projections=[ChunksProjection(EMBEDDER, pieces=False, words=False)])
    p.catch_up(["chunks"])  # build the generation, then start the tail over
    with store.maintenance_engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM memory_quarantine")
        conn.exec_driver_sql("DELETE FROM memory_chunks")
        conn.exec_driver_sql("UPDATE memory_projections SET position = 0")

    script, flag = tmp_path / "worker.py", tmp_path / "flag"
    script.write_text(WORKER)
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(script), database_url, str(flag)], env=env,
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert flag.read_text() == "1"  # the row existed inside the killed transaction
    assert quarantine_rows(store) == []  # ... and died with it, as did the checkpoint
    assert checkpoints(store)["chunks"] == 0 and chunk_positions(store, "default") == []

    [r] = p.catch_up(["chunks"])
    assert [q.position for q in r.quarantined] == [forged]
    assert chunk_positions(store, "default") == good
    assert checkpoints(store)["chunks"] == log_head(store)
    assert [row[2] for row in quarantine_rows(store)] == [forged]


def test_follow_reports_what_it_quarantined(store: memory.Store) -> None:
    good = say(store, "s", "ann", "one")
    p = projector(store)
    p.catch_up()
    forged = garbage(store, good[0])[0]
    stop = threading.Event()
    p = projector(store, stop=stop)
    timer = threading.Timer(3.0, stop.set)
    timer.start()
    try:
        results = p.follow(["chunks"], poll_interval=0.2, handle_signals=False)
    finally:
        timer.cancel()
    assert [q.position for q in results[0].quarantined] == [forged]


def test_summaries_skip_a_turn_that_cannot_be_opened(store: memory.Store) -> None:
    """A forged event and a malformed one inside a session: the session's later summaries
    are still written (without them), and no other event is quarantined for them."""
    first = say(store, "s", "ann", "I adopted a cat named Miso.")
    forged = garbage(store, first[0], session="s", version=2)  # version 2 of the same session
    raw_copy(store, first[0], session="s", version=3, payload=["not", "an", "object"])
    later: list[Any] = []
    for text in ("Miso likes boxes.", "Miso sleeps all day.", "We moved to Porto.",
                 "Porto is sunny."):
        later += store.append("s", memory.message("user", text), actor="ann")
    [r] = projector(store).catch_up(["summaries"])
    assert [q.position for q in r.quarantined] == [forged[0]]
    assert summarized(store, "default") == later[-1].position


def test_forget_deletes_the_actors_entries(store: memory.Store) -> None:
    """An entry's error may quote its event: forgetting the actor (on the tenant's own
    connection) deletes the actor's entries with the rest of what was derived."""
    alice = store.for_tenant("alice")
    first = say(alice, "s1", "alice", "I adopted a cat named Miso.")
    forged = garbage(store, first[0])[0]
    boom = say(alice, "s1", "alice", "boom: my PIN is 4321")[0]
    p = Projector(store.maintenance_engine, log=store.log, progress=False,
                  projections=[Picky()])
    [r] = p.catch_up(["chunks"])
    assert {q.position for q in r.quarantined} == {forged, boom}
    say(store.for_tenant("bob"), "s2", "bob", "Bob is still here.")
    alice.forget(actor="alice", erase=False)
    assert quarantine_rows(store) == []
    [r] = p.catch_up(["chunks"])  # and the log goes on for everyone else
    assert r.quarantined == [] and r.events >= 1
    assert chunk_positions(store, "bob") != []

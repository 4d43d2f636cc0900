"""Idempotency across a lost acknowledgement in group commit (the sync log's internals).
The contract itself (a re-sent id returns its first position, other content is refused
and writes nothing) is proven for every face in tests/log/test_conformance.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import memory
from memory.log import group as log_group


def batch(n: int = 3, prefix: str = "turn") -> list[memory.NewEvent]:
    return [memory.message("user" if i % 2 else "assistant", f"{prefix} {i}",
                           event_id=uuid.uuid4(), metadata={"i": i}) for i in range(n)]


def count(store: memory.Store) -> int:
    return len(list(store.read(0)))


def test_resent_batch_after_lost_ack_returns_original_positions(
        store: memory.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The append commits but its acknowledgement never reaches the caller (the connection
    breaks after the statement ran); the caller retries the same batch, with the same
    expectation, and gets the original positions back; nothing is added."""
    store.append("other", memory.note("someone else's event first"), actor="bob")
    events = batch(3)
    lost = {"armed": True}
    run = log_group.Combiner._run

    def lose_ack(self: log_group.Combiner, group: Any) -> None:
        run(self, group)  # the statement ran and committed...
        if lost["armed"]:  # ... and the answer never arrived
            lost["armed"] = False
            raise ConnectionError("connection reset by peer (simulated lost acknowledgement)")

    monkeypatch.setattr(log_group.Combiner, "_run", lose_ack)
    with pytest.raises(ConnectionError):
        store.append("s", events, actor="alice", expected_version=memory.NO_STREAM)
    monkeypatch.undo()
    head = store.head()
    written = store.read_session("s")
    assert [e.event_id for e in written] == [e.event_id for e in events]  # it did commit

    retry = store.append("s", events, actor="alice", expected_version=memory.NO_STREAM)
    assert [r.event_id for r in retry] == [e.event_id for e in events]
    assert [r.position for r in retry] == [e.position for e in written]
    assert [r.version for r in retry] == [1, 2, 3]
    assert all(r.duplicate for r in retry)
    assert store.head() == head
    assert count(store) == 4

    # Once more, and a single event of the batch on its own: still no-ops.
    again = store.append("s", events, actor="alice")
    assert [r.position for r in again] == [r.position for r in retry]
    one = store.append("s", events[1], actor="alice", expected_version=memory.NO_STREAM)
    assert one[0].position == retry[1].position and one[0].duplicate
    assert count(store) == 4



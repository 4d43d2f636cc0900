"""Idempotent appends (invariant 4): re-sending an event id is a no-op that returns the
original position; the same id with other content is a clear error and writes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
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


def test_first_append_is_not_a_duplicate(store: memory.Store) -> None:
    out = store.append("s", batch(2), actor="alice")
    assert [r.duplicate for r in out] == [False, False]
    assert [r.version for r in out] == [1, 2]
    assert out[1].position > out[0].position


def test_retry_matches_with_defaulted_occurred_at(store: memory.Store) -> None:
    """occurred_at defaults to the time of the call; a plain retry (a second later) of the
    same event must still match, so the default is not part of the identity."""
    event = memory.note("remember the milk", event_id=uuid.uuid4())
    first = store.append("s", event, actor="alice")
    second = store.append("s", event, actor="alice")
    assert second[0].duplicate and second[0].position == first[0].position


def test_explicit_occurred_at_is_part_of_the_identity(store: memory.Store) -> None:
    eid = uuid.uuid4()
    when = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    store.append("s", memory.note("x", event_id=eid, occurred_at=when), actor="alice")
    same = store.append("s", memory.note("x", event_id=eid, occurred_at=when), actor="alice")
    assert same[0].duplicate
    with pytest.raises(memory.IdempotencyConflict):
        store.append("s", memory.note("x", event_id=eid,
                                      occurred_at=datetime(2026, 5, 2, tzinfo=UTC)),
                     actor="alice")


@pytest.mark.parametrize("change", ["payload", "metadata", "type", "actor", "session"])
def test_same_id_other_content_is_refused_and_writes_nothing(store: memory.Store,
                                                             change: str) -> None:
    eid = uuid.uuid4()
    store.append("s", memory.message("user", "hello", event_id=eid, metadata={"k": 1}),
                 actor="alice")
    head, before = store.head(), count(store)
    fresh = memory.note("a new event in the same batch")
    variants: dict[str, tuple[str, str, memory.NewEvent]] = {
        "payload": ("s", "alice", memory.message("user", "HELLO", event_id=eid,
                                                 metadata={"k": 1})),
        "metadata": ("s", "alice", memory.message("user", "hello", event_id=eid,
                                                  metadata={"k": 2})),
        "type": ("s", "alice", memory.note("hello", event_id=eid, metadata={"k": 1})),
        "actor": ("other", "bob", memory.message("user", "hello", event_id=eid,
                                                 metadata={"k": 1})),
        "session": ("s2", "alice", memory.message("user", "hello", event_id=eid,
                                                  metadata={"k": 1})),
    }
    session, actor, event = variants[change]
    with pytest.raises(memory.IdempotencyConflict) as info:
        store.append(session, [fresh, event], actor=actor)
    assert str(eid) in str(info.value)
    assert info.value.event_id == str(eid)
    assert store.head() == head and count(store) == before
    assert store.read_session("s")[0].payload == {"role": "user", "content": "hello"}


def test_batch_overlapping_an_earlier_one_is_refused_whole(store: memory.Store) -> None:
    first = batch(2)
    store.append("s", first, actor="alice")
    head = store.head()
    with pytest.raises(memory.IdempotencyConflict) as info:
        store.append("s", [first[0], memory.note("not in the first batch")], actor="alice")
    assert info.value.event_id == str(first[0].event_id)
    assert store.head() == head and count(store) == 2


def test_same_id_twice_in_one_batch_is_refused(store: memory.Store) -> None:
    eid = uuid.uuid4()
    with pytest.raises(memory.ValidationError) as info:
        store.append("s", [memory.note("a", event_id=eid), memory.note("a", event_id=eid)],
                     actor="alice")
    assert info.value.index == 1 and info.value.field == "event_id"
    assert store.head() == 0


def test_event_id_as_string_is_the_same_event(store: memory.Store) -> None:
    eid = uuid.uuid4()
    first = store.append("s", memory.note("a", event_id=eid), actor="alice")
    second = store.append("s", memory.note("a", event_id=str(eid).upper()), actor="alice")
    assert second[0].duplicate and second[0].position == first[0].position

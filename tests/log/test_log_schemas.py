"""Event schemas: old versions upcast on read, and users' own event types."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

import memory
from memory import NewEvent, SchemaRegistry
from memory.log.schemas import schemas_dir

MOOD_V1 = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["mood"],
    "properties": {"mood": {"enum": ["happy", "sad", "tired"]}},
    "additionalProperties": False,
}
MOOD_V2 = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["mood", "intensity"],
    "properties": {"mood": {"enum": ["happy", "sad", "tired"]},
                   "intensity": {"type": "integer", "minimum": 1, "maximum": 5}},
    "additionalProperties": False,
}


def test_builtin_types_have_schema_files() -> None:
    registry = SchemaRegistry.default()
    assert {"message", "note", "tool_call", "tool_result"} <= set(registry.types())
    assert registry.current_version("message") == 2
    for path in schemas_dir().glob("*.json"):
        schema = json.loads(path.read_text())
        assert schema["type"] == "object", path.name


def test_message_v1_is_upcast_to_v2_on_read(store: memory.Store) -> None:
    old = NewEvent("message", {"role": "user", "text": "written by an old client"},
                   schema_version=1)
    new = memory.message("assistant", "written by a new one", name="bot")
    out = store.append("s", [old, new], actor="alice")
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql(
            "SELECT schema_version FROM memory_events ORDER BY position").scalars().all()
    assert stored == [1, 2]  # history is kept as written

    for events in (store.read_session("s"), list(store.read(0))):
        assert [e.schema_version for e in events] == [2, 2]
        assert events[0].payload == {"role": "user", "content": "written by an old client"}
        assert events[1].payload == {"role": "assistant", "content": "written by a new one",
                                     "name": "bot"}

    got: list[memory.RecordedEvent] = []
    with store.subscribe(0, poll_interval=0.05) as sub:
        for event in sub:
            got.append(event)
            if event.position == out[-1].position:
                break
    assert got[0].payload["content"] == "written by an old client"
    assert got[0].schema_version == 2


def test_v1_payload_is_validated_against_v1(store: memory.Store) -> None:
    with pytest.raises(memory.ValidationError) as info:
        store.append("s", NewEvent("message", {"role": "user", "content": "v2 shape"},
                                   schema_version=1), actor="alice")
    assert "message.v1" in str(info.value)
    assert store.head() == 0


def test_users_register_their_own_type(store: memory.Store) -> None:
    with pytest.raises(memory.UnknownEventType):
        store.append("s", NewEvent("mood", {"mood": "happy"}), actor="alice")
    store.registry.register("mood", MOOD_V1)
    assert store.registry.current_version("mood") == 1

    store.append("s", NewEvent("mood", {"mood": "happy"}), actor="alice")
    with pytest.raises(memory.ValidationError) as info:
        store.append("s", NewEvent("mood", {"mood": "ecstatic"}), actor="alice")
    assert "mood.v1" in str(info.value) and info.value.field == "payload"
    with pytest.raises(memory.ValidationError):
        store.append("s", NewEvent("mood", {"mood": "sad", "why": "rain"}), actor="alice")
    assert [e.payload for e in store.read_session("s")] == [{"mood": "happy"}]

    # A second version with an upcaster: old events read in the new shape.
    def v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "intensity": 3}

    store.registry.register("mood", MOOD_V2, version=2)
    store.registry.register_upcaster("mood", 1, v1_to_v2)
    store.append("s", NewEvent("mood", {"mood": "tired", "intensity": 5}), actor="alice")
    with pytest.raises(memory.ValidationError):
        store.append("s", NewEvent("mood", {"mood": "tired"}), actor="alice")
    events = store.read_session("s")
    assert [(e.schema_version, e.payload) for e in events] == [
        (2, {"mood": "happy", "intensity": 3}), (2, {"mood": "tired", "intensity": 5})]


def test_registration_refuses_bad_names_and_versions() -> None:
    registry = SchemaRegistry()
    with pytest.raises(ValueError):
        registry.register("Mood Swings", MOOD_V1)
    with pytest.raises(ValueError):
        registry.register("mood", MOOD_V1, version=0)


def test_registry_is_safe_to_use_from_threads(store: memory.Store) -> None:
    store.registry.register("mood", MOOD_V1)
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            store.append(f"s{k}", [NewEvent("mood", {"mood": "happy"})] * 1, actor=f"a{k}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(list(store.read(0))) == 4

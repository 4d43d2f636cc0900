"""Bad input gets a typed, clear error and writes nothing (invariant 7).

Every case here is refused, so the module shares one database and checks after each case
that the log is still empty.
"""

from __future__ import annotations

import enum
import math
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest
from support import shared_store

import memory
from memory import Limits, NewEvent, tool_call


@pytest.fixture(scope="module")
def vstore(server_url: str, template_url: str) -> Iterator[memory.Store]:
    with shared_store(server_url, template_url, "validation") as store:
        yield store


def msg(content: Any = "hello", **kw: Any) -> NewEvent:
    return NewEvent("message", {"role": "user", "content": content}, **kw)


class Color(enum.Enum):
    RED = "red"


def nested(levels: int) -> Any:
    """A list nested ``levels`` deep (``nested(1) == [0]``), built without recursion."""
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def deep_call(depth: int) -> NewEvent:
    """A tool call whose payload nests ``depth`` levels: the payload is level 1, its
    arguments level 2, and the list under them the rest."""
    return tool_call("t", {"x": nested(depth - 2)}, call_id="c")


def cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


class NoOffset(tzinfo):
    """A tzinfo that does not know its offset: the datetime is naive in effect."""

    def utcoffset(self, dt: datetime | None) -> None:
        return None


DEPTH = Limits().max_depth


MiB = 1024 * 1024

# (events, expected error type, index of the bad event, field, words the message must hold)
CASES: dict[str, tuple[Any, type[memory.Error], int, str | None, str]] = {
    "unknown type": (NewEvent("diary_entry", {"text": "x"}), memory.UnknownEventType, 0,
                     "type", "unknown event type 'diary_entry'"),
    "unknown schema version": (msg(schema_version=7), memory.UnknownEventType, 0,
                               "schema_version", "no schema version 7"),
    "schema version zero": (msg(schema_version=0), memory.ValidationError, 0,
                            "schema_version", "positive integer"),
    "schema: bad enum": (NewEvent("message", {"role": "robot", "content": "x"}),
                         memory.ValidationError, 0, "payload", "message.v2"),
    "schema: missing field": (NewEvent("message", {"role": "user"}), memory.ValidationError,
                              0, "payload", "content"),
    "schema: extra field": (NewEvent("message", {"role": "user", "content": "x", "mood": 1}),
                            memory.ValidationError, 0, "payload", "message.v2"),
    "schema: wrong type": (msg(42), memory.ValidationError, 0, "payload", "string"),
    "schema: v1 shape as v2": (NewEvent("message", {"role": "user", "text": "x"}),
                               memory.ValidationError, 0, "payload", "message.v2"),
    "payload not an object": (NewEvent("note", ["a", "list"]), memory.ValidationError, 0,
                              "payload", "object"),
    "payload over 1 MiB": (msg("x" * MiB), memory.PayloadTooLarge, 0, "payload",
                           "over the limit of 1048576"),
    "metadata over 1 MiB": (msg(metadata={"blob": "x" * MiB}), memory.PayloadTooLarge, 0,
                            "metadata", "over the limit"),
    "NUL in payload": (msg("a\x00b"), memory.ValidationError, 0, "payload", "NUL"),
    "NUL in a key": (msg(metadata={"a\x00": 1}), memory.ValidationError, 0, "metadata", "NUL"),
    "NUL in metadata": (msg(metadata={"k": ["ok", "b\x00"]}), memory.ValidationError, 0,
                        "metadata", "NUL"),
    "lone surrogate in payload": (msg("broken \ud800 text"), memory.ValidationError, 0,
                                  "payload", "surrogate"),
    "lone surrogate in metadata": (msg(metadata={"k": "\udfff"}), memory.ValidationError, 0,
                                   "metadata", "surrogate"),
    "set": (msg(metadata={"tags": {"a", "b"}}), memory.ValidationError, 0, "metadata",
            "not JSON"),
    "datetime": (msg(metadata={"when": datetime.now(UTC)}), memory.ValidationError, 0,
                 "metadata", "not JSON"),
    "NaN": (msg(metadata={"score": math.nan}), memory.ValidationError, 0, "metadata",
            "not JSON"),
    "Infinity": (msg(metadata={"score": -math.inf}), memory.ValidationError, 0, "metadata",
                 "not JSON"),
    "UUID object": (msg(metadata={"ref": uuid.uuid4()}), memory.ValidationError, 0,
                    "metadata", "not JSON"),
    "enum": (msg(metadata={"color": Color.RED}), memory.ValidationError, 0, "metadata",
             "not JSON"),
    "bytes": (msg(metadata={"raw": b"\x00\x01"}), memory.ValidationError, 0, "metadata",
              "not JSON"),
    "non-string key": (msg(metadata={1: "one"}), memory.ValidationError, 0, "metadata",
                       "keys must be strings"),
    "object": (msg(metadata={"o": object()}), memory.ValidationError, 0, "metadata",
               "not JSON"),
    "metadata not an object": (msg(metadata=["x"]), memory.ValidationError, 0, "metadata",
                               "JSON object"),
    "event id empty": (msg(event_id=""), memory.ValidationError, 0, "event_id", "UUID"),
    "event id not a UUID": (msg(event_id="event-1"), memory.ValidationError, 0, "event_id",
                            "UUID"),
    "event id with NUL": (msg(event_id="\x00" * 36), memory.ValidationError, 0, "event_id",
                          "UUID"),
    "naive occurred_at": (msg(occurred_at=datetime(2026, 1, 1)), memory.ValidationError, 0,
                          "occurred_at", "timezone-aware"),
    "occurred_at not a datetime": (msg(occurred_at="2026-01-01"), memory.ValidationError, 0,
                                   "occurred_at", "datetime"),
    "payload one level too deep": (deep_call(DEPTH + 1), memory.ValidationError, 0,
                                   "payload", f"nested more than {DEPTH} levels"),
    "payload 1,100 levels deep": (deep_call(1100), memory.ValidationError, 0, "payload",
                                  "Limits.max_depth"),
    "metadata too deep": (msg(metadata={"m": nested(DEPTH)}), memory.ValidationError, 0,
                          "metadata", f"nested more than {DEPTH} levels"),
    "metadata 1,100 levels deep": (msg(metadata={"m": nested(1100)}), memory.ValidationError,
                                   0, "metadata", "nested more than"),
    "payload that contains itself": (tool_call("t", cyclic(), call_id="c"),
                                     memory.ValidationError, 0, "payload", "nested more"),
    "tzinfo without an offset": (msg(occurred_at=datetime(2026, 1, 1, tzinfo=NoOffset())),
                                 memory.ValidationError, 0, "occurred_at", "timezone-aware"),
    "occurred_at before year 1 in UTC": (
        msg(occurred_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
        memory.ValidationError, 0, "occurred_at", "outside years 1-9999"),
    "not an event": ({"type": "message"}, memory.ValidationError, 0, None, "NewEvent"),
    "empty batch": ([], memory.ValidationError, 0, "events", "at least one"),
    "one bad event in a batch": ([msg("one"), msg("two"), msg("three\x00"), msg("four")],
                                 memory.ValidationError, 2, "payload", "NUL"),
    "one unknown type in a batch": ([msg(), NewEvent("nope", {}), msg()],
                                    memory.UnknownEventType, 1, "type", "unknown"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_event_is_refused_with_a_clear_error(vstore: memory.Store, case: Any) -> None:
    events, error, index, field, words = case
    with pytest.raises(error) as info:
        vstore.append("s", events, actor="alice")
    assert isinstance(info.value, memory.Error)
    assert info.value.index == index
    assert info.value.field == field
    assert words in str(info.value)
    assert str(info.value).startswith(f"event {index}")
    assert vstore.head() == 0


LONG = "x" * 257
BAD_IDS: dict[str, tuple[str, Callable[[memory.Store], Any]]] = {
    "empty session": ("session_id", lambda s: s.append("", msg(), actor="alice")),
    "empty actor": ("actor_id", lambda s: s.append("s", msg(), actor="")),
    "empty tenant": ("tenant", lambda s: s.log.append("", "alice", "s", msg())),
    "long session": ("session_id", lambda s: s.append(LONG, msg(), actor="alice")),
    "long actor": ("actor_id", lambda s: s.append("s", msg(), actor=LONG)),
    "long tenant": ("tenant", lambda s: s.log.append(LONG, "alice", "s", msg())),
    "session not text": ("session_id", lambda s: s.append(7, msg(), actor="alice")),
    "NUL in session": ("session_id", lambda s: s.append("a\x00b", msg(), actor="alice")),
    "NUL in actor": ("actor_id", lambda s: s.append("s", msg(), actor="\x00")),
    "surrogate in session": ("session_id", lambda s: s.append("\ud83d", msg(),
                                                              actor="alice")),
    "surrogate in tenant": ("tenant", lambda s: s.log.append("t\udc00", "alice", "s",
                                                             msg())),
    "negative expected version": ("expected_version", lambda s: s.append(
        "s", msg(), actor="alice", expected_version=-1)),
}
# expected_version: None (ANY), 0 (NO_STREAM) or a version, which is a 32-bit column.
for bad in (-1, -2, 2**31, 2**63, 2**64, True, False, 1.0, "1", math.nan):
    BAD_IDS[f"expected version {bad!r}"] = ("expected_version", lambda s, bad=bad: s.append(
        "s", msg(), actor="alice", expected_version=bad))


@pytest.mark.parametrize("case", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_bad_ids_are_refused(vstore: memory.Store, case: Any) -> None:
    field, call = case
    with pytest.raises(memory.ValidationError) as info:
        call(vstore)
    assert info.value.field == field
    assert vstore.head() == 0


READS: dict[str, tuple[str, Callable[[memory.Store], Any]]] = {}
for bad in (-1, 2**63, 2**64, True, 1.5, "0", None):
    READS[f"from_position {bad!r}"] = ("from_position",
                                       lambda s, bad=bad: s.read(bad))
    READS[f"subscribe from {bad!r}"] = ("from_position",
                                        lambda s, bad=bad: s.subscribe(bad))
    READS[f"read_page after {bad!r}"] = ("after", lambda s, bad=bad: s.log.read_page(bad))
for bad in (-1, 2**31, 2**63, True, 1.0, None):
    READS[f"from_version {bad!r}"] = ("from_version",
                                      lambda s, bad=bad: s.read_session("s", bad))
for bad in (-1, 2**63, True, 2.0):
    READS[f"session limit {bad!r}"] = ("limit", lambda s, bad=bad: s.log.read_session(
        s.tenant, "s", 1, bad))
for bad in (0, -1, 2**31, False, 10.0, None):
    READS[f"batch_size {bad!r}"] = ("batch_size", lambda s, bad=bad: s.log.read(
        0, tenant=s.tenant, batch_size=bad))
    READS[f"page limit {bad!r}"] = ("limit", lambda s, bad=bad: s.log.read_page(0, limit=bad))
for bad in (0, -1.0, math.nan, math.inf, True, "1"):
    READS[f"poll_interval {bad!r}"] = ("poll_interval", lambda s, bad=bad: s.subscribe(
        poll_interval=bad))


@pytest.mark.parametrize("case", READS.values(), ids=READS.keys())
def test_bad_numbers_in_reads_are_refused(vstore: memory.Store, case: Any) -> None:
    """Refused when the call is made (``read`` is lazy, its check is not), with the
    argument named, before any statement: no driver error, no endless loop of empty pages
    (``batch_size=0``)."""
    name, call = case
    with pytest.raises(memory.InvalidArgument) as info:
        call(vstore)
    assert info.value.name == name and str(info.value).startswith(f"{name}: ")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("field,bad", [
    ("max_depth", 0), ("max_depth", 513), ("max_depth", True), ("max_depth", "64"),
    ("max_batch", 0), ("max_payload_bytes", 2**30), ("max_id_length", -1),
    ("lock_timeout_ms", 2**31), ("statement_timeout_ms", -1),
    ("idle_in_transaction_timeout_ms", 1.5)])
def test_bad_limits_are_refused(field: str, bad: Any) -> None:
    with pytest.raises(memory.InvalidArgument) as info:
        Limits(**{field: bad})
    assert info.value.name == f"Limits.{field}"


def test_the_extreme_numbers_that_are_allowed(vstore: memory.Store) -> None:
    assert vstore.read_session("s", 2**31 - 1) == []
    assert list(vstore.read(2**63 - 1)) == []
    assert vstore.log.read_session(vstore.tenant, "s", 0, 0) == []
    Limits(max_depth=512, lock_timeout_ms=0, max_payload_bytes=2**30 - 1)


def test_tenant_is_checked_when_the_store_is_bound(vstore: memory.Store) -> None:
    with pytest.raises(memory.ValidationError):
        vstore.for_tenant("")
    with pytest.raises(memory.ValidationError):
        vstore.for_tenant("y" * 300)


def test_batch_over_the_limit(vstore: memory.Store) -> None:
    small = memory.Store(vstore.engine, limits=Limits(max_batch=3), _owns_engine=False)
    with pytest.raises(memory.ValidationError) as info:
        small.append("s", [msg() for _ in range(4)], actor="alice")
    assert "at most 3" in str(info.value)
    assert vstore.head() == 0


def test_size_limit_is_configurable(store: memory.Store) -> None:
    """The limit is on the serialized payload, in bytes; the default is 1 MiB."""
    assert Limits().max_payload_bytes == MiB
    small = memory.Store(store.engine, limits=Limits(max_payload_bytes=100),
                         _owns_engine=False)
    overhead = len('{"content":"","role":"user"}')
    ok = small.append("s", msg("é" * ((100 - overhead) // 2)), actor="alice")  # 2 bytes each
    assert len(ok) == 1
    with pytest.raises(memory.PayloadTooLarge) as info:
        small.append("s", msg("é" * ((100 - overhead) // 2 + 1)), actor="alice")
    assert "over the limit of 100" in str(info.value)
    assert store.head() == ok[0].position
    # Just under the default limit is accepted.
    big = store.append("s", msg("x" * (MiB - overhead)), actor="alice")
    assert store.read_session("s", from_version=big[0].version)[0].payload["content"] == (
        "x" * (MiB - overhead))


def test_text_that_only_looks_like_a_nul_is_kept(store: memory.Store) -> None:
    """A literal backslash followed by u0000 is ordinary text, not a NUL character."""
    text = "path C:\\u0000 and \\\\u0000 and emoji \U0001f600 and é"
    store.append("s", [msg(text, metadata={"k": text, "tuple": (1, 2), "big": 2**70})],
                 actor="alice")
    event = store.read_session("s")[0]
    assert event.payload["content"] == text
    assert event.metadata == {"k": text, "tuple": [1, 2], "big": 2**70}


@pytest.mark.parametrize("encrypt", [True, False], ids=["sealed", "clear"])
def test_nesting_at_the_limit_is_kept(database_url: str, encrypt: bool) -> None:
    with memory.Store.open(database_url, migrate=False, encrypt=encrypt) as store:
        store.append("s", deep_call(DEPTH), actor="alice")
        assert store.read_session("s")[0].payload["arguments"] == {"x": nested(DEPTH - 2)}
        with pytest.raises(memory.ValidationError):
            store.append("s", deep_call(DEPTH + 1), actor="alice")
        assert store.head() == store.read_session("s")[0].position


def test_the_depth_limit_is_configurable(store: memory.Store) -> None:
    shallow = memory.Store(store.engine, limits=Limits(max_depth=3), _owns_engine=False)
    shallow.append("s", deep_call(3), actor="alice")
    with pytest.raises(memory.ValidationError) as info:
        shallow.append("s", deep_call(4), actor="alice")
    assert "nested more than 3 levels" in str(info.value)
    deeper = memory.Store(store.engine, limits=Limits(max_depth=300), _owns_engine=False)
    deeper.append("s", deep_call(300), actor="alice")  # past orjson's 255 when written
    assert store.read_session("s")[-1].payload["arguments"] == {"x": nested(298)}


def test_a_raised_recursion_limit_does_not_let_a_poison_event_in(
        store: memory.Store, embedder: Any) -> None:
    """Nesting of ~1,030 levels used to pass when the caller had raised its recursion
    limit, and then no read of the tenant (nor any projection) could parse it. It is
    refused now, whatever the recursion limit, and the log stays readable."""
    store.append("s", msg("before"), actor="alice")
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        for depth in (1030, 1100, 5000):
            with pytest.raises(memory.ValidationError) as info:
                store.append("s", deep_call(depth), actor="alice")
            assert info.value.field == "payload"
            with pytest.raises(memory.ValidationError):
                store.append("s", msg(metadata={"m": nested(depth)}), actor="alice")
    finally:
        sys.setrecursionlimit(old)
    store.append("s", msg("after"), actor="alice")
    assert [e.payload["content"] for e in store.read_session("s")] == ["before", "after"]
    assert len(list(store.read())) == 2
    runs = store.project(embedder=embedder)
    assert runs and all(r.position == store.head() for r in runs)

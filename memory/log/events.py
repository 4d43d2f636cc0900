"""Events as the caller writes them and as the log gives them back, and their checks.

Everything here runs before a byte is written: a batch with one bad event is refused
whole, with an error that names the event and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from ..config import Limits
from ..errors import InvalidArgument, PayloadTooLarge, ValidationError
from .rand import random_bytes

# A JSON-escaped NUL that is not itself an escaped backslash followed by "u0000".
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(frozen=True)
class NewEvent:
    """An event to append. ``event_id`` makes a retry idempotent: send the same id again
    and the log returns the original position instead of writing a duplicate."""

    type: str
    payload: Mapping[str, Any]
    event_id: uuid.UUID | str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    schema_version: int | None = None


@dataclass(frozen=True)
class RecordedEvent:
    """An event as stored, upcast to the current schema version of its type."""

    position: int
    event_id: uuid.UUID
    tenant: str
    actor_id: str
    session_id: str
    version: int
    type: str
    schema_version: int
    payload: dict[str, Any]
    metadata: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime
    forgotten: bool = False
    """The payload was sealed and its key destroyed (``Store.forget``): ``payload`` and
    ``metadata`` are empty. Readers and projections skip such events."""


@dataclass(frozen=True)
class Appended:
    """Where one appended event landed. ``duplicate`` is True when the event id was
    already in the log with the same content (an idempotent retry)."""

    event_id: uuid.UUID
    position: int
    version: int
    recorded_at: datetime
    duplicate: bool


@dataclass(frozen=True)
class PreparedEvent:
    """A validated event, serialized once, ready for the append statement."""

    event_id: uuid.UUID
    type: str
    schema_version: int
    payload_json: str
    metadata_json: str
    occurred_at: datetime
    content_hash: bytes


def message(role: str, content: str, *, name: str | None = None, **kw: Any) -> NewEvent:
    """A chat message (user, assistant, system or tool)."""
    payload: dict[str, Any] = {"role": role, "content": content}
    if name is not None:
        payload["name"] = name
    return NewEvent("message", payload, **kw)


def note(text: str, **kw: Any) -> NewEvent:
    """A free note or observation about the actor."""
    return NewEvent("note", {"text": text}, **kw)


def tool_call(name: str, arguments: Mapping[str, Any], *, call_id: str, **kw: Any) -> NewEvent:
    return NewEvent("tool_call", {"name": name, "arguments": dict(arguments), "call_id": call_id},
                    **kw)


def tool_result(call_id: str, content: str, *, name: str | None = None, is_error: bool = False,
                **kw: Any) -> NewEvent:
    payload: dict[str, Any] = {"call_id": call_id, "content": content, "is_error": is_error}
    if name is not None:
        payload["name"] = name
    return NewEvent("tool_result", payload, **kw)


def check_id(value: object, what: str, limits: Limits, index: int = 0) -> str:
    """Tenant, actor and session ids: non-empty text, bounded, storable."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{what} must be a non-empty string", index=index, field=what)
    if len(value) > limits.max_id_length:
        raise ValidationError(
            f"{what} is {len(value)} characters, over the limit of {limits.max_id_length}",
            index=index, field=what)
    if "\x00" in value:
        raise ValidationError(f"{what} contains a NUL character", index=index, field=what)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{what} contains a lone surrogate", index=index,
                              field=what) from None
    return value


# Datetimes and dataclasses are not JSON: orjson would turn them into strings, so they are
# passed through to ``default`` (absent), which refuses them.
_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def canonical_json(value: Any, what: str, index: int, max_depth: int) -> str:
    """Serialize strictly: only JSON types, string keys, no NaN, no NUL, valid UTF-8, at
    most ``max_depth`` levels of nesting (:func:`check_depth`). Sorted keys make the text
    (and so the idempotency hash) independent of dict order; floats are written so that
    the clear path's jsonb gives them back as the same floats (:func:`_jsonb_floats`).

    The fast path is orjson, accepted only when the text parses back *equal* to the value:
    orjson quietly writes NaN as null and UUIDs or enums as strings, and those fail the
    comparison. Anything else takes the strict ``json.dumps`` path, which decides: it
    refuses what is not JSON and names the problem. A given value always takes the same
    path, so its text (and hash) is stable across retries.
    """
    try:
        raw = orjson.dumps(value, option=_ORJSON)
        # orjson refuses nesting beyond 255 levels, so only the limit is left to check,
        # and only when there are more brackets in all than it allows.
        if raw.count(b"{") + raw.count(b"[") > max_depth:
            check_depth(value, max_depth, what, index)
        if orjson.loads(raw) == value:
            text = raw.decode("utf-8")
            if "\\u0000" in text and _ESCAPED_NUL.search(text):
                raise ValidationError("text contains a NUL character (PostgreSQL cannot "
                                      "store it)", index=index, field=what)
            return _jsonb_floats(text)
    except orjson.JSONEncodeError as exc:
        if "key must be str" in str(exc):
            raise ValidationError("not JSON: object keys must be strings", index=index,
                                  field=what) from None
    return _jsonb_floats(_strict_json(value, what, index, max_depth))


def check_depth(value: Any, max_depth: int, what: str, index: int) -> None:
    """Refuse nesting deeper than ``max_depth`` (``Limits.max_depth``), without recursion:
    a value too deep for the parsers that read it back (orjson stops at 1,024 levels, the
    standard library at the interpreter's recursion limit) would be written and then fail
    every read of its tenant. A value that contains itself is infinitely deep."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, _CONTAINERS) else []
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise ValidationError(f"nested more than {max_depth} levels deep (the limit is "
                                  "Limits.max_depth)", index=index, field=what)
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))


_CONTAINERS = (dict, list, tuple)


def _strict_json(value: Any, what: str, index: int, max_depth: int) -> str:
    check_depth(value, max_depth, what, index)
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"not JSON: {exc}", index=index, field=what) from None
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise ValidationError("text contains a NUL character (PostgreSQL cannot store it)",
                              index=index, field=what)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("text contains a lone surrogate (not valid Unicode)",
                              index=index, field=what) from None
    return text


# A string (left as it is) or a number with a positive exponent, as both serializers
# write one (``1e+16``).
_STRING_OR_EXP = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|-?[0-9]+(?:\.[0-9]+)?e\+[0-9]+')


def _jsonb_floats(text: str) -> str:
    """Write an integral float in exponent form (``1e+16``, ``1.5e+300``) in full, with a
    ``.0``. jsonb keeps a number as a decimal with as many fraction digits as it was
    written with after the exponent is applied: ``1e+16`` comes back as
    ``10000000000000000``, which reads as an int (and ``1.5e+300`` as an int that is not
    the float). ``10000000000000000.0`` comes back as written and reads as the same float.
    Non-integral floats keep their fraction digits in jsonb and are left as they are,
    and so is every float with a negative exponent (none is integral). Text without
    ``e+`` anywhere (the test costs a substring search; a string that holds it only costs
    the exact pass) has no such float."""
    if "e+" not in text:
        return text
    return _STRING_OR_EXP.sub(_full_float, text)


def _full_float(match: re.Match[str]) -> str:
    token = match.group()
    if token[0] == '"':
        return token
    number = Decimal(token)
    if number != number.to_integral_value():
        return token
    return f"{number:f}.0"




def new_event_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): the time in milliseconds first, then 74 random bits. Ids made
    here go in near the right edge of the ``(tenant, event_id)`` index instead of at a
    random page (uuid4), and their random bits come from a block drawn ahead
    (memory/log/rand.py) instead of one system call each."""
    rand = int.from_bytes(random_bytes(10), "big")  # 80 bits; 12 + 62 of them are used
    ms = time.time_ns() // 1_000_000
    return uuid.UUID(int=(ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68) << 64
                     | 0b10 << 62 | (rand & (2**62 - 1)))


def parse_event_id(value: uuid.UUID | str | None, index: int) -> uuid.UUID:
    if value is None:
        return new_event_id()
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str) and value:
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ValidationError(f"event_id must be a UUID, got {value!r:.80}", index=index,
                          field="event_id")


def check_time(value: datetime | None, index: int) -> datetime:
    """The event time in UTC. Any offset Python allows is taken: PostgreSQL refuses an
    offset beyond 15:59:59, and the JSON the append sends rounds one with seconds (1970
    Africa/Monrovia was -00:44:30) to minutes, so the instant is sent as UTC."""
    if value is None:
        return datetime.now(UTC)
    if not isinstance(value, datetime):
        raise ValidationError("occurred_at must be a datetime", index=index, field="occurred_at")
    try:
        offset = value.utcoffset()
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"occurred_at has a bad timezone: {exc}", index=index,
                              field="occurred_at") from None
    if offset is None:
        raise ValidationError("occurred_at must be timezone-aware (e.g. UTC)", index=index,
                              field="occurred_at")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationError(f"occurred_at {value.isoformat()} is outside years 1-9999 in "
                              "UTC", index=index, field="occurred_at") from None


MAX_VERSION = 2**31 - 1
"""Versions are ``integer`` columns; positions are ``bigint``."""
MAX_POSITION = 2**63 - 1


def check_int(value: object, name: str, low: int, high: int, *, none: bool = False) -> None:
    """A numeric argument of the public API: an int (not a bool, which is one to Python)
    from ``low`` to ``high``, or None when ``none``. Checked before any statement, so a
    value the server's column types cannot take gets this error instead of a driver's."""
    if value is None and none:
        return
    if type(value) is not int or not low <= value <= high:
        raise InvalidArgument(name, f"must be an integer from {low} to {high}"
                              + (" or None" if none else "") + f", got {value!r:.40}")


def content_hash(actor_id: str, event: PreparedEvent, *, explicit_time: bool) -> bytes:
    """What makes two appends 'the same event' for idempotency. A defaulted occurred_at
    (the time of the call) is left out, so a plain retry of the same event matches."""
    return hash_parts(actor_id, event.type, event.schema_version, event.payload_json,
                      event.metadata_json, event.occurred_at if explicit_time else None)


def hash_parts(actor_id: str, type_: str, schema_version: int, payload_json: str,
               metadata_json: str, occurred_at: datetime | None) -> bytes:
    """:func:`content_hash` from its parts (the append path hashes before it builds the
    :class:`PreparedEvent`, so it builds it once)."""
    when = occurred_at.isoformat() if occurred_at is not None else ""
    text = "\x1f".join((actor_id, type_, str(schema_version), payload_json, metadata_json,
                         when))
    return hashlib.sha256((text + "\x1f").encode("utf-8")).digest()


def check_size(payload_json: str, limits: Limits, index: int, what: str = "payload") -> None:
    size = len(payload_json.encode("utf-8"))
    if size > limits.max_payload_bytes:
        raise PayloadTooLarge(
            f"{what} is {size} bytes, over the limit of {limits.max_payload_bytes}",
            index=index, field=what)

"""What is appended reads back equal, value for value and type for type, on both paths:
sealed (the default, memory/log/sealing.py: the payload travels as encrypted JSON text) and
clear (``encrypt=False``: the payload is a jsonb column, which rewrites numbers).

One database for the module; every example writes a session of its own.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import new_database

import memory
from memory import Limits, tool_call

DEPTH = Limits().max_depth


@pytest.fixture(scope="module")
def stores(server_url: str, template_url: str) -> Iterator[dict[str, memory.Store]]:
    assert template_url
    with new_database(server_url, "roundtrip") as url, \
            memory.Store.open(url, migrate=False) as sealed, \
            memory.Store.open(url, migrate=False, encrypt=False) as clear:
        yield {"sealed": sealed, "clear": clear}


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down: ``1e16 == 10**16`` and ``True == 1``
    in Python, but a float that comes back as an int has been changed."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def roundtrip(store: memory.Store, arguments: Any, metadata: dict[str, Any] | None = None,
              when: datetime | None = None) -> memory.RecordedEvent:
    session = uuid.uuid4().hex
    store.append(session, tool_call("t", arguments, call_id="c", metadata=metadata or {},
                                    occurred_at=when), actor="fuzz")
    [event] = store.read_session(session)
    return event


# Text the log accepts: any code point but NUL (PostgreSQL cannot store it) and lone
# surrogates (not Unicode); both are refused (tests/log/test_log_validation.py).
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
               max_size=20)
FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 0.0, 1e16, -1e16, 1.5e300, 1.7976931348623157e308, 5e-324,
                     2.0**53, 2.0**64, 123456789012345680.0, 1e-7, 1.5e-300]))
INTS = st.one_of(st.integers(), st.integers(-(2**300), 2**300),
                 st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64,
                                  2**64 - 1, 10**18, 10**19]))
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)


def nested(value: Any, levels: int, key: str) -> Any:
    for i in range(levels):
        value = {key: value} if i % 2 else [value]
    return value


# The payload is level 1 and its "arguments" level 2, so up to DEPTH - 2 more levels
# around a scalar (a nested container would add its own levels past the limit).
DEEP = st.builds(nested, SCALARS, st.integers(0, DEPTH - 2), TEXT)
ARGUMENTS = st.dictionaries(TEXT, st.one_of(VALUES, DEEP), max_size=4)

OFFSETS = st.timedeltas(min_value=-timedelta(hours=23, minutes=59, seconds=59),
                        max_value=timedelta(hours=23, minutes=59, seconds=59))
WHEN = st.one_of(
    st.builds(lambda d, o: d.replace(tzinfo=timezone(o)),
              st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31)), OFFSETS),
    st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31), timezones=st.timezones()))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(arguments=ARGUMENTS, metadata=st.dictionaries(TEXT, VALUES, max_size=4), when=WHEN)
@example(arguments={}, metadata={},  # a local time in a gap: clocks went 01:00 -> 02:00
         when=datetime(2000, 3, 26, 1, 0, tzinfo=ZoneInfo("Atlantic/Canary")))
def test_append_then_read_gives_equal_values(stores: dict[str, memory.Store],
                                             arguments: dict[str, Any],
                                             metadata: dict[str, Any], when: datetime) -> None:
    for path, store in stores.items():
        event = roundtrip(store, arguments, metadata, when)
        assert same(event.payload["arguments"], arguments), path
        assert same(event.metadata, metadata), path
        # the same instant: compared in UTC, since an aware time in a zone's gap or fold
        # (2000-03-26 01:00 at Atlantic/Canary) compares unequal to every time in another
        # zone (PEP 495), whatever the instant
        assert event.occurred_at == when.astimezone(UTC), path


@pytest.mark.parametrize("path", ["sealed", "clear"])
@pytest.mark.parametrize("value", [2**64, -(2**64), 2**63, 2**200, 10**19, 1e16, 1.5e300,
                                   1.7976931348623157e308, 5e-324, 123456789012345680.0,
                                   True, "1e+16", {"1e+16": 1e+16}],
                         ids=repr)
def test_numbers_keep_their_value_and_type(stores: dict[str, memory.Store], path: str,
                                           value: Any) -> None:
    """The issue's case (2**64 read back as 1.8446744073709552e+19 when sealed), and
    integral floats in exponent form, which jsonb would give back as ints."""
    event = roundtrip(stores[path], {"n": value, "text": f"about {value!r}"})
    assert same(event.payload["arguments"], {"n": value, "text": f"about {value!r}"})


def test_negative_zero(stores: dict[str, memory.Store]) -> None:
    """The sealed path keeps the sign of -0.0; jsonb's numeric has no negative zero, so
    the clear path gives back 0.0 (equal, the sign lost: README, "What is appended
    reads back equal")."""
    assert math.copysign(1, roundtrip(stores["sealed"], {"z": -0.0}).payload
                         ["arguments"]["z"]) == -1
    back = roundtrip(stores["clear"], {"z": -0.0}).payload["arguments"]["z"]
    assert same(back, 0.0) and back == -0.0


MONROVIA_1970 = timezone(timedelta(minutes=-44, seconds=-30))


@pytest.mark.parametrize("path", ["sealed", "clear"])
@pytest.mark.parametrize("offset", [
    timedelta(minutes=-44, seconds=-30),           # Africa/Monrovia until 1972
    timedelta(hours=-20),                          # beyond PostgreSQL's +-15:59:59
    timedelta(hours=23, minutes=59, seconds=59, microseconds=999_999),
    timedelta(seconds=1, microseconds=5)], ids=str)
def test_any_offset_is_stored_as_the_same_instant(stores: dict[str, memory.Store], path: str,
                                                  offset: timedelta) -> None:
    when = datetime(1970, 6, 1, 12, 0, 0, 123_456, tzinfo=timezone(offset))
    event = roundtrip(stores[path], {}, when=when)
    assert event.occurred_at == when
    assert event.occurred_at.utcoffset() is not None
    assert event.occurred_at.astimezone(UTC) == when.astimezone(UTC)


def test_an_iana_zone_with_a_seconds_offset(stores: dict[str, memory.Store]) -> None:
    from zoneinfo import ZoneInfo

    when = datetime(1970, 1, 1, 0, 0, tzinfo=ZoneInfo("Africa/Monrovia"))
    assert when.utcoffset() == timedelta(minutes=-44, seconds=-30)
    for store in stores.values():
        assert roundtrip(store, {}, when=when).occurred_at == when

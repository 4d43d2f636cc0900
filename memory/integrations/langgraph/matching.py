"""The filters of LangGraph's store API: ``filter`` on an item's value (equality, nested
objects, and the ``$eq $ne $gt $gte $lt $lte`` operators, as LangGraph's own stores read
them) and the prefix/suffix conditions of ``list_namespaces`` (``"*"`` matches any label).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import InvalidArgument

_ORDERED = {"$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b,
            "$lt": lambda a, b: a < b, "$lte": lambda a, b: a <= b}


def matches_filter(value: Mapping[str, Any], wanted: Mapping[str, Any] | None) -> bool:
    """Whether an item's value passes ``filter`` (every key must match)."""
    return not wanted or all(_matches(value.get(k), w) for k, w in wanted.items())


def _matches(have: Any, want: Any) -> bool:
    if isinstance(want, Mapping):
        if any(str(k).startswith("$") for k in want):
            return all(_operator(have, op, arg) for op, arg in want.items())
        return isinstance(have, Mapping) and all(_matches(have.get(k), w)
                                                 for k, w in want.items())
    if isinstance(want, (list, tuple)):
        return isinstance(have, (list, tuple)) and len(have) == len(want) \
            and all(_matches(h, w) for h, w in zip(have, want, strict=True))
    return bool(have == want)


def _operator(have: Any, op: str, arg: Any) -> bool:
    if op == "$eq":
        return bool(have == arg)
    if op == "$ne":
        return bool(have != arg)
    compare = _ORDERED.get(op)
    if compare is None:
        raise InvalidArgument(f"unsupported filter operator {op!r} "
                              "(supported: $eq $ne $gt $gte $lt $lte)")
    try:
        return bool(compare(float(have), float(arg)))
    except (TypeError, ValueError):
        return False


def matches_namespace(condition: Any, namespace: tuple[str, ...]) -> bool:
    """A ``MatchCondition`` (``match_type`` prefix or suffix, ``path`` with ``"*"``)."""
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise InvalidArgument(f"unsupported namespace match type {condition.match_type!r}")
    return all(p == "*" or n == p for n, p in pairs)

"""The public API is closed: every type a caller hands to a ``Store`` or gets back from one
is exported from ``memory``, so nobody has to import an internal module to name it."""

from __future__ import annotations

import collections.abc
import inspect
import typing
from typing import Any

import memory
import memory.store

EXPORTED = {id(getattr(memory, name)) for name in memory.__all__}


def _public_methods() -> list[tuple[str, Any]]:
    out = []
    for name, attr in inspect.getmembers(memory.Store):
        if name.startswith("_") and name != "__init__":
            continue
        fn = attr.fget if isinstance(attr, property) else attr
        if callable(fn) and getattr(fn, "__module__", "").startswith("memory"):
            out.append((name, fn))
    return out


def _leaves(hint: Any) -> list[Any]:
    """The classes a resolved annotation is made of (``list[Ranked] | None`` ->
    ``[list, Ranked, NoneType]``; a Callable alias -> its argument and result types)."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if not args:
        return [hint]
    out = [] if origin is None or origin in (typing.Union, collections.abc.Callable) \
        else [origin]
    for a in args:
        out += _leaves(a) if not isinstance(a, list) else [x for b in a for x in _leaves(b)]
    return out


def _hints(fn: Any) -> dict[str, Any]:
    """The annotations of ``fn`` resolved the way a caller would: against ``memory``'s
    exports, then the store module's own imports (a name only the store can see fails)."""
    ns = {**vars(memory.store), **{name: getattr(memory, name) for name in memory.__all__}}
    hints = typing.get_type_hints(fn, globalns=ns)
    params = inspect.signature(fn).parameters
    return {k: v for k, v in hints.items() if not k.startswith("_") and
            (k == "return" or k in params)}


def test_every_store_annotation_resolves_to_an_export() -> None:
    methods = _public_methods()
    assert {"append", "context", "forget", "project", "replay_context"} <= \
        {name for name, _ in methods}
    missing = []
    for name, fn in methods:
        for param, hint in _hints(fn).items():
            for leaf in _leaves(hint):
                if getattr(leaf, "__module__", "").startswith("memory") and \
                        id(leaf) not in EXPORTED:
                    missing.append(f"Store.{name}({param}): {leaf!r}")
    assert missing == []


def test_what_a_context_and_a_forget_hold_is_exported() -> None:
    # the dataclasses a caller reads fields of, one level down
    roots = [memory.Context, memory.ForgetResult, memory.Ranked]
    missing = []
    for cls in roots:
        for field, hint in typing.get_type_hints(
                cls, globalns={n: getattr(memory, n) for n in memory.__all__},
                localns=vars(inspect.getmodule(cls))).items():
            for leaf in _leaves(hint):
                if inspect.isclass(leaf) and leaf.__module__.startswith("memory") and \
                        id(leaf) not in EXPORTED:
                    missing.append(f"{cls.__name__}.{field}: {leaf!r}")
    assert missing == []


def test_the_ranker_seam_is_what_store_context_accepts() -> None:
    hint = _hints(memory.Store.context)["ranker"]
    assert memory.Ranker in typing.get_args(hint)
    assert typing.get_args(memory.Ranker) == ([memory.RankRequest], list[memory.Ranked])


def test_all_is_sorted_and_complete() -> None:
    def key(name: str) -> tuple[int, str]:  # isort's order: CONSTANTS, Classes, functions
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert memory.__all__ == sorted(memory.__all__, key=key)
    assert len(set(memory.__all__)) == len(memory.__all__)
    assert [name for name in memory.__all__ if not hasattr(memory, name)] == []

"""The contract of every event type: one JSON Schema per type and version, plus upcasters.

The files in ``schemas/`` (``<type>.v<N>.json``) are the contract for any writer, in any
language. Validation is compiled once per schema (fastjsonschema), because it runs on
every append. Old versions stay valid to *write* only if registered; on read, every event
is upcast step by step (v1 -> v2 -> ...) to the newest version of its type, so readers
only ever handle the current shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

import fastjsonschema

from ..errors import UnknownEventType, ValidationError

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_FILE = re.compile(r"^(?P<type>[a-z][a-z0-9_]*)\.v(?P<version>[0-9]+)\.json$")


def schemas_dir() -> Path:
    spec = importlib_util.find_spec("memory._schemas")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "schemas"


def _message_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    upgraded = {k: v for k, v in payload.items() if k != "text"}
    upgraded["content"] = payload["text"]
    return upgraded


BUILTIN_UPCASTERS: dict[tuple[str, int], Upcaster] = {("message", 1): _message_v1_to_v2}


class SchemaRegistry:
    """Event types known to a store: their schemas and how to upcast old versions."""

    def __init__(self) -> None:
        self._validators: dict[tuple[str, int], Callable[[Any], Any]] = {}
        self._schemas: dict[tuple[str, int], dict[str, Any]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._current: dict[str, int] = {}

    @classmethod
    def default(cls) -> SchemaRegistry:
        registry = cls()
        registry.load_dir(schemas_dir())
        for (type_, version), fn in BUILTIN_UPCASTERS.items():
            registry.register_upcaster(type_, version, fn)
        return registry

    def load_dir(self, folder: Path) -> None:
        for path in sorted(folder.glob("*.json")):
            m = _FILE.match(path.name)
            if m:
                schema = json.loads(path.read_text(encoding="utf-8"))
                self.register(m["type"], schema, version=int(m["version"]))

    def register(self, type_: str, schema: Mapping[str, Any], *, version: int = 1) -> None:
        """Add (or replace) the schema of ``type_`` at ``version``."""
        if not re.fullmatch(r"[a-z][a-z0-9_]*", type_):
            raise ValueError(f"event type names are lower_snake_case, got {type_!r}")
        if version < 1:
            raise ValueError("schema versions start at 1")
        self._schemas[(type_, version)] = dict(schema)
        self._validators[(type_, version)] = fastjsonschema.compile(dict(schema))
        self._current[type_] = max(version, self._current.get(type_, 0))

    def register_upcaster(self, type_: str, from_version: int, fn: Upcaster) -> None:
        """``fn`` turns a payload of ``from_version`` into one of ``from_version + 1``."""
        self._upcasters[(type_, from_version)] = fn

    def current_version(self, type_: str, index: int = 0) -> int:
        try:
            return self._current[type_]
        except KeyError:
            known = ", ".join(sorted(self._current))
            raise UnknownEventType(f"unknown event type {type_!r} (known: {known})",
                                   index=index, field="type") from None

    def types(self) -> dict[str, int]:
        return dict(self._current)

    def schema(self, type_: str, version: int) -> dict[str, Any]:
        return self._schemas[(type_, version)]

    def validate(self, type_: str, version: int, payload: Any, index: int = 0) -> None:
        validator = self._validators.get((type_, version))
        if validator is None:
            self.current_version(type_, index)  # raises for an unknown type
            raise UnknownEventType(f"event type {type_!r} has no schema version {version}",
                                   index=index, field="schema_version")
        try:
            validator(payload)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise ValidationError(f"payload does not match {type_}.v{version}: {exc.message}",
                                  index=index, field="payload") from None

    def upcast(self, type_: str, version: int, payload: dict[str, Any]
               ) -> tuple[int, dict[str, Any]]:
        """Bring a stored payload to the newest version its upcasters reach."""
        target = self._current.get(type_, version)
        while version < target:
            step = self._upcasters.get((type_, version))
            if step is None:
                break
            payload = step(payload)
            version += 1
        return version, payload

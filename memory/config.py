"""Where things live and the limits that apply, read once from the environment.

``MEMORY_HOME`` holds the embedded server's data folder (and, later, local keys);
``MEMORY_DATABASE_URL`` points the library at any other PostgreSQL with pgvector.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from .errors import InvalidArgument

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_TENANT = "default"
MAX_DEPTH_CEILING = 512
"""The most ``Limits.max_depth`` may be. A value nested this deep still reads back: orjson
parses up to 1,024 levels, the standard library (integers beyond 64 bits) nests one call
per level under the interpreter's default recursion limit of 1,000, and the sealed
plaintext and the append's JSON add a few levels around the payload."""


def memory_home() -> Path:
    """The folder the embedded server and local state live in."""
    env = os.environ.get("MEMORY_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("memory"))


def database_url_from_env() -> str | None:
    return os.environ.get("MEMORY_DATABASE_URL") or None


@dataclass(frozen=True)
class Limits:
    """Bounds on input and waiting; nothing the library does waits or grows forever.
    Each bound is an int checked when the Limits is made (InvalidArgument otherwise)."""

    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_id_length: int = 256
    max_batch: int = 10_000
    max_depth: int = 64
    """How deep a payload or metadata may nest (the object itself is level 1). 64 is far
    beyond what messages, tool arguments or metadata use (a handful of levels), and far
    below what the parsers that read the log back can take (``MAX_DEPTH_CEILING``), so a
    value that is written always reads back; it also bounds the recursion of code that
    walks payloads (rendering, schema checks)."""
    lock_timeout_ms: int = 10_000
    statement_timeout_ms: int = 120_000
    idle_in_transaction_timeout_ms: int = 300_000
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, low, high in _BOUNDS:
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise InvalidArgument(f"Limits.{name}",
                                      f"must be an integer from {low} to {high}, got "
                                      f"{value!r:.40}")


_INT32 = 2**31 - 1  # the server's timeouts are int4 milliseconds (0 turns a timeout off)
_BOUNDS = (("max_payload_bytes", 1, 2**30 - 1),  # jsonb holds less than 1 GiB
           ("max_id_length", 1, 10_000),
           ("max_batch", 1, 1_000_000),
           ("max_depth", 1, MAX_DEPTH_CEILING),
           ("lock_timeout_ms", 0, _INT32),
           ("statement_timeout_ms", 0, _INT32),
           ("idle_in_transaction_timeout_ms", 0, _INT32))

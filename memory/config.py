"""Where things live and the limits that apply, read once from the environment.

``MEMORY_HOME`` holds the embedded server's data folder (and, later, local keys);
``MEMORY_DATABASE_URL`` points the library at any other PostgreSQL with pgvector.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_TENANT = "default"


def memory_home() -> Path:
    """The folder the embedded server and local state live in."""
    env = os.environ.get("MEMORY_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("memory"))


def database_url_from_env() -> str | None:
    return os.environ.get("MEMORY_DATABASE_URL") or None


@dataclass(frozen=True)
class Limits:
    """Bounds on input and waiting; nothing the library does waits or grows forever."""

    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_id_length: int = 256
    max_batch: int = 10_000
    lock_timeout_ms: int = 10_000
    statement_timeout_ms: int = 120_000
    idle_in_transaction_timeout_ms: int = 300_000
    extra: dict[str, str] = field(default_factory=dict)

"""The master key: the one secret that never enters the database.

Where it comes from: ``MEMORY_MASTER_KEY`` (url-safe
base64; a comma-separated list during a rotation, the first one current), else the file
named by ``MEMORY_MASTER_KEY_FILE``, else ``<MEMORY_HOME>/master.key``, created (mode
0600) on first use. Lose it and every sealed payload is lost: back it up apart from the
database.

It wraps (AES-256-GCM) every data key in ``memory_keys`` (memory/log/sealing.py); rotating it
re-wraps those rows and nothing else (:func:`rotate_master_key`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..config import memory_home
from ..errors import ConfigurationError, DecryptionError

FORMAT = b"\x01"
"""The first byte of every ciphertext this library writes (wrapped keys, sealed payloads)."""
NONCE = 12
ENV_KEY = "MEMORY_MASTER_KEY"
ENV_KEY_FILE = "MEMORY_MASTER_KEY_FILE"
KEY_FILE_NAME = "master.key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode("ascii") + b"==")
    except (ValueError, UnicodeEncodeError):
        raise ConfigurationError("the master key is not url-safe base64") from None
    if len(raw) != 32:
        raise ConfigurationError(f"a master key is 32 bytes, this one is {len(raw)}")
    return raw


def generate_master_key() -> str:
    """A new master key, as url-safe base64 (what MEMORY_MASTER_KEY takes)."""
    return _b64(os.urandom(32))


def master_key_id(key: bytes) -> str:
    """A fingerprint naming a master key (stored beside each key it wrapped)."""
    return hashlib.sha256(b"memory master key id\x1f" + key).hexdigest()[:16]


def _create_key_file(path: Path) -> None:
    """Write a new master key to ``path`` unless it exists, so that no reader ever sees
    the file half-written: the key goes to a private temporary file first, which is then
    linked to ``path`` (atomic, and refused if another thread or process got there
    first: theirs is the key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".master-key-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(generate_master_key() + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # theirs is the key
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


class MasterKeys:
    """The current master key and, during a rotation, older ones still able to unwrap."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigurationError("no master key")
        self.keys = {master_key_id(k): AESGCM(k) for k in keys}
        self.current_id = master_key_id(keys[0])
        self._current = bytes(keys[0])

    def derive(self, label: bytes) -> bytes:
        """A 32-byte secret for ``label`` derived from the current master key (HMAC):
        e.g. the tenant roles' passwords (memory/pg/tenancy.py)."""
        return hmac.digest(self._current, b"memory derived secret\x1f" + label, "sha256")

    @classmethod
    def from_text(cls, text: str) -> MasterKeys:
        return cls([_unb64(part) for part in text.split(",") if part.strip()])

    @classmethod
    def from_environment(cls, home: Path | None = None, *, create: bool = True) -> MasterKeys:
        """``MEMORY_MASTER_KEY``, else ``MEMORY_MASTER_KEY_FILE``, else the key file in
        the data folder (created with a new key if missing and ``create``)."""
        text = os.environ.get(ENV_KEY)
        if text:
            return cls.from_text(text)
        path = Path(os.environ.get(ENV_KEY_FILE) or (home or memory_home()) / KEY_FILE_NAME)
        if not path.exists():
            if not create:
                raise ConfigurationError(f"no master key: set {ENV_KEY} or create {path}")
            _create_key_file(path)
        return cls.from_text(path.read_text())

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[bytes, str]:
        nonce = os.urandom(NONCE)
        return (FORMAT + nonce + self.keys[self.current_id].encrypt(nonce, data_key, aad),
                self.current_id)

    def unwrap(self, wrapped: bytes, master_id: str, aad: bytes) -> bytes:
        aead = self.keys.get(master_id)
        if aead is None:
            raise ConfigurationError(
                f"a data key is wrapped by master key {master_id}, which is not configured "
                f"(configured: {', '.join(self.keys)}); set {ENV_KEY} to the right key")
        wrapped = bytes(wrapped)
        try:
            return aead.decrypt(wrapped[1:1 + NONCE], wrapped[1 + NONCE:], aad)
        except InvalidTag:
            raise DecryptionError("a wrapped data key failed authentication") from None


def wrap_aad(tenant: str, key_id: str, actor_id: str) -> bytes:
    """What a wrapped data key is bound to: its tenant, key id and actor."""
    return "\x1f".join(("memory key v1", tenant, key_id, actor_id)).encode("utf-8")


def rotate_master_key(engine: sa.Engine, master: MasterKeys, *, batch: int = 1000) -> int:
    """Re-wrap every data key under ``master.current_id`` (the old master key must still be
    in ``master``). Only ``memory_keys`` changes; run it on a connection that sees every
    tenant (the maintenance role or the owner). Returns the number of keys re-wrapped."""
    done = 0
    while True:
        with engine.begin() as conn:
            rows = conn.exec_driver_sql(
                "SELECT tenant, key_id, actor_id, wrapped, master_id FROM memory_keys "
                "WHERE master_id <> %s LIMIT %s FOR UPDATE SKIP LOCKED",
                (master.current_id, batch)).fetchall()
            for tenant, key_id, actor_id, wrapped, master_id in rows:
                aad = wrap_aad(tenant, key_id, actor_id)
                new, new_id = master.wrap(master.unwrap(wrapped, master_id, aad), aad)
                conn.exec_driver_sql(
                    "UPDATE memory_keys SET wrapped = %s, master_id = %s, rotated_at = now() "
                    "WHERE tenant = %s AND key_id = %s", (new, new_id, tenant, key_id))
            done += len(rows)
        if len(rows) < batch:
            return done

"""Encryption at rest and crypto-shredding: how a payload can be erased from an
append-only log.

Key hierarchy
-------------
* **master key** (never in the database): memory/log/master_key.py.
* **actor key** (one per tenant and actor, ``memory_keys``): random, stored wrapped by the
  master key (AES-256-GCM, bound to tenant, key id and actor).
* **epoch** (alembic/sql/06_secrets.sql): 32 random bytes in one row of
  ``memory_event_secrets`` named ``e:`` + hex, under the actor key. A process seals an
  actor's next :data:`memory.log.keyring.EPOCH_EVENTS` or so events under one epoch (a
  batch is never split), then makes a new one, so a sealed append writes no secrets row:
  it only checks that its epoch still exists and holds it until commit.
* **event key**: ``BLAKE2s(key=actor key, epoch secret || event id)`` (a keyed PRF,
  personalised ``mem-ep1``): each event its own key, derivable only while both the actor
  key and the epoch exist.

Forgetting. Deleting the actor key (with its epochs and every other secrets row under it)
forgets every event of the actor. Forgetting one event destroys its epoch and keeps the
keys of the epoch's other events instead, one ``memory_event_keys`` row each, masked:
``event key XOR BLAKE2s(key=actor key, event id)`` (``mem-mk1``), so they stay readable
and nothing left derives the forgotten one's key; a kept key is forgotten later by
nulling its row. ``memory_events`` is never updated. Two other formats are still
opened and forgotten: a batch row per append (``key_id`` ``s:`` + hex,
``BLAKE2s(key=actor key, event secret || event id)`` with ``mem-ev1``, forgotten by
zeroing the event's 32 bytes in the row) and one ``memory_event_keys`` row per event
(``key_id`` = the actor key id, the same formula, forgotten by nulling the row).

What is sealed
--------------
The payload **and the metadata** of every event (metadata is free-form and is where
callers put names, e-mails and other personal data), as one AES-256-GCM ciphertext in
``payload_enc``: ``0x01 || nonce(12) || ciphertext+tag``, with the tenant, event id and
key id (the epoch) as associated data so a ciphertext cannot be moved to another row. The
``payload`` column is NULL and ``metadata`` is ``{}``. Ids, type, schema version, positions
and times stay in clear so the log keeps its shape (ordering, sessions, idempotency, projections).

The idempotency ``content_hash`` is keyed: ``BLAKE2s(key=hash key, sha256(content))`` with a
hash key derived from the actor key, so a short text cannot be confirmed by hashing guesses,
and after a forget nobody can. (A retry of an event id *after* its actor was forgotten is
therefore refused as an id re-used for other content.)

A sealed event whose key is gone reads back as ``forgotten=True`` with an empty payload
and metadata: readers and projections skip it, so replays never resurrect it.

The keys and epochs themselves are created and cached by
:class:`memory.log.keyring.Keyring`; this module holds the formulas and the sealing and
opening of payloads.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import DecryptionError
from ..pg import parse_json
from .events import PreparedEvent
from .keyring import EPOCH_PREFIX, Epoch, Keyring
from .master_key import FORMAT, NONCE, MasterKeys
from .rand import random_bytes


# The formulas of sealing. Crypto.seal and Crypto.open_rows inline them (they run once per
# event appended or read); tests/forget/test_forget_epochs.py and test_forget_batches.py
# check that they agree.
def seal_aad(tenant: str, event_id: uuid.UUID, key_id: str) -> bytes:
    """The associated data that binds a ciphertext to its tenant, event id and key id."""
    return b"memory event v1\x1f" + tenant.encode() + b"\x1f" + event_id.bytes + key_id.encode()


# Keyed BLAKE2s is a PRF (RFC 7693) and several times cheaper than HMAC-SHA256 for these
# short inputs; it runs once per event on every append and read.
def event_key(actor_key: bytes, secret: bytes, event_id: uuid.UUID) -> bytes:
    """An event's key under a batch row or its own secret (the formats before epochs)."""
    return hashlib.blake2s(bytes(secret) + event_id.bytes, key=actor_key,
                           person=b"mem-ev1").digest()


def epoch_key(actor_key: bytes, secret: bytes, event_id: uuid.UUID) -> bytes:
    """An event's key under its epoch's secret."""
    return hashlib.blake2s(bytes(secret) + event_id.bytes, key=actor_key,
                           person=b"mem-ep1").digest()


def keyed_hash(hash_key: bytes, plain: bytes) -> bytes:
    """The keyed idempotency hash of an event's content hash."""
    return hashlib.blake2s(plain, key=hash_key, person=b"mem-ch1").digest()


def xor(a: bytes, b: bytes) -> bytes:
    """``a XOR b`` (equal lengths): how a kept event key is masked and unmasked."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


BATCH_PREFIX = "s:"
"""How a sealed event's ``key_id`` names its batch's secrets row (an actor key id, which
events with a secret of their own carry, is plain hex)."""

# Fetched fresh on every read (never cached): a forget elsewhere takes effect at once. The
# log's reads join the secrets in (memory/log/sql.py); these look-ups serve rows read
# without them (other callers' statements, and a projection's transaction, which locks
# the secrets it opens: FOR SHARE, so a forget waits for it, see memory/forget.py).
LOOKUP_BATCHES = """
SELECT s.tenant, s.batch, s.key_id, s.first_version, s.secrets
  FROM memory_event_secrets s
 WHERE (s.tenant, s.batch) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
"""
# Events sealed with a secret of their own: one memory_event_keys row per event. The
# event ids travel as one bytea (16 bytes each): dumping a list of UUIDs costs more in
# Python than the whole lookup does in the server. ``n`` says which row each answer is for.
LOOKUP = """
SELECT q.n, ek.key_id, ek.secret
  FROM unnest(%s::text[]) WITH ORDINALITY AS q(tenant, n)
  JOIN memory_event_keys ek ON ek.tenant = q.tenant AND ek.event_id =
       encode(substring(%s::bytea FROM (q.n::int - 1) * 16 + 1 FOR 16), 'hex')::uuid
"""
_ZERO = bytes(32)


@dataclass(frozen=True)
class Opened:
    """What a sealed row holds once opened; ``forgotten`` when its key is gone."""

    payload: dict[str, Any]
    metadata: dict[str, Any]
    forgotten: bool = False


FORGOTTEN = Opened({}, {}, forgotten=True)


@dataclass(frozen=True)
class Sealed:
    """A batch sealed for one append (see log_sql.APPEND's parameters)."""

    key_id: str | None  # an actor key the append checks (None: the epoch is checked)
    batch: str  # the events' key_id: their epoch (or, in the older format, their batch row)
    blobs: list[bytes]  # the ciphertext (payload and metadata) of each event
    hashes: list[bytes]  # the keyed content hash of each event
    secrets: bytes | None  # a batch row's secrets (None for an epoch: nothing written)


class Crypto(Keyring):
    """Seals and opens payloads for one store, with the keys and epochs of its
    :class:`~memory.log.keyring.Keyring`."""

    @classmethod
    def from_environment(cls, home: Path | None = None) -> Crypto:
        return cls(MasterKeys.from_environment(home))

    # -- sealing -----------------------------------------------------------------------

    def seal(self, tenant: str, epoch: Epoch, events: Sequence[PreparedEvent]) -> Sealed:
        """Seal a batch under ``epoch``: per event its own key, ``BLAKE2s(key=actor key,
        epoch secret || event id)``, and a fresh nonce from the OS's random source
        (memory/log/rand.py). Nothing is written: the append checks the epoch. The per-event
        work is inlined (the formulas are :func:`epoch_key`, :func:`seal_aad` and
        :func:`keyed_hash`; tests/forget/test_forget_epochs.py checks the two agree): it runs
        for every event appended."""
        nonces = random_bytes(NONCE * len(events))
        aad_head = b"memory event v1\x1f" + tenant.encode() + b"\x1f"
        aad_tail = epoch.name.encode()
        prf, hash_prf = epoch.prf, epoch.key.hash_prf
        blobs, hashes = [], []
        for i, e in enumerate(events):
            event_id = e.event_id.bytes
            nonce = nonces[NONCE * i:NONCE * (i + 1)]
            h = prf.copy()
            h.update(event_id)
            plain = ('{"m":' + e.metadata_json + ',"p":' + e.payload_json + "}").encode()
            blobs.append(FORMAT + nonce + AESGCM(h.digest()).encrypt(
                nonce, plain, aad_head + event_id + aad_tail))
            h = hash_prf.copy()
            h.update(e.content_hash)
            hashes.append(h.digest())
        return Sealed(None, epoch.name, blobs, hashes, None)

    def epoch_keys(self, conn: sa.Connection, tenant: str, key_id: str, secret: bytes,
                   event_ids: Sequence[uuid.UUID]) -> list[tuple[uuid.UUID, bytes]] | None:
        """The keys of ``event_ids`` (sealed under the epoch of ``secret``) masked under
        their actor key, as ``memory_event_keys`` keeps them once the epoch is destroyed
        (memory/forget.py): ``event key XOR BLAKE2s(key=actor key, event id)``. None
        when the actor key is gone."""
        actor = self.key_by_id(conn, tenant, key_id)
        if actor is None:
            return None
        out = []
        for event_id in event_ids:
            raw = event_id.bytes
            key, mask = actor.epoch_prf.copy(), actor.mask_prf.copy()
            key.update(secret + raw)
            mask.update(raw)
            out.append((event_id, xor(key.digest(), mask.digest())))
        return out

    # -- opening -----------------------------------------------------------------------

    def open_rows(self, conn: sa.Connection, rows: Sequence[Sequence[Any]], *,
                  lock: bool = False) -> list[Opened | None]:
        """Open the sealed rows among ``rows`` (``log_sql`` column order: position,
        event_id, tenant, ..., payload_enc at 9, key_id at 10; optionally the joined
        actor key id and secret at 14 and 15); the answer is aligned with ``rows``, None
        for a row stored in clear.

        Secrets not joined in are looked up (one statement per kind of row they live
        in). ``lock`` holds them (``FOR SHARE``) until the caller's transaction ends: a
        projection that derives rows from what it opened commits before a forget can
        destroy those secrets, and the forget then deletes what it wrote. A locked read
        never trusts a joined secret (read before the lock). (Not on a read-only replica,
        which cannot lock rows.)"""
        out: list[Opened | None] = [None] * len(rows)
        # Per sealed row: (how its key derives, actor key id, secret), None when gone.
        found: dict[int, tuple[int, str, bytes] | None] = {}
        named: dict[tuple[str, str], list[int]] = {}  # rows of a batch or an epoch row
        by_event: list[int] = []  # rows whose secret is their own memory_event_keys row
        for i, r in enumerate(rows):
            if r[9] is None:
                continue
            epoch = r[10].startswith(EPOCH_PREFIX)
            if not epoch and not r[10].startswith(BATCH_PREFIX):
                by_event.append(i)
            elif len(r) <= 14 or lock:
                named.setdefault((r[2], r[10]), []).append(i)
            elif r[14] is not None:
                found[i] = (_EPOCH if epoch else _SLOT, r[14], bytes(r[15]))
            elif epoch:
                by_event.append(i)  # a destroyed epoch: its events' keys were kept
            else:
                found[i] = None  # the actor (and its batches) was forgotten
        if named:
            tenants, names = zip(*named, strict=True)
            for tenant, name, key_id, first, secrets in conn.exec_driver_sql(
                    LOOKUP_BATCHES + (" FOR SHARE OF s" if lock else ""),
                    (list(tenants), list(names))):
                for i in named.pop((tenant, name)):
                    if name.startswith(EPOCH_PREFIX):
                        found[i] = (_EPOCH, key_id, bytes(secrets))
                    else:
                        at = (rows[i][5] - first) * 32
                        found[i] = (_SLOT, key_id, bytes(secrets[at:at + 32]))
            for (_, name), missing in named.items():
                if name.startswith(EPOCH_PREFIX):
                    by_event.extend(missing)
                else:
                    found.update(dict.fromkeys(missing))
        if by_event:
            for n, key_id, secret in conn.exec_driver_sql(
                    LOOKUP + (" FOR SHARE OF ek" if lock else ""),
                    ([rows[i][2] for i in by_event],
                     b"".join(rows[i][1].bytes for i in by_event))).fetchall():
                i = by_event[n - 1]
                how = _MASKED if rows[i][10].startswith(EPOCH_PREFIX) else _SLOT
                found[i] = (how, key_id, bytes(secret)) if secret is not None else None
        self.load_keys(conn, {(rows[i][2], f[1]) for i, f in found.items()
                              if f is not None and f[2] != _ZERO})
        for i, f in found.items():
            out[i] = self._open_one(rows[i], f)
        for i in by_event:
            if i not in found:
                out[i] = FORGOTTEN
        return out

    def _open_one(self, r: Sequence[Any], found: tuple[int, str, bytes] | None) -> Opened:
        """One sealed row; FORGOTTEN when its secret or its actor key is gone."""
        if found is None or found[2] == _ZERO or len(found[2]) != 32:
            return FORGOTTEN
        how, actor_key_id, secret = found
        tenant, event_id, key_id = r[2], r[1], r[10]
        actor = self.cached(actor_key_id)
        if actor is None or (how == _SLOT and actor_key_id != key_id
                             and not key_id.startswith(BATCH_PREFIX)):
            return FORGOTTEN
        blob = bytes(r[9])
        raw_id = event_id.bytes  # once: UUID.bytes is slow, and both need it
        if how == _MASKED:
            h = actor.mask_prf.copy()
            h.update(raw_id)
            key = xor(secret, h.digest())
        else:
            h = (actor.epoch_prf if how == _EPOCH else actor.event_prf).copy()
            h.update(secret + raw_id)
            key = h.digest()
        try:
            plain = AESGCM(key).decrypt(
                blob[1:1 + NONCE], blob[1 + NONCE:],
                b"memory event v1\x1f" + tenant.encode() + b"\x1f" + raw_id
                + key_id.encode())
        except InvalidTag:
            raise DecryptionError(
                f"event {event_id} of tenant {tenant!r} failed authentication") from None
        body = parse_json(plain)  # as the clear path reads jsonb (big integers kept)
        return Opened(body["p"], body["m"])


# How an event key derives from what open_rows found (see the module docstring).
_SLOT, _EPOCH, _MASKED = 1, 2, 3

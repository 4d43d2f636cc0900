"""The per-actor keys and epochs one process caches (memory/log/sealing.py says what they
protect and how forgetting destroys them).

An actor key is created on first use, stored wrapped by the master key, and kept
unwrapped in memory; each actor's current epoch is kept beside it until it has sealed
about :data:`EPOCH_EVENTS` events. A key or epoch destroyed elsewhere is noticed at the
next append, which fails before writing anything, and :meth:`Keyring.forget_cached` drops
both before the retry.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..errors import Error
from ..pg import tenant_scope
from .master_key import MasterKeys, wrap_aad
from .rand import random_bytes


@dataclass(frozen=True)
class ActorKey:
    key_id: str
    key: bytes
    hash_key: bytes
    # The keyed PRFs of the sealing formulas (memory/log/sealing.py), set up once: copying
    # a keyed BLAKE2s state costs half of making one (0.7 against 1.3 us here), and they
    # run for every event sealed or opened. Never updated, only copied, so threads can share them.
    event_prf: Any = field(init=False, repr=False, compare=False)
    epoch_prf: Any = field(init=False, repr=False, compare=False)
    mask_prf: Any = field(init=False, repr=False, compare=False)
    hash_prf: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, key, person in (("event_prf", self.key, b"mem-ev1"),
                                  ("epoch_prf", self.key, b"mem-ep1"),
                                  ("mask_prf", self.key, b"mem-mk1"),
                                  ("hash_prf", self.hash_key, b"mem-ch1")):
            object.__setattr__(self, name, hashlib.blake2s(key=key, person=person))


@dataclass
class Epoch:
    """An epoch this process seals under (memory/log/sealing.py): its row's name, its
    actor key, the keyed PRF with the epoch's secret absorbed, and how many more events
    it takes before the next append makes a new one."""

    name: str
    key: ActorKey
    prf: Any
    left: int


GET_KEY = """
SELECT key_id, wrapped, master_id FROM memory_keys WHERE tenant = %s AND actor_id = %s
"""
# A new key; one already there for the actor wins. (A SECURITY DEFINER function, as every
# write of a tenant's role but forgetting's deletions: alembic/sql/07_privileges.sql.)
CREATE_KEY = "SELECT memory_create_key(%s, %s, %s, %s, %s)"
EPOCH_PREFIX = "e:"
"""How a sealed event's ``key_id`` names its epoch (also a memory_event_secrets row)."""
EPOCH_EVENTS = 1024
"""About how many events one epoch seals in one process (a batch is never split): the
number of keys that forgetting one of its events writes out."""

# A new epoch: one secrets row under the actor key, which must still exist (held until
# commit, so a forget of the actor waits for this, then deletes the row with the rest);
# false when the key is gone. Parameters: tenant, epoch, secret, actor key id.
CREATE_EPOCH = "SELECT memory_create_epoch(%s, %s, %s, %s)"
# The wrapped actor keys, fetched only when not yet cached.
KEYS = """
SELECT tenant, key_id, actor_id, wrapped, master_id FROM memory_keys
 WHERE (tenant, key_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
"""


class Keyring:
    """Actor keys cached unwrapped in memory, and each actor's current epoch with them.
    Bounded: past 100,000 keys the cache starts again (the next use reads them anew)."""

    def __init__(self, master: MasterKeys) -> None:
        self.master = master
        self._by_actor: dict[tuple[str, str], ActorKey] = {}
        self._by_id: dict[str, ActorKey] = {}
        self._epochs: dict[tuple[str, str], Epoch] = {}
        self._lock = threading.Lock()

    # -- actor keys --------------------------------------------------------------------

    def _remember(self, tenant: str, actor_id: str, key: ActorKey) -> ActorKey:
        with self._lock:
            if len(self._by_id) > 100_000:  # bounded: the next use reads them again
                self._by_actor.clear()
                self._by_id.clear()
                self._epochs.clear()
            self._by_actor[(tenant, actor_id)] = key
            self._by_id[key.key_id] = key
        return key

    def forget_cached(self, tenant: str, actor_id: str) -> None:
        """Drop the actor's cached key and epoch (destroyed elsewhere: an append found
        out)."""
        with self._lock:
            self._epochs.pop((tenant, actor_id), None)
            key = self._by_actor.pop((tenant, actor_id), None)
            if key is not None:
                self._by_id.pop(key.key_id, None)

    def cached(self, key_id: str) -> ActorKey | None:
        """The actor key ``key_id`` if this process has unwrapped it."""
        return self._by_id.get(key_id)

    def unwrap(self, tenant: str, actor_id: str, key_id: str, wrapped: bytes,
               master_id: str) -> ActorKey:
        """The actor key of a ``memory_keys`` row (cached after the first unwrap)."""
        cached = self._by_id.get(key_id)
        if cached is not None:
            return cached
        key = self.master.unwrap(wrapped, master_id, wrap_aad(tenant, key_id, actor_id))
        hash_key = hmac.digest(key, b"memory content hash v1", "sha256")
        return self._remember(tenant, actor_id, ActorKey(key_id, key, hash_key))

    def actor_key(self, engine: sa.Engine, tenant: str, actor_id: str) -> ActorKey:
        """The actor's live key, created on first use (in its own short transaction)."""
        cached = self._by_actor.get((tenant, actor_id))
        if cached is not None:
            return cached
        with tenant_scope(tenant):
            for _ in range(5):
                with engine.begin() as conn:
                    row = conn.exec_driver_sql(GET_KEY, (tenant, actor_id)).first()
                    if row is None:
                        key_id = uuid.uuid4().hex
                        wrapped, master_id = self.master.wrap(
                            os.urandom(32), wrap_aad(tenant, key_id, actor_id))
                        conn.exec_driver_sql(CREATE_KEY, (tenant, key_id, actor_id, wrapped,
                                                          master_id))
                        row = conn.exec_driver_sql(GET_KEY, (tenant, actor_id)).first()
                if row is not None:
                    return self.unwrap(tenant, actor_id, row[0], row[1], row[2])
        raise Error(f"could not create a data key for actor {actor_id!r}")

    def key_by_id(self, conn: sa.Connection, tenant: str, key_id: str) -> ActorKey | None:
        """The actor key ``key_id`` of ``tenant``, read when not cached; None when gone."""
        if key_id not in self._by_id:
            for t, kid, actor_id, wrapped, master_id in conn.exec_driver_sql(
                    KEYS, ([tenant], [key_id])):
                self.unwrap(t, actor_id, kid, wrapped, master_id)
        return self._by_id.get(key_id)

    def load_keys(self, conn: sa.Connection, wanted: Iterable[tuple[str, str]]) -> None:
        """Unwrap the (tenant, actor key id) pairs of ``wanted`` that are not cached yet
        (one statement)."""
        missing = {(t, kid) for t, kid in wanted if kid not in self._by_id}
        if missing:
            tenants, key_ids = zip(*missing, strict=True)
            for t, kid, actor_id, wrapped, master_id in conn.exec_driver_sql(
                    KEYS, (list(tenants), list(key_ids))):
                self.unwrap(t, actor_id, kid, wrapped, master_id)

    # -- epochs ------------------------------------------------------------------------

    def epoch(self, engine: sa.Engine, tenant: str, actor_id: str, events: int) -> Epoch:
        """The epoch to seal the actor's next ``events`` events under: the cached one while
        it has room, else a new one (its row written in its own short transaction)."""
        with self._lock:
            found = self._epochs.get((tenant, actor_id))
            if found is not None and found.left > 0:
                found.left -= events
                return found
        for _ in range(5):
            key = self.actor_key(engine, tenant, actor_id)
            rand = random_bytes(48)
            name, secret = EPOCH_PREFIX + rand[:16].hex(), rand[16:]
            with tenant_scope(tenant), engine.begin() as conn:
                made = conn.exec_driver_sql(CREATE_EPOCH,
                                            (tenant, name, secret, key.key_id)).scalar_one()
            if made:
                prf = key.epoch_prf.copy()
                prf.update(secret)
                epoch = Epoch(name, key, prf, EPOCH_EVENTS - events)
                with self._lock:
                    self._epochs[(tenant, actor_id)] = epoch
                return epoch
            self.forget_cached(tenant, actor_id)  # its key was destroyed meanwhile
        raise Error(f"could not make an epoch for actor {actor_id!r}")

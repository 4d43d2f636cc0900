"""``AsyncStore``: what :class:`memory.Store` offers, as coroutines, for asyncio programs.

It is made from a sync ``Store`` (``await memory.aio.open(...)`` opens one off the event
loop, migrations included) and keeps it: the same tenant, the same role (with tenant
roles, the tenant's own login from memory/pg/tenancy.py's ``TenantEngines``), keys and
scope cache. What runs where:

* on psycopg's async connections (memory/aio/log.py): ``read``, ``head``, ``subscribe``
  (LISTEN, reads by position);
* off the event loop, in threads, the sync face's own code:

  - on the store's own pool of ``workers`` threads (one per core by default), the calls
    that hold the CPU for each request: ``context`` and ``replay_context`` (embedding the
    query, numpy ranking, packing). More threads than cores add no throughput to that
    work, and every thread running Python is one more contender for the GIL that the
    loop's own thread must win back (CPython asks for it after
    ``sys.getswitchinterval()``, 5 ms, and it goes to whichever waiter wakes first), so
    the loop's lag grows with the threads: benchmarks/concurrency.py measures it;
  - through ``asyncio.to_thread`` (the loop's default executor), the calls that mostly
    wait for the database or run long: ``append`` (validation, sealing and the group
    commit of memory/log/group.py, which gains from many waiting appenders), the session
    views (``read_session``, ``view``, ``fork``, ``retract``: memory/log/views.py reads a
    fork chain and checks it in one place), ``project`` (a batch job that would otherwise
    take a request thread for minutes) and ``forget``.

Errors are the sync face's typed errors (memory/errors.py), raised unchanged.
Cancelling a call stops waiting for it; work already handed to a thread finishes there
(an append that was sent is written), and a cancelled read's connection is closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..config import DEFAULT_TENANT, Limits
from ..errors import ConfigurationError, InvalidArgument
from ..forget import ForgetResult
from ..log import ANY, Appended, NewEvent, RecordedEvent, views
from ..store import Store
from .log import AsyncLog, AsyncSubscription

if TYPE_CHECKING:
    from ..projections import RunSummary
    from ..retrieval.result import Context, Memory

R = TypeVar("R")


def open(url: str | None = None, *, tenant: str = DEFAULT_TENANT,
         limits: Limits | None = None, migrate: bool = True, encrypt: bool = True,
         tenant_roles: bool | None = None, workers: int | None = None) -> Opening:
    """Open an :class:`AsyncStore`: :meth:`memory.Store.open`'s arguments and meaning,
    run off the event loop (it connects, migrates and may start the embedded server).
    ``workers``: the threads that build contexts (default: one per core the process
    may use). ``store = await memory.aio.open(...)``, or ``async with
    memory.aio.open(...) as store:`` (closed when the block ends, also when it is
    cancelled)."""
    return Opening(lambda: Store.open(url, tenant=tenant, limits=limits, migrate=migrate,
                                      encrypt=encrypt, tenant_roles=tenant_roles),
                   workers=workers)


def default_workers() -> int:
    """One context thread per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Opening:
    """What :func:`open` returns: await it for the store, or use it with ``async with``."""

    def __init__(self, make: Callable[[], Store], *, workers: int | None = None) -> None:
        self._make = make
        self._workers = workers
        self._store: AsyncStore | None = None

    async def _open(self) -> AsyncStore:
        return AsyncStore(await asyncio.to_thread(self._make), workers=self._workers)

    def __await__(self) -> Generator[Any, None, AsyncStore]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncStore:
        self._store = await self._open()
        return self._store

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None:
            await self._store.__aexit__(*exc)


class AsyncStore:
    """A memory store on one PostgreSQL database, scoped to one tenant, for asyncio."""

    def __init__(self, store: Store, *, pool_size: int = 4, workers: int | None = None,
                 owns_store: bool = True,
                 _workers_pool: concurrent.futures.ThreadPoolExecutor | None = None
                 ) -> None:
        """``pool_size``: async connections for reads; ``workers``: threads that build
        contexts (default :func:`default_workers`); ``owns_store``: close ``store``
        with this face."""
        self.store = store
        """The sync face this one is made from (same tenant, connections, keys)."""
        self.tenant = store.tenant
        self.log = AsyncLog(store.log, pool_size=pool_size)
        self.owns_store = owns_store
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise InvalidArgument("workers", f"must be a positive int, got {workers!r}")
        self._owns_workers = _workers_pool is None
        self._workers = _workers_pool or concurrent.futures.ThreadPoolExecutor(
            workers or default_workers(), thread_name_prefix="memory-context")
        self._tenants: list[AsyncStore] = []
        self._busy = 0  # calls of the sync face running in a thread
        self._idle = threading.Condition()
        self._closed = False

    async def off_loop(self, fn: Callable[..., R], /, *args: Any, **kw: Any) -> R:
        """``fn(*args, **kw)`` in a thread (``asyncio.to_thread``: the caller's context
        variables go with it). A cancelled call stops being awaited; its thread finishes
        its work, and :meth:`close` waits for that before closing the sync store."""
        return await asyncio.to_thread(self._tracked, fn, args, kw)

    async def on_workers(self, fn: Callable[..., R], /, *args: Any, **kw: Any) -> R:
        """``fn(*args, **kw)`` on this store's context threads (one per core by
        default), with the caller's context variables; cancelling behaves as in
        :meth:`off_loop`. For work that holds the CPU on every request."""
        if self._closed:  # its threads are stopped: say so as every other call does
            raise ConfigurationError("this AsyncStore is closed")
        call = functools.partial(contextvars.copy_context().run, self._tracked, fn, args, kw)
        return await asyncio.get_running_loop().run_in_executor(self._workers, call)

    def _tracked(self, fn: Callable[..., R], args: tuple[Any, ...], kw: dict[str, Any]) -> R:
        with self._idle:
            if self._closed:
                raise ConfigurationError("this AsyncStore is closed")
            self._busy += 1
        try:
            return fn(*args, **kw)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _wait_idle(self) -> None:
        with self._idle:
            self._closed = True
            self._idle.wait_for(lambda: self._busy == 0)

    def for_tenant(self, tenant: str) -> AsyncStore:
        """Another tenant's async face: ``Store.for_tenant``'s store (with tenant roles,
        that tenant's own login role), closed with this one."""
        face = AsyncStore(self.store.for_tenant(tenant), owns_store=False,
                          _workers_pool=self._workers)
        self._tenants.append(face)
        return face

    async def close(self) -> None:
        """Close the async connections, wait for this face's calls still running in
        threads (cancelled ones included), then close the sync store (off the loop)."""
        faces, self._tenants = self._tenants, []
        for face in faces:
            await face.close()
        await self.log.close()
        await asyncio.to_thread(self._wait_idle)
        if self._owns_workers:
            self._workers.shutdown(wait=False)  # idle: nothing is left to wait for
        if self.owns_store:
            await asyncio.to_thread(self.store.close)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.close())

    # -- the log -------------------------------------------------------------------

    async def append(self, session_id: str, events: NewEvent | Sequence[NewEvent], *,
                     actor: str, expected_version: int | None = ANY) -> list[Appended]:
        """``Store.append`` off the event loop (same checks, sealing and group commit)."""
        return await self.off_loop(self.store.append, session_id, events, actor=actor,
                                       expected_version=expected_version)

    def read(self, from_position: int = 0, *, actor: str | None = None
             ) -> AsyncIterator[RecordedEvent]:
        """This tenant's events after ``from_position``, in log order: an async iterator
        reading pages on async connections."""
        return self.log.read(from_position, tenant=self.tenant, actor_id=actor)

    async def read_session(self, session_id: str, from_version: int = 1, *,
                           as_of: int | None = None) -> list[RecordedEvent]:
        """``Store.read_session`` (the session's view) off the event loop."""
        return await self.off_loop(self.store.read_session, session_id, from_version,
                                       as_of=as_of)

    async def view(self, session_id: str, *, as_of: int | None = None) -> views.SessionView:
        """``Store.view`` off the event loop."""
        return await self.off_loop(self.store.view, session_id, as_of=as_of)

    async def fork(self, session_id: str, *, at_version: int, new_session: str, actor: str,
                   event_id: uuid.UUID | str | None = None) -> Appended:
        """``Store.fork`` off the event loop."""
        return await self.off_loop(self.store.fork, session_id, at_version=at_version,
                                       new_session=new_session, actor=actor,
                                       event_id=event_id)

    async def retract(self, session_id: str, *, actor: str,
                      event_ids: Iterable[uuid.UUID | str] | None = None,
                      last: int | None = None, all: bool = False, reason: str = "",
                      event_id: uuid.UUID | str | None = None) -> Appended:
        """``Store.retract`` off the event loop."""
        return await self.off_loop(self.store.retract, session_id, actor=actor,
                                       event_ids=event_ids, last=last, all=all,
                                       reason=reason, event_id=event_id)

    def subscribe(self, from_position: int = 0, *, poll_interval: float = 1.0
                  ) -> AsyncSubscription:
        """Follow this tenant's events: ``async for event in store.subscribe(...)``."""
        return self.log.subscribe(from_position, tenant=self.tenant,
                                  poll_interval=poll_interval)

    async def head(self) -> int:
        """The tenant's highest position, read on an async connection."""
        return await self.log.head(self.tenant)

    # -- the pipelines, off the event loop -------------------------------------------

    async def forget(self, **options: Any) -> ForgetResult:
        """``Store.forget`` (same keywords) off the event loop."""
        return await self.off_loop(lambda: self.store.forget(**options))

    async def project(self, names: Sequence[str] | None = None, **options: Any
                      ) -> list[RunSummary]:
        """``Store.project`` off the event loop (chunking, embedding, summaries)."""
        return await self.off_loop(lambda: self.store.project(names, **options))

    async def context(self, query: str, *, actor: str, session: str, budget: int,
                      **options: Any) -> Context:
        """``Store.context`` (same keywords) on the context threads: embedding the
        query, the ranking and the packing hold the CPU, so none of it runs on the loop."""
        return await self.on_workers(
            lambda: self.store.context(query, actor=actor, session=session, budget=budget,
                                       **options))

    async def replay_context(self, event: RecordedEvent, **options: Any) -> Context:
        """``Store.replay_context`` on the context threads."""
        return await self.on_workers(lambda: self.store.replay_context(event, **options))

    async def search(self, query: str, *, actor: str, **options: Any) -> list[Memory]:
        """``Store.search`` (same keywords) on the context threads: embedding the query
        and the ranking hold the CPU, as for :meth:`context`."""
        return await self.on_workers(
            lambda: self.store.search(query, actor=actor, **options))

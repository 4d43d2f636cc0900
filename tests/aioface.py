"""The async face run from sync tests: a private event loop in a thread, and an adapter
that gives ``memory.aio.AsyncLog`` the sync ``EventLog`` shape by running its coroutines
there to completion (so the conformance suite runs through both faces)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from typing import TypeVar

import memory
from memory.aio import AsyncLog, AsyncSubscription
from memory.log import ANY

R = TypeVar("R")


class LoopThread:
    """An event loop running in a daemon thread; ``run`` waits for a coroutine's result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[R]) -> R:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class SyncSubscription:
    def __init__(self, runner: LoopThread, sub: AsyncSubscription) -> None:
        self.runner = runner
        self.sub = sub

    @property
    def position(self) -> int:
        return self.sub.position

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.sub.stop()

    def __iter__(self) -> Iterator[memory.RecordedEvent]:
        it = aiter(self.sub)
        try:
            while True:
                try:
                    yield self.runner.run(anext(it))
                except StopAsyncIteration:
                    return
        finally:
            self.runner.run(it.aclose())  # type: ignore[attr-defined]


class SyncAsyncLog:
    """``AsyncLog`` with the ``EventLog`` protocol's sync signatures."""

    def __init__(self, store: memory.Store) -> None:
        self.runner = LoopThread()
        self.face = AsyncLog(store.log)
        self.registry = self.face.registry

    def append(self, tenant: str, actor_id: str, session_id: str,
               events: memory.NewEvent | Sequence[memory.NewEvent], *,
               expected_version: int | None = ANY) -> list[memory.Appended]:
        return self.runner.run(self.face.append(tenant, actor_id, session_id, events,
                                                expected_version=expected_version))

    def read(self, from_position: int = 0, *, tenant: str | None = None,
             actor_id: str | None = None, batch_size: int = 1000
             ) -> Iterator[memory.RecordedEvent]:
        it = self.face.read(from_position, tenant=tenant, actor_id=actor_id,
                            batch_size=batch_size)

        async def drain() -> list[memory.RecordedEvent]:
            return [e async for e in it]
        return iter(self.runner.run(drain()))

    def read_session(self, tenant: str, session_id: str, from_version: int = 1,
                     limit: int | None = None) -> list[memory.RecordedEvent]:
        return self.runner.run(self.face.read_session(tenant, session_id, from_version,
                                                      limit))

    def subscribe(self, from_position: int = 0, *, tenant: str | None = None,
                  poll_interval: float = 1.0, batch_size: int = 500) -> SyncSubscription:
        return SyncSubscription(self.runner, self.face.subscribe(
            from_position, tenant=tenant, poll_interval=poll_interval,
            batch_size=batch_size))

    def read_ids(self, tenant: str, event_ids: Iterable[uuid.UUID | str]
                 ) -> list[memory.RecordedEvent]:
        return self.runner.run(self.face.read_ids(tenant, event_ids))

    def head(self, tenant: str | None = None) -> int:
        return self.runner.run(self.face.head(tenant))

    def session_version(self, tenant: str, session_id: str) -> int:
        return self.runner.run(self.face.session_version(tenant, session_id))

    def close(self) -> None:
        self.runner.run(self.face.close())
        self.runner.close()


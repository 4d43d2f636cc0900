"""The async face (memory/aio): the same contexts as the sync face for the same question,
typed errors, tenancy, subscribe, cancellation and ``async with`` cleanup. (The log's
conformance suite runs through it too: tests/log/test_conformance.py, "async".)"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import sqlalchemy as sa

import memory
import memory.aio
from memory import message, note
from memory.aio import AsyncStore


def conversation(store: memory.Store) -> None:
    store.append("trip", [
        message("user", "I'm planning a trip to Kyoto in April, mostly for the food."),
        message("assistant", "Lovely! Tofu places, then?"),
        message("user", "Yes, I'm vegetarian."),
    ], actor="alice")
    store.append("pets", [
        message("user", "We adopted a border collie puppy called Biscuit."),
        note("Alice's sister Zoë lives in Montréal."),
    ], actor="alice")
    store.append("today", message("user", "What's my dog called?"), actor="alice")


def tenant_connections(database_url: str) -> int:
    """Connections to this test's database logged in as a tenant role."""
    admin = sa.create_engine(database_url)
    try:
        with admin.connect() as conn:
            return int(conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND starts_with(usename, 'memory_t_')").scalar_one())
    finally:
        admin.dispose()


QUESTIONS = ["What's my dog called?", "Where does my sister live?",
             "What food do I like in Kyoto?"]


def test_same_context_for_the_same_question(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    conversation(store)

    async def through_async() -> list[memory.retrieval.Context]:
        face = AsyncStore(store, owns_store=False)
        try:
            await face.project(embedder=embedder)
            return list(await asyncio.gather(*[
                face.context(q, actor="alice", session="today", budget=300,
                             embedder=embedder) for q in QUESTIONS]))
        finally:
            await face.close()

    contexts = asyncio.run(through_async())
    for question, got in zip(QUESTIONS, contexts, strict=True):
        want = store.context(question, actor="alice", session="today", budget=300,
                             embedder=embedder)
        assert got.messages() == want.messages()
        assert got.sources == want.sources and got.tokens == want.tokens
    assert any("Biscuit" in m["content"] for m in contexts[0].messages())


def test_recorded_context_replays_through_both_faces(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    conversation(store)
    store.project(embedder=embedder)

    async def run() -> tuple[memory.retrieval.Context, memory.retrieval.Context]:
        face = AsyncStore(store, owns_store=False)
        try:
            ctx = await face.context("What's my dog called?", actor="alice",
                                     session="today", budget=300, record=True,
                                     embedder=embedder)
            recorded = [e async for e in face.read()][-1]
            assert recorded.type == "context_assembled"
            return ctx, await face.replay_context(recorded, embedder=embedder)
        finally:
            await face.close()

    ctx, replayed = asyncio.run(run())
    assert replayed.replay_matches and replayed.messages() == ctx.messages()
    recorded = list(store.read())[-1]
    assert store.replay_context(recorded, embedder=embedder).messages() == ctx.messages()


def test_views_errors_and_tenancy(database_url: str) -> None:
    async def run() -> None:
        async with memory.aio.open(database_url, migrate=False) as face:
            await face.append("s", [note("one"), note("two"), note("three")], actor="a")
            assert [e.payload["text"] for e in await face.read_session("s")] == \
                ["one", "two", "three"]
            await face.retract("s", actor="a", last=1)
            assert [e.payload["text"] for e in await face.read_session("s")
                    if e.type == "note"] == ["one", "two"]
            await face.fork("s", at_version=1, new_session="b", actor="a")
            assert [e.payload["text"] for e in await face.read_session("b")
                    if e.type == "note"] == ["one"]
            with pytest.raises(memory.ConcurrencyError):
                await face.append("s", note("x"), actor="a", expected_version=1)
            with pytest.raises(memory.ValidationError):
                await face.append("s", [], actor="a")
            with pytest.raises(memory.InvalidArgument):
                face.read(-1)
            other = face.for_tenant("acme")
            assert await other.head() == 0 and [e async for e in other.read()] == []
            await other.append("s", note("acme's"), actor="a")
            assert [e.payload["text"] for e in await other.read_session("s")] == ["acme's"]
            assert await face.head() < await other.head()
            assert other.store.engine.url.username != face.store.engine.url.username
    asyncio.run(run())
    assert tenant_connections(database_url) == 0


def test_subscribe_follows_and_stops(store: memory.Store) -> None:
    store.append("s", note("before"), actor="a")

    async def run() -> list[str]:
        face = AsyncStore(store, owns_store=False)
        seen: list[str] = []
        try:
            async with face.subscribe(0, poll_interval=5.0) as sub:
                async def follow() -> None:
                    async for event in sub:
                        seen.append(event.payload["text"])
                        if len(seen) == 3:
                            sub.stop()
                task = asyncio.create_task(follow())
                await asyncio.sleep(0.2)
                # the NOTIFY wakes it well before the 5 s poll
                await face.append("s", [note("after 1"), note("after 2")], actor="a")
                await asyncio.wait_for(task, 3)
                assert sub.position == await face.head()
        finally:
            await face.close()
        return seen

    assert asyncio.run(run()) == ["before", "after 1", "after 2"]


def test_cancelling_calls_leaves_nothing_open(database_url: str) -> None:
    async def run() -> None:
        async with memory.aio.open(database_url, migrate=False) as face:
            await face.append("s", note("x"), actor="a")
            follower = asyncio.create_task(anext(aiter(face.subscribe(1))))
            reader = asyncio.create_task(face.head())
            await asyncio.sleep(0.3)  # the follower waits on its LISTEN connection
            assert tenant_connections(database_url) >= 1
            for task in (follower, reader):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert follower.cancelled()
            assert await face.head() >= 1  # the face still works
            contexts = [asyncio.create_task(face.context("x?", actor="a", session="s",
                                                         budget=100)) for _ in range(3)]
            await asyncio.sleep(0)
            for task in contexts:
                task.cancel()
            await asyncio.gather(*contexts, return_exceptions=True)
        await asyncio.sleep(0.1)
    asyncio.run(run())
    assert tenant_connections(database_url) == 0


def test_async_with_closes_when_the_block_raises(database_url: str) -> None:
    async def run() -> AsyncStore:
        opened = memory.aio.open(database_url, migrate=False)
        with pytest.raises(RuntimeError):
            async with opened as face:
                await face.append("s", note("x"), actor="a")
                assert [e async for e in face.read()]
                raise RuntimeError("boom")
        return face
    face = asyncio.run(run())
    assert face.log.pool.closed
    assert tenant_connections(database_url) == 0


def test_a_driver_error_is_raised_as_the_sync_engine_raises_it(store: memory.Store) -> None:
    async def run() -> None:
        face = AsyncStore(store, owns_store=False)
        try:
            with pytest.raises(sa.exc.ProgrammingError):
                await face.log.fetch("SELECT no_such_column FROM memory_events", ())
            assert await face.head() == 0  # the failed call's connection was not kept
        finally:
            await face.close()
    asyncio.run(run())
    with pytest.raises(sa.exc.ProgrammingError), store.engine.connect() as conn:
        conn.exec_driver_sql("SELECT no_such_column FROM memory_events")


def test_contexts_run_on_the_store_s_own_bounded_threads(store: memory.Store, embedder) -> None:  # type: ignore[no-untyped-def]
    """Contexts are built on ``workers`` threads named memory-context (never more at a
    time, whatever the number of concurrent calls), with the caller's context variables;
    a tenant's face shares them; closing the store stops them."""
    import contextvars
    import threading

    conversation(store)
    store.project(embedder=embedder)
    request = contextvars.ContextVar("request", default="none")
    seen: list[tuple[str, str]] = []
    running = [0, 0]  # now, most at once
    lock = threading.Lock()

    class Watching:
        """The real embedder, noting the thread, the context variable and the overlap."""

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(embedder, name)

        def embed(self, texts):  # type: ignore[no-untyped-def]
            with lock:
                running[0] += 1
                running[1] = max(running)
                seen.append((threading.current_thread().name, request.get()))
            try:
                import time
                time.sleep(0.02)  # long enough for the other calls to pile up
                return embedder.embed(texts)
            finally:
                with lock:
                    running[0] -= 1

    async def run() -> AsyncStore:
        face = AsyncStore(store, owns_store=False, workers=2)
        other = face.for_tenant("other")
        await other.append("today", message("user", "Our cat is called Tom."), actor="alice")
        await other.project(embedder=embedder)

        async def one(i: int, on: AsyncStore) -> None:
            request.set(f"r{i}")
            await on.context("What's my dog called?", actor="alice", session="today",
                             budget=300, embedder=Watching())
        await asyncio.gather(*[one(i, face) for i in range(6)], one(6, other))
        await face.close()
        return face

    face = asyncio.run(run())
    assert running[1] == 2
    assert {name.split("_")[0] for name, _ in seen} == {"memory-context"}
    assert {r for _, r in seen} == {f"r{i}" for i in range(7)}
    with pytest.raises(memory.ConfigurationError, match="closed"):
        asyncio.run(face.context("What's my dog called?", actor="alice", session="today",
                                 budget=300, embedder=embedder))


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_workers_must_be_a_positive_int(store: memory.Store, workers: object) -> None:
    with pytest.raises(memory.InvalidArgument, match="workers"):
        AsyncStore(store, owns_store=False, workers=workers)  # type: ignore[arg-type]

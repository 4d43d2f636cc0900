"""`memory mcp` as a client sees it: the server runs as a subprocess (over stdio, or over
streamable HTTP on 127.0.0.1 with a free port) and the tests talk to it with the mcp
package's own client session."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

import memory

TRANSPORTS = ["stdio", "http"]
START_TIMEOUT = 120.0


def server_env(database_url: str) -> dict[str, str]:
    return {**os.environ, "MEMORY_DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: "
                                 f"{proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"server did not listen on {port} in {START_TIMEOUT}s")


@asynccontextmanager
async def connect(transport: str, database_url: str, *options: str
                  ) -> AsyncIterator[ClientSession]:
    """A client session with a freshly started `memory mcp` subprocess."""
    args = ["-m", "memory", "mcp", *options]
    env = server_env(database_url)
    if transport == "stdio":
        params = StdioServerParameters(command=sys.executable, args=args, env=env)
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            yield s
        return
    port = free_port()
    proc = subprocess.Popen([sys.executable, *args, "--transport", "http", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await anyio.to_thread.run_sync(wait_for_port, port, proc)
        async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write), \
                ClientSession(read, write) as s:
            await s.initialize()
            yield s
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(transport: str, database_url: str, options: list[str],
        body: Callable[[ClientSession], Awaitable[None]]) -> None:
    async def main() -> None:
        async with connect(transport, database_url, *options) as session:
            await body(session)
    anyio.run(main)


async def call(client: ClientSession, name: str, /, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(name, arguments)
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


async def error(client: ClientSession, name: str, /, **arguments: Any) -> str:
    result = await client.call_tool(name, arguments)
    assert result.is_error, result.content
    return result.content[0].text


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_remember_then_recall_finds_it_with_sources(transport: str, database_url: str) -> None:
    async def body(s: ClientSession) -> None:
        said = await call(s, "remember", session="trip",
                          content="My sister Nora moved to Lisbon last spring.")
        await call(s, "remember", session="trip", content="Noted.", role="assistant")
        ctx = await call(s, "recall", question="Where does Nora live now?", session="later")
        assert "Lisbon" in ctx["text"]
        assert said["event_id"] in {src["event_id"] for src in ctx["sources"]}
        assert ctx["tokens"] <= ctx["budget"] == 2000
        found = await call(s, "search", query="Nora Lisbon", limit=3)
        assert found["memories"][0]["event_id"] == said["event_id"]
        assert found["memories"][0]["session"] == "trip"

    run(transport, database_url, ["--actor", "alice"], body)
    with memory.Store.open(database_url, migrate=False) as store:
        events = list(store.read())
    assert [(e.actor_id, e.session_id, e.payload["role"]) for e in events] == [
        ("alice", "trip", "user"), ("alice", "trip", "assistant")]


def test_search_returns_the_memory_with_its_source_and_honours_the_limit(
        database_url: str) -> None:
    async def body(s: ClientSession) -> None:
        bike = await call(s, "remember", session="garage", content="My bike is a red Brompton.")
        await call(s, "remember", session="garage", content="The car needs new tyres.")
        await call(s, "remember", session="food", content="I had ramen for lunch.")
        one = (await call(s, "search", query="What bike do I ride?", limit=1))["memories"]
        assert len(one) == 1
        assert {k: one[0][k] for k in ("event_id", "session", "position", "chunk_index",
                                       "role", "rank")} == {
            "event_id": bike["event_id"], "session": "garage", "position": bike["position"],
            "chunk_index": 0, "role": "user", "rank": 1}
        assert "Brompton" in one[0]["text"] and isinstance(one[0]["score"], float)
        two = (await call(s, "search", query="What bike do I ride?", limit=2))["memories"]
        assert len(two) == 2 and two[0] == one[0] and two[1]["rank"] == 2
        assert two[1]["event_id"] != bike["event_id"]

    run("stdio", database_url, ["--actor", "alice"], body)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_bad_call_is_a_tool_error_and_writes_nothing(transport: str,
                                                       database_url: str) -> None:
    async def body(s: ClientSession) -> None:
        assert "role" in await error(s, "remember", session="s", content="hi", role="wizard")
        assert "session" in await error(s, "remember", session="", content="hi")
        assert "content" in await error(s, "remember", session="s")  # missing argument
        assert "budget" in await error(s, "recall", question="q", session="s", budget=-5)
        assert "limit" in await error(s, "search", query="q", limit=0)

    run(transport, database_url, ["--actor", "alice"], body)
    with memory.Store.open(database_url, migrate=False) as store:
        assert list(store.read()) == []


def test_forget_is_absent_unless_enabled(database_url: str) -> None:
    async def without(s: ClientSession) -> None:
        names = {t.name for t in (await s.list_tools()).tools}
        assert names == {"remember", "recall", "search"}
        await call(s, "remember", session="s", content="My locker code is 4512.")
        result = await s.call_tool("forget", {"everything": True})
        assert result.is_error

    run("stdio", database_url, ["--actor", "alice"], without)

    async def enabled(s: ClientSession) -> None:
        names = {t.name for t in (await s.list_tools()).tools}
        assert names == {"remember", "recall", "search", "forget"}
        assert "4512" in (await call(s, "recall", question="locker code?", session="s"))["text"]
        assert "event_ids" in await error(s, "forget")  # neither ids nor everything
        done = await call(s, "forget", everything=True)
        assert done["actor_events"] == 1
        assert "4512" not in (await call(s, "recall", question="locker code?",
                                         session="s"))["text"]

    run("http", database_url, ["--actor", "alice", "--allow-forget"], enabled)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_another_actors_and_tenants_memories_are_unreachable(transport: str,
                                                             database_url: str) -> None:
    with memory.Store.open(database_url, migrate=False) as store:
        bob = store.append("bob-notes", memory.message("user", "Bob's locker code is 7731."),
                           actor="bob")[0]
        store.for_tenant("other").append(
            "notes", memory.message("user", "Alice's other-tenant locker code is 9902."),
            actor="alice")
        store.project()

    async def body(s: ClientSession) -> None:
        for tool in (await s.list_tools()).tools:
            assert not {"actor", "tenant", "actor_id", "tenant_id"} & set(
                tool.input_schema.get("properties", {})), tool.name
        await call(s, "remember", session="mine", content="My bike is blue.")
        ctx = await call(s, "recall", question="What is the locker code?", session="bob-notes")
        assert "7731" not in ctx["text"] and "9902" not in ctx["text"]
        assert str(bob.event_id) not in json.dumps(ctx["sources"])
        found = await call(s, "search", query="locker code", limit=10)
        assert all(m["session"] == "mine" for m in found["memories"])
        assert "SessionOwnershipError" in await error(
            s, "remember", session="bob-notes", content="overwrite")
        forbidden = await error(s, "forget", event_ids=[str(bob.event_id)])
        assert "not events of this actor" in forbidden

    run(transport, database_url, ["--actor", "alice", "--allow-forget"], body)
    with memory.Store.open(database_url, migrate=False) as store:
        assert [e.payload["content"] for e in store.read(actor="bob")] == [
            "Bob's locker code is 7731."]
        assert len(list(store.read(actor="alice"))) == 1


def test_the_example_runs(database_url: str) -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, os.path.join(root, "examples", "mcp_client.py")],
                          env=server_env(database_url), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "'recall', 'remember', 'search'" in done.stdout
    assert "peanuts" in done.stdout.split("sources:")[0]
    assert "search: I am allergic to peanuts." in done.stdout
    assert "bad call is a tool error: True" in done.stdout


def test_the_command_needs_an_actor(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from memory.cli.main import main

    monkeypatch.delenv("MEMORY_ACTOR", raising=False)
    assert main(["mcp", "--url", "postgresql://nobody@127.0.0.1:1/none"]) == 1
    assert "MEMORY_ACTOR" in capsys.readouterr().err


def test_tenant_and_actor_from_the_environment(database_url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with memory.Store.open(database_url, migrate=False) as store:
        store.append("notes", memory.message("user", "Default-tenant code 7731."),
                     actor="alice")
        store.for_tenant("other").append(
            "notes", memory.message("user", "Other-tenant code 9902."), actor="alice")
        store.project()
    monkeypatch.setenv("MEMORY_TENANT", "other")
    monkeypatch.setenv("MEMORY_ACTOR", "alice")

    async def body(s: ClientSession) -> None:
        text = (await call(s, "recall", question="What is the code?", session="notes"))["text"]
        assert "9902" in text and "7731" not in text

    run("stdio", database_url, [], body)

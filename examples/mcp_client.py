"""Talk to `memory mcp` the way an MCP client does: start it over stdio, remember, recall,
search. Offline: the server uses the embedded PostgreSQL (or MEMORY_DATABASE_URL) and the
packaged embedding model.

    pip install 'memory-pg[mcp]'
    HF_HUB_OFFLINE=1 python examples/mcp_client.py
"""

from __future__ import annotations

import json
import os
import sys

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


async def main() -> None:
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "memory", "mcp", "--actor", "ada"],
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        print("tools:", sorted(t.name for t in (await session.list_tools()).tools))

        async def call(name: str, **arguments: object) -> dict:
            result = await session.call_tool(name, arguments)
            if result.is_error:
                raise RuntimeError(result.content[0].text)
            return json.loads(result.content[0].text)

        await call("remember", session="monday", content="I am allergic to peanuts.")
        await call("remember", session="monday", content="Noted, no peanuts.", role="assistant")
        ctx = await call("recall", question="What should the dessert avoid?", session="friday")
        print(ctx["text"])
        print("sources:", [(s["kind"], s["session_id"]) for s in ctx["sources"]])
        found = await call("search", query="allergy", limit=1)
        print("search:", found["memories"][0]["text"])
        bad = await session.call_tool("remember", {"session": "monday", "content": "x",
                                                   "role": "robot"})
        print("bad call is a tool error:", bad.is_error)


if __name__ == "__main__":
    anyio.run(main)

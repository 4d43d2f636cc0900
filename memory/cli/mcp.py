"""`memory mcp`: serve one tenant's and one actor's memory to MCP clients.

Over stdio (the default: a client such as a desktop assistant starts the command) or over
streamable HTTP on ``--host``/``--port`` (127.0.0.1 unless told otherwise). The tenant and
the actor come from the options or from ``MEMORY_TENANT`` / ``MEMORY_ACTOR``; ``forget``
is offered only with ``--allow-forget``. The server itself is memory/integrations/mcp.py;
it needs the ``mcp`` extra (``pip install 'memory-pg[mcp]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from ..errors import ConfigurationError
from .options import store_command


def add_commands(subparsers: Any) -> None:
    with store_command(subparsers, "mcp", run_mcp, help="serve one actor's memory to MCP "
                       "clients (stdio or streamable HTTP)") as p:
        p.add_argument("--actor", default=os.environ.get("MEMORY_ACTOR"),
                       help="whose memory (default: MEMORY_ACTOR)")
        p.add_argument("--transport", choices=["stdio", "http"], default="stdio",
                       help="stdio (default) or streamable HTTP")
        p.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
        p.add_argument("--allow-forget", action="store_true",
                       help="offer the forget tool (erases this actor's events)")
    p.set_defaults(tenant=None)  # without --tenant: MEMORY_TENANT, else 'default'


def run_mcp(args: argparse.Namespace) -> int:
    """Serve the memory of one actor in one tenant as MCP tools: remember, recall, search
    (and forget with --allow-forget). The tenant is --tenant, else MEMORY_TENANT, else
    'default'."""
    try:
        from ..integrations.mcp import build_server
    except ImportError as exc:
        raise ConfigurationError(
            f"memory mcp needs the mcp package ({exc}): pip install 'memory-pg[mcp]'"
        ) from None
    from ..store import Store

    actor = args.actor
    if not actor:
        raise ConfigurationError("give --actor (whose memory to serve) or set MEMORY_ACTOR")
    tenant = args.tenant or os.environ.get("MEMORY_TENANT") or "default"
    # Over stdio, stdout carries the protocol: anything opening the store prints (the
    # embedded server starting, migrations) goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        store = Store.open(args.url, tenant=tenant)
    with store:
        server = build_server(store, actor, allow_forget=args.allow_forget)
        if args.transport == "stdio":
            server.run("stdio")
        else:
            server.run("streamable-http", host=args.host, port=args.port)
    return 0

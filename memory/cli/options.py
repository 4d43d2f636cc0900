"""Options shared by every `memory` subcommand that opens a store (one definition, so
`--url` and `--tenant` mean the same thing everywhere)."""

from __future__ import annotations

import argparse


def add_store_options(p: argparse.ArgumentParser, *, tenant: bool = True) -> None:
    p.add_argument("--url", help="database URL (default: MEMORY_DATABASE_URL, else embedded)")
    if tenant:
        p.add_argument("--tenant", default="default",
                       help="tenant (namespace), default 'default'")

"""What every `memory` subcommand that opens a store shares: its `--url` and `--tenant`
options (one definition, so they mean the same thing everywhere), the way a subcommand is
declared around them, and the store they name."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store import Store


def add_server_options(p: argparse.ArgumentParser) -> None:
    """`--url` alone: for the commands that act on every tenant of the database
    (projections, master-key rotation)."""
    p.add_argument("--url", help="database URL (default: MEMORY_DATABASE_URL, else embedded)")


def add_store_options(p: argparse.ArgumentParser) -> None:
    """`--url` and `--tenant`: for the commands that work in one tenant."""
    add_server_options(p)
    p.add_argument("--tenant", default="default", help="tenant (namespace), default 'default'")


@contextmanager
def store_command(subparsers: Any, name: str, run: Callable[..., int], *, help: str,
                  options: Callable[[argparse.ArgumentParser], None] = add_store_options,
                  ) -> Iterator[argparse.ArgumentParser]:
    """Declare the subcommand ``name`` that ``run`` carries out: the ``with`` block adds
    the command's own arguments to the parser it is given, and ``options`` (the store
    options by default) come after them, last in the usage and the help. The command's
    description (`memory NAME --help`) is ``run``'s docstring as one paragraph (the
    handler says once what the command does), else the one-line ``help``."""
    doc = " ".join(run.__doc__.split()) if run.__doc__ else help
    p = subparsers.add_parser(name, help=help, description=doc)
    yield p
    options(p)
    p.set_defaults(func=run)


def open_store(args: argparse.Namespace) -> Store:
    """The store the options name, in the tenant they name."""
    from ..store import Store

    return Store.open(args.url, tenant=args.tenant)

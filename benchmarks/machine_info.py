"""What every benchmark records about the machine and the code it ran on, so that a result
file can be read without the run's terminal: load from other work moves every figure, and
a figure without its commit cannot be compared with the next one. Imported by the scripts
beside it, which run as `python benchmarks/NAME.py`."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform knows, else '?'."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def loadavg() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded: how busy the machine was."""
    return [round(x, 2) for x in os.getloadavg()]


def ram_gib() -> float:
    """The machine's physical memory in GiB."""
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def commit() -> str:
    """The short hash of the commit the run's code is at, '?' outside a git checkout."""
    return _git("rev-parse", "--short", "HEAD") or "?"


def uncommitted_changes(*paths: str) -> bool | None:
    """Whether the working tree differs from that commit under ``paths`` (None: unknown),
    i.e. whether the commit alone describes the code that ran."""
    status = _git("status", "--porcelain", *paths)
    return None if status is None else bool(status)


def machine() -> dict[str, Any]:
    """The facts a result file starts with: cores, CPU, Python, date (UTC), commit, and the
    load average as the run starts (a script adds ``loadavg_at_end`` when it is done)."""
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "commit": commit(), "loadavg_at_start": loadavg()}

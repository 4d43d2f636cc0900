"""Random bytes from the OS, drawn ahead in blocks, per thread.

Why: every append needs fresh random bytes (its event ids, and when sealed its secrets and
nonces). One ``os.urandom`` call per append is a system call that drops and retakes the
GIL; with several threads appending, retaking it waited behind the others (measured,
benchmarks/RESULTS.md, "Append"). A block of 4 KiB serves dozens of appends. The bytes
are the OS's own (``os.urandom``), used once each; a forked child starts with an empty
block, so it never repeats its parent's bytes.
"""

from __future__ import annotations

import os
import threading

BLOCK = 4096
_local = threading.local()


def _reset() -> None:
    global _local
    _local = threading.local()


os.register_at_fork(after_in_child=_reset)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the OS's random source, each handed out once."""
    if n > BLOCK // 4:
        return os.urandom(n)
    local = _local
    buf: bytes = getattr(local, "buf", b"")
    at: int = getattr(local, "at", 0)
    if at + n > len(buf):
        buf, at = os.urandom(BLOCK), 0
        local.buf = buf
    local.at = at + n
    return buf[at:at + n]

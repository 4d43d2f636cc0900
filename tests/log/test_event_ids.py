"""Event ids the library makes (memory.log.events.new_event_id): UUIDv7, unique, time-ordered
across milliseconds, and never repeated by a forked child (memory/log/rand.py)."""

from __future__ import annotations

import os
import threading
import time
import uuid

from memory.log.events import new_event_id


def test_ids_are_uuid7_and_unique_across_threads() -> None:
    out: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def make(k: int) -> None:
        out[k] = [new_event_id() for _ in range(5_000)]

    threads = [threading.Thread(target=make, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for chunk in out for i in chunk]
    assert len(set(ids)) == len(ids) == 20_000
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)


def test_ids_carry_the_time_and_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    first = new_event_id()
    time.sleep(0.003)
    second = new_event_id()
    after = time.time_ns() // 1_000_000
    assert before <= first.int >> 80 <= (second.int >> 80) <= after
    assert first < second  # a later millisecond sorts later


def test_a_forked_child_draws_its_own_random_bits() -> None:
    new_event_id()  # the parent has random bytes drawn ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next id's random part, exit at once
        os.write(write, new_event_id().bytes[6:])
        os._exit(0)
    os.close(write)
    child = os.read(read, 10)
    os.waitpid(pid, 0)
    os.close(read)
    assert child != new_event_id().bytes[6:]


def test_random_bytes_are_handed_out_once() -> None:
    from memory.log.rand import BLOCK, random_bytes

    parts = [random_bytes(60) for _ in range(3 * BLOCK // 60)]  # several blocks
    assert all(len(p) == 60 for p in parts) and len(set(parts)) == len(parts)
    assert len(random_bytes(BLOCK)) == BLOCK  # a large request goes to the OS directly

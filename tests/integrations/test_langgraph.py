"""LangGraph on the store: the checkpointer passes LangGraph's own conformance suite, the item
store behaves like LangGraph's stores, and a compiled graph uses both across processes."""

from __future__ import annotations

import asyncio

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate

import memory
from memory.integrations.langgraph import MemoryCheckpointer


def test_checkpointer_passes_the_conformance_suite(store: memory.Store) -> None:
    @checkpointer_test(name="MemoryCheckpointer")
    async def make():  # type: ignore[no-untyped-def]
        yield MemoryCheckpointer(store, actor="graph")

    report = asyncio.run(validate(make))
    failures = {name: r.failures for name, r in report.results.items() if r.passed is False}
    assert failures == {}
    passed = {name for name, r in report.results.items() if r.passed}
    assert passed == {"put", "put_writes", "get_tuple", "list", "delete_thread",
                      "delete_for_runs", "copy_thread"}

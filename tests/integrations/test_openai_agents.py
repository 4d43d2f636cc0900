"""MemorySession and LongTermMemory with the real OpenAI Agents SDK: the Runner over a
scripted model (no network), the SDK's session behaviours one by one, a fresh process that
resumes a session and recalls an earlier session's fact, and the example."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from agents import Agent, RunConfig, Runner, function_tool
from agents.memory import Session, SessionSettings
from scripted import RuleModel

import memory
from memory.integrations.openai_agents import LongTermMemory, MemorySession

ROOT = Path(__file__).resolve().parents[2]
NO_TRACES = RunConfig(tracing_disabled=True)


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def agent(model: RuleModel, ltm: LongTermMemory | None = None) -> Agent:
    return Agent(name="helper", model=model, tools=[weather],
                 instructions=ltm.instructions("You help Maya.") if ltm else "You help Maya.")


def items(n: int, prefix: str = "m") -> list[dict]:
    return [{"role": "user", "content": f"{prefix}{i}"} for i in range(n)]


def test_is_the_sdk_session_protocol(store: memory.Store) -> None:
    s = MemorySession("s", store, actor="maya", session_settings={"limit": 3})
    assert isinstance(s, Session)
    assert s.session_id == "s" and s.session_settings == SessionSettings(limit=3)


def test_runner_over_several_turns(store: memory.Store) -> None:
    model, session = RuleModel(), MemorySession("chat", store, actor="maya")
    bot = agent(model)

    async def turns() -> list[str]:
        out = []
        for text in ("Remember that my flight is on Friday.", "What is the weather in Oslo",
                     "Thanks."):
            result = await Runner.run(bot, text, session=session, run_config=NO_TRACES)
            out.append(result.final_output)
        return out

    answers = asyncio.run(turns())
    assert answers == ["Noted: that my flight is on Friday.", "The tool says: sunny in oslo",
                       "OK."]
    history = asyncio.run(session.get_items())
    assert [i.get("type", "message") for i in history] == [
        "message", "message", "message", "function_call", "function_call_output", "message",
        "message", "message"]
    # the third model call saw the whole history the session held
    _, seen = model.seen[-1]
    assert seen[:len(history) - 1] == history[:-1]
    # stored as the log's own typed events, in order
    log = store.read_session("chat")
    assert [e.type for e in log] == ["message", "message", "message", "tool_call",
                                     "tool_result", "message", "message", "message"]
    assert log[3].payload == {"name": "weather", "arguments": {"city": "oslo"},
                              "call_id": history[3]["call_id"]}
    assert log[4].payload["content"] == "sunny in oslo"


def test_items_read_back_equal(store: memory.Store) -> None:
    given = [
        {"role": "user", "content": "plain"},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
        {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "hi", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f",
         "arguments": '{"x":  1.50, "y": [1, "\\u00e9"]}', "status": "completed"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "not json"},
        {"type": "function_call_output", "call_id": "c1", "output": "done"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "listed"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}]},
        {"role": "developer", "content": "be brief"},
        {"type": "message", "role": "user",
         "content": [{"type": "input_image", "image_url": "https://example.invalid/x.png",
                      "detail": "auto"}]},
    ]
    s = MemorySession("eq", store, actor="maya")
    asyncio.run(s.add_items(given))
    assert asyncio.run(s.get_items()) == given
    types = [e.type for e in store.read_session("eq")]
    assert types == ["message", "message", "message", "tool_call", "tool_call", "tool_result",
                     "tool_result", "agent_item", "agent_item", "agent_item"]
    assert store.read_session("eq")[1].payload == {"role": "user", "content": "a\nb"}


def test_ordering_across_batches(store: memory.Store) -> None:
    s = MemorySession("o", store, actor="maya")

    async def go() -> list[dict]:
        await s.add_items(items(3, "a"))
        await s.add_items([])
        await s.add_items(items(2, "b"))
        return await s.get_items()

    assert asyncio.run(go()) == items(3, "a") + items(2, "b")


def test_limit_returns_the_latest_in_order(store: memory.Store) -> None:
    s = MemorySession("l", store, actor="maya")
    asyncio.run(s.add_items(items(5)))
    assert asyncio.run(s.get_items(limit=2)) == items(5)[-2:]
    assert asyncio.run(s.get_items(limit=10)) == items(5)
    assert asyncio.run(s.get_items(limit=0)) == []
    assert asyncio.run(s.get_items(limit=-1)) == items(5)
    bounded = MemorySession("l", store, actor="maya", session_settings=SessionSettings(limit=3))
    assert asyncio.run(bounded.get_items()) == items(5)[-3:]
    assert asyncio.run(bounded.get_items(limit=1)) == items(5)[-1:]


def test_the_runner_honours_session_settings(store: memory.Store) -> None:
    model = RuleModel()
    session = MemorySession("st", store, actor="maya", session_settings={"limit": 4})
    asyncio.run(session.add_items(items(6)))
    Runner.run_sync(agent(model), "Thanks.", session=session, run_config=NO_TRACES)
    assert model.seen[-1][1] == [*items(6)[-4:], {"role": "user", "content": "Thanks."}]
    per_run = RunConfig(tracing_disabled=True, session_settings=SessionSettings(limit=1))
    Runner.run_sync(agent(model), "Thanks.", session=session, run_config=per_run)
    assert model.seen[-1][1][0]["type"] == "message"  # the previous reply, alone
    assert len(model.seen[-1][1]) == 2


def test_pop_on_empty_and_pop_order(store: memory.Store) -> None:
    s = MemorySession("p", store, actor="maya")
    assert asyncio.run(s.pop_item()) is None  # no events at all
    asyncio.run(s.add_items(items(3)))
    assert asyncio.run(s.pop_item()) == items(3)[2]
    assert asyncio.run(s.pop_item()) == items(3)[1]
    assert asyncio.run(s.get_items()) == items(3)[:1]
    assert asyncio.run(s.pop_item()) == items(3)[0]
    assert asyncio.run(s.pop_item()) is None  # events, none visible
    # history is not rewritten: the log holds the items and the retractions hiding them
    view = store.view("p")
    assert len(view.hidden) == 3
    assert [e.type for e in view.all_events].count("events_retracted") == 3


def test_clear_then_add(store: memory.Store) -> None:
    s = MemorySession("c", store, actor="maya")
    asyncio.run(s.clear_session())  # nothing to clear is fine
    asyncio.run(s.add_items(items(4)))
    head = store.head()
    asyncio.run(s.clear_session())
    asyncio.run(s.clear_session())
    assert asyncio.run(s.get_items()) == []
    asyncio.run(s.add_items(items(1, "new")))
    assert asyncio.run(s.get_items()) == items(1, "new")
    # the view as it stood before the clear still has them
    before = [e for e in store.read_session("c", as_of=head) if e.type == "message"]
    assert [e.payload["content"] for e in before] == ["m0", "m1", "m2", "m3"]


def test_sessions_are_isolated(store: memory.Store) -> None:
    a = MemorySession("a", store, actor="maya")
    b = MemorySession("b", store, actor="maya")
    other = MemorySession("a", store.for_tenant("acme"), actor="maya")

    async def go() -> None:
        await a.add_items(items(2, "a"))
        await b.add_items(items(3, "b"))
        await other.add_items(items(1, "x"))
        await b.pop_item()
        await a.clear_session()

    asyncio.run(go())
    assert asyncio.run(a.get_items()) == []
    assert asyncio.run(b.get_items()) == items(2, "b")
    assert asyncio.run(other.get_items()) == items(1, "x")


def test_concurrent_adds_and_pops(store: memory.Store) -> None:
    s = MemorySession("cc", store, actor="maya")
    asyncio.run(s.add_items(items(10, "seed")))

    async def go() -> list:
        adds = [s.add_items(items(2, f"w{i}-")) for i in range(8)]
        pops = [s.pop_item() for _ in range(8)]
        return await asyncio.gather(*adds, *pops)

    popped = [p for p in asyncio.run(go())[8:] if p is not None]
    left = asyncio.run(s.get_items())
    everything = items(10, "seed") + [i for n in range(8) for i in items(2, f"w{n}-")]
    assert len(popped) == 8  # 26 items were there to pop
    contents = [i["content"] for i in popped + left]
    assert sorted(contents) == sorted(i["content"] for i in everything)  # none lost or twice
    # each batch stays in order
    for n in range(8):
        batch = [i["content"] for i in left if i["content"].startswith(f"w{n}-")]
        assert batch == sorted(batch)


def test_run_sync_and_threads_with_their_own_loops(store: memory.Store) -> None:
    model, session = RuleModel(), MemorySession("t", store, actor="maya")
    result = Runner.run_sync(agent(model), "Remember that I like tea.", session=session,
                             run_config=NO_TRACES)
    assert result.final_output == "Noted: that I like tea."
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(session.add_items(items(3, f"t{n}-")))
                loop.run_until_complete(session.get_items(limit=1))
            finally:
                loop.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    history = asyncio.run(session.get_items())
    assert len(history) == 2 + 12
    assert Runner.run_sync(agent(model), "Thanks.", session=session,
                           run_config=NO_TRACES).final_output == "OK."
    assert len(asyncio.run(session.get_items())) == 16


def test_forget_erases_what_the_session_held(store: memory.Store) -> None:
    s = MemorySession("f", store, actor="maya")
    asyncio.run(s.add_items(items(2)))
    store.forget(actor="maya", erase=False)
    assert asyncio.run(s.get_items()) == []
    assert asyncio.run(s.pop_item()) is None


def test_recall_tool_and_instructions_give_sources(store: memory.Store) -> None:
    earlier = MemorySession("week1", store, actor="maya")
    asyncio.run(earlier.add_items([
        {"role": "user", "content": "Remember that I am allergic to walnuts."},
        {"role": "assistant", "content": "Noted: you are allergic to walnuts."}]))
    now = MemorySession("week2", store, actor="maya")
    ltm = LongTermMemory(now, budget=400, strong=True)
    text = ltm.recall_text("Which nuts am I allergic to?")
    assert "walnuts" in text and "Sources:" in text
    assert any(s.session_id == "week1" for s in ltm.last_context.sources)
    model = RuleModel()
    bot = Agent(name="helper", model=model, instructions=ltm.instructions("You help Maya."),
                tools=[ltm.tool()])
    out = Runner.run_sync(bot, "Which nuts am I allergic to?", session=now,
                          run_config=NO_TRACES)
    assert "walnuts" in out.final_output
    instructions, _ = model.seen[-1]
    assert instructions.startswith("You help Maya.") and "Sources:" in instructions
    assert bot.tools[0].name == "recall"


RESUME = textwrap.dedent("""
    import asyncio, json, sys
    sys.path.insert(0, sys.argv[2])
    from agents import Agent, RunConfig, Runner
    from scripted import RuleModel
    import memory
    from memory.integrations.openai_agents import LongTermMemory, MemorySession

    with memory.open(sys.argv[1], migrate=False) as store:
        session = MemorySession("week2", store, actor="maya")
        before = asyncio.run(session.get_items())
        ltm = LongTermMemory(session, budget=400, strong=True)
        bot = Agent(name="helper", model=RuleModel(), instructions=ltm.instructions())
        result = Runner.run_sync(bot, "Which nuts am I allergic to?", session=session,
                                 run_config=RunConfig(tracing_disabled=True))
        print(json.dumps({"before": before, "answer": result.final_output,
                          "after": len(asyncio.run(session.get_items())),
                          "sources": sorted({s.session_id for s in ltm.last_context.sources})}))
""")


def test_a_fresh_process_resumes_and_recalls_an_earlier_session(
        store: memory.Store, database_url: str) -> None:
    model = RuleModel()

    async def first_process() -> list:
        week1 = MemorySession("week1", store, actor="maya")
        for text in ("Remember that I am allergic to walnuts.", "Thanks."):
            await Runner.run(agent(model), text, session=week1, run_config=NO_TRACES)
        week2 = MemorySession("week2", store, actor="maya")
        for text in ("Remember that my flight is on Friday.", "What is the weather in Oslo"):
            await Runner.run(agent(model), text, session=week2, run_config=NO_TRACES)
        return await week2.get_items()

    week2_items = asyncio.run(first_process())
    out = subprocess.run([sys.executable, "-c", RESUME, database_url, str(Path(__file__).parent)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] == week2_items  # resumed exactly
    assert "walnuts" in got["answer"]  # recalled from week1, through long-term memory
    assert "week1" in got["sources"]
    assert got["after"] == len(week2_items) + 2


def test_example_runs_offline(database_url: str) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "openai_agents.py")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "HF_HUB_OFFLINE": "1",
                              "MEMORY_DATABASE_URL": database_url})
    assert out.returncode == 0, out.stderr
    assert "walnuts" in out.stdout.split("answer:")[1].splitlines()[0]
    assert "source: memory" in out.stdout

"""An OpenAI Agents SDK agent whose memory is this library's store, run offline.

    pip install 'memory-pg[openai-agents]'
    python examples/openai_agents.py

``MemorySession`` keeps each conversation's items in the log; ``LongTermMemory`` puts what
the store remembers from earlier conversations into the agent's instructions, with
sources. A tiny rule-based model stands in for a real one (no network, no API key): swap
``EchoMemoryModel()`` for a model name such as ``"gpt-4.1"`` to use OpenAI's.
Uses ``MEMORY_DATABASE_URL`` if set, else the embedded PostgreSQL.
"""

from __future__ import annotations

import uuid
from typing import Any

from agents import Agent, Model, ModelResponse, RunConfig, Runner, Usage
from openai.types.responses import ResponseOutputMessage, ResponseOutputText

import memory
from memory.integrations.openai_agents import LongTermMemory, MemorySession


class EchoMemoryModel(Model):
    """Answers a question with the remembered lines of its instructions; else "Noted."."""

    async def get_response(self, system_instructions: str | None, input: Any,
                           *args: Any, **kwargs: Any) -> ModelResponse:
        question = input if isinstance(input, str) else str(input[-1].get("content", ""))
        remembered = [line for line in (system_instructions or "").splitlines()
                      if line.startswith("- [")]
        text = " ".join(remembered) if question.endswith("?") and remembered else "Noted."
        reply = ResponseOutputMessage(
            id="msg_1", type="message", role="assistant", status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[])])
        return ModelResponse(output=[reply], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def main() -> None:
    run = RunConfig(tracing_disabled=True)  # no trace export: nothing leaves the machine
    user = f"maya-{uuid.uuid4().hex[:8]}"
    with memory.open() as store:
        # Monday: one conversation, kept in the log as it happens.
        monday = MemorySession(f"{user}-monday", store, actor=user)
        agent = Agent(name="assistant", model=EchoMemoryModel(), instructions="Be helpful.")
        Runner.run_sync(agent, "I'm vegetarian and allergic to walnuts.", session=monday,
                        run_config=run)
        store.project()  # index it (a projection worker does this in production)

        # Friday: a new conversation; long-term memory brings Monday's fact back.
        friday = MemorySession(f"{user}-friday", store, actor=user)
        ltm = LongTermMemory(friday, budget=500)
        agent = Agent(name="assistant", model=EchoMemoryModel(),
                      instructions=ltm.instructions("Be helpful."), tools=[ltm.tool()])
        result = Runner.run_sync(agent, "What should the cake not contain?", session=friday,
                                 run_config=run)
        print("answer:", result.final_output)
        for source in ltm.last_context.sources:
            print("source:", source.kind, source.session_id, source.event_id, source.reason)
        print("items in friday's session:", len(friday.items()))


if __name__ == "__main__":
    main()

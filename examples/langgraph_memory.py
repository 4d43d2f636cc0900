"""LangGraph with this library as its memory, offline.

A compiled graph answers from the long-term memories of its user (``MemoryStore``, ranked by
this library's retrieval) and stops for a human review (``interrupt``); its state is kept
by ``MemoryCheckpointer`` as events of the thread's session. A second process resumes the
thread where the first stopped. The chat model is scripted (LangChain's ``BaseChatModel``
interface, no network).

    python examples/langgraph_memory.py   # the embedded server, or MEMORY_DATABASE_URL

(Not named langgraph.py: a script of that name would shadow the langgraph package.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.store.base import BaseStore
from langgraph.types import Command, interrupt

import memory
from memory.integrations.langgraph import MemoryCheckpointer, MemoryStore

ACTOR = "example-agent"
CONFIG: RunnableConfig = {"configurable": {"thread_id": "support-1", "user_id": "ada"}}


class ScriptedChat(BaseChatModel):
    """Answers with the first memory its system message lists: a stand-in for a real model
    that keeps the example offline and its output predictable."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        system = next((str(m.content) for m in messages if isinstance(m, SystemMessage)), "")
        facts = [line[2:] for line in system.splitlines() if line.startswith("- ")]
        answer = f"From what I remember: {facts[0]}" if facts else "I do not know yet."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(answer))])


def build(checkpointer: MemoryCheckpointer, store: MemoryStore,
          model: BaseChatModel | None = None) -> Any:
    """The graph: ``chat`` (recall, then answer) -> ``review`` (a human approves) -> end."""
    chat_model = model or ScriptedChat()

    def chat(state: MessagesState, config: RunnableConfig, *, store: BaseStore) -> dict:
        user = config["configurable"]["user_id"]
        question = str(state["messages"][-1].content)
        hits = store.search(("memories", user), query=question, limit=2)
        system = SystemMessage("Memories:\n" + "\n".join(f"- {h.value['text']}" for h in hits))
        return {"messages": [chat_model.invoke([system, *state["messages"]])]}

    def review(state: MessagesState) -> dict:
        verdict = interrupt({"draft": state["messages"][-1].content})
        return {} if verdict == "approve" else {"messages": [AIMessage("(answer withdrawn)")]}

    graph = StateGraph(MessagesState)
    graph.add_node("chat", chat)
    graph.add_node("review", review)
    graph.add_edge(START, "chat")
    graph.add_edge("chat", "review")
    graph.add_edge("review", END)
    return graph.compile(checkpointer=checkpointer, store=store)


def open_graph(db: memory.Store) -> Any:
    return build(MemoryCheckpointer(db, actor=ACTOR), MemoryStore(db, actor=ACTOR))


def first_process() -> None:
    with memory.Store.open() as db:
        graph = open_graph(db)
        graph.store.put(("memories", "ada"), "dog", {"text": "Ada's dog is a beagle, Biscuit."})
        graph.store.put(("memories", "ada"), "job", {"text": "Ada works night shifts."})
        out = graph.invoke({"messages": [HumanMessage("What is my dog called?")]}, CONFIG)
        print("stopped for review:", out["__interrupt__"][0].value["draft"])
    # another process picks the thread up where this one stopped
    done = subprocess.run([sys.executable, __file__, "--resume"], check=True,
                          capture_output=True, text=True)
    print(done.stdout, end="")


def second_process() -> None:
    with memory.Store.open() as db:
        graph = open_graph(db)
        print("resuming at:", graph.get_state(CONFIG).next)
        out = graph.invoke(Command(resume="approve"), CONFIG)
        print("answer:", out["messages"][-1].content)
        history = list(graph.get_state_history(CONFIG))
        print("checkpoints:", json.dumps([h.metadata.get("step") for h in history]))


if __name__ == "__main__":
    second_process() if "--resume" in sys.argv else first_process()

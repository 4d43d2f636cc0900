"""A model for the OpenAI Agents SDK that answers by rules instead of a network call: it
implements the SDK's ``Model`` interface, so the Runner, sessions, tools and dynamic
instructions all run as they do with a real model."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from typing import Any

from agents import Model, ModelResponse, Usage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

_ids = itertools.count(1)


def said(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=f"msg_{next(_ids)}", type="message", role="assistant", status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])])


def calls(name: str, arguments: str) -> ResponseFunctionToolCall:
    n = next(_ids)
    return ResponseFunctionToolCall(type="function_call", id=f"fc_{n}", call_id=f"call_{n}",
                                    name=name, arguments=arguments, status="completed")


class RuleModel(Model):
    """Replies to the latest user message:

    * "remember ..." -> "Noted: ...";
    * "weather in X" -> a call to the ``weather`` tool, then the tool's answer;
    * a question ("...?") -> the remembered lines of its instructions that share a word
      with the question (what the store recalled), else "I don't know.";
    * anything else -> "OK.".

    ``seen`` keeps each call's instructions and input, for the tests to look at."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, list[Any]]] = []

    async def get_response(self, system_instructions: str | None, input: Any,
                           model_settings: Any, tools: Any, output_schema: Any,
                           handoffs: Any, tracing: Any, *, previous_response_id: Any = None,
                           conversation_id: Any = None, prompt: Any = None) -> ModelResponse:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        self.seen.append((system_instructions, items))
        last = items[-1]
        if last.get("type") == "function_call_output":
            out = [said(f"The tool says: {last['output']}")]
        else:
            out = [self._reply(system_instructions or "", _user_text(items))]
        return ModelResponse(output=out, usage=Usage(), response_id=None)

    def _reply(self, instructions: str, text: str) -> Any:
        low = text.lower()
        if low.startswith("remember"):
            return said("Noted: " + text.split(" ", 1)[-1])
        m = re.search(r"weather in (\w+)", low)
        if m:
            return calls("weather", f'{{"city": "{m.group(1)}"}}')
        if text.rstrip().endswith("?"):
            words = set(re.findall(r"[a-z]{4,}", low))
            hits = [line for line in instructions.splitlines() if line.startswith("- [")
                    and words & set(re.findall(r"[a-z]{4,}", line.lower()))]
            return said(" | ".join(hits) if hits else "I don't know.")
        return said("OK.")

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the tests run the model without streaming")


def _user_text(items: list[Any]) -> str:
    for item in reversed(items):
        if item.get("role") == "user" and isinstance(item.get("content"), str):
            return item["content"]
    return ""

"""What the Cohere mock answers a validated chat request with: text or tool calls.

Mirrors the other dialects' mocks, so one conversation drives them alike: the same
text for the same last user text (the deterministic engine of
`providers.mock.text`); tool calls when tools are given and the last message is
user text saying "use tools", or `tool_choice: REQUIRED` asks for them (two at
most; Cohere has no switch for one). A turn calling tools opens with a
`tool_plan`, as Cohere's models write one. Tool arguments are an instance of the
tool's schema, and `response_format` JSON an instance of its `json_schema` (or a
small object), drawn from the same seeded RNG as the text. `stop_sequences` cut
the text where the first one appears (`STOP_SEQUENCE`). Tool-call ids are the
tool's name and a random suffix, as Cohere's are.

Usage counts words, as the other mocks do: the prompt over every message's text,
the answer in pieces (each one streamed delta). `tokens` and `billed_units` agree
here; the real API bills fewer input tokens than it counts (its prompt template).
"""

from __future__ import annotations

import json
import random
import secrets
import string
from dataclasses import dataclass
from typing import Any, Final

from providers.cohere.mock_request import ChatParams
from providers.mock.config import MockConfig
from providers.mock.pieces import split_pieces
from providers.mock.schema_json import tool_input
from providers.mock.text import (
    answer_rng,
    content_text,
    last_user_text,
    prompt_token_count,
)
from providers.mock.written import written_answer

__all__ = ["Answer", "ToolCall", "chat_response", "compose", "dumps", "usage"]

_SEPARATORS: Final = (",", ":")
_ID_ALPHABET: Final = string.ascii_lowercase + string.digits
# Words in the text a plain `json_object` answer wraps.
_REASONS: Final = {"complete": "COMPLETE", "length": "MAX_TOKENS", "stop_sequence": "STOP_SEQUENCE"}


def dumps(value: object) -> str:
    return json.dumps(value, separators=_SEPARATORS)


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str

    @property
    def fragments(self) -> list[str]:
        return split_pieces(self.arguments)


@dataclass(frozen=True, slots=True)
class Answer:
    pieces: list[str]  # text, or the tool plan of a turn calling tools
    tool_calls: list[ToolCall]
    finish_reason: str
    prompt_tokens: int

    @property
    def output_tokens(self) -> int:
        # A tool call's header (its name) counts as one, as a model emits it.
        return len(self.pieces) + sum(len(c.fragments) + 1 for c in self.tool_calls)


def compose(params: ChatParams, config: MockConfig) -> Answer:
    rng = answer_rng(params.messages, None)
    prompt = prompt_token_count(params.messages)
    tools = _tools_to_call(params)
    if tools:
        calls = [_tool_call(tool, rng) for tool in tools]
        names = " and ".join(c.name for c in calls)
        plan = split_pieces(f"I will use {names} to answer this.")
        return Answer(plan, calls, "TOOL_CALL", prompt)
    written = written_answer(
        rng,
        cap=config.max_tokens_default,
        max_tokens=params.max_tokens,
        stop=params.stop_sequences,
        schema=params.json_schema if params.json_object else None,
        json_object=params.json_object,
    )
    return Answer(written.pieces, [], _REASONS[written.ending], prompt)


def _tools_to_call(params: ChatParams) -> list[dict[str, Any]]:
    """The tools to call instead of answering with text (empty: answer with text)."""
    if not params.tools or params.tool_choice == "NONE":
        return []
    # A prompt saying "use tools" stands in for a model deciding to; once the last
    # message is a tool result, it answers with text, as a model would.
    last = params.messages[-1]
    asked = params.tool_choice == "REQUIRED" or (
        last.get("role") == "user"
        and bool(content_text(last.get("content")))
        and "use tools" in last_user_text(params.messages).lower()
    )
    return params.tools[:2] if asked else []


def _tool_call(tool: dict[str, Any], rng: random.Random) -> ToolCall:
    function = tool["function"]
    schema = function.get("parameters")
    arguments = tool_input(schema if isinstance(schema, dict) else {}, rng)
    suffix = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
    return ToolCall(f"{function['name']}_{suffix}", function["name"], dumps(arguments))


def usage(answer: Answer) -> dict[str, Any]:
    counts = {"input_tokens": answer.prompt_tokens, "output_tokens": answer.output_tokens}
    return {"billed_units": dict(counts), "tokens": dict(counts)}


def _text(answer: Answer, stamps: list[str] | None) -> str:
    return "".join(stamps if stamps is not None else answer.pieces)


def chat_response(answer: Answer, response_id: str, stamps: list[str] | None) -> dict[str, Any]:
    """A `POST /v2/chat` body; `stamps` replace the text pieces (`stamp_tokens`)."""
    message: dict[str, Any] = {"role": "assistant"}
    if answer.tool_calls:
        message["tool_plan"] = _text(answer, stamps)
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in answer.tool_calls
        ]
    elif answer.pieces:
        message["content"] = [{"type": "text", "text": _text(answer, stamps)}]
    else:
        message["content"] = []  # a stop sequence at once: nothing said
    return {
        "id": response_id,
        "message": message,
        "finish_reason": answer.finish_reason,
        "usage": usage(answer),
    }

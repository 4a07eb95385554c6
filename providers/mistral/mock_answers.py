"""What the mock answers a checked chat request with: choices, tool calls, usage.

Text is deterministic (fixed by the last user message and `random_seed`), from
the shared text engine, so every dialect cuts the same words at the same place;
tool-call ids are random 9-character letters and digits, as Mistral's are. A
choice's output is a list of pieces, each one streamed chunk and one counted
token: words for text, JSON fragments for structured outputs.

Mistral's chat answers carry no content-filter verdict (moderation is a separate
endpoint, and guardrails are opt-in per request), so the `filtered` faults change
nothing here.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Final

from providers.mistral.mock_request import ChatParams, ToolSpec
from providers.mock.config import MockConfig
from providers.mock.pieces import split_pieces
from providers.mock.text import answer_rng, last_user_text
from providers.mock.written import tool_arguments, written_answer

__all__ = ["Answer", "Choice", "ToolCall", "compose", "random_id"]

_ID_ALPHABET: Final = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    pieces: list[str]
    tool_calls: list[ToolCall]
    finish_reason: str

    @property
    def output_tokens(self) -> int:
        if self.tool_calls:  # a call's name and each argument fragment count as one
            return sum(len(split_pieces(c.arguments)) + 1 for c in self.tool_calls)
        return len(self.pieces)


@dataclass(frozen=True, slots=True)
class Answer:
    choices: list[Choice]
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return sum(c.output_tokens for c in self.choices)

    def usage(self) -> dict[str, int]:
        completion = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + completion,
            "completion_tokens": completion,
        }


def random_id(length: int = 9) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def compose(params: ChatParams, config: MockConfig) -> Answer:
    calls = _tools_to_call(params)
    choices = [_choice(params, config, index, calls) for index in range(params.n)]
    return Answer(choices, params.prompt_tokens)


def _choice(params: ChatParams, config: MockConfig, index: int, calls: list[ToolSpec]) -> Choice:
    rng = answer_rng(params.messages, params.seed)
    if index:
        # Choice 0 is what n=1 answers; the others differ, reproducibly.
        rng.seed(rng.getrandbits(64) + index)
    if calls:
        made = [ToolCall(random_id(), s.name, tool_arguments(s.parameters, rng)) for s in calls]
        return Choice(index, [], made, "tool_calls")
    written = written_answer(
        rng,
        cap=config.max_tokens_default,
        max_tokens=params.max_tokens,
        stop=params.stop,
        schema=params.schema if params.format == "json_schema" else None,
        json_object=params.format != "text",
    )
    return Choice(index, written.pieces, [], "length" if written.ending == "length" else "stop")


def _tools_to_call(params: ChatParams) -> list[ToolSpec]:
    """The functions to call instead of answering with text (empty: answer with text)."""
    choice = params.tool_choice
    if not params.tools or choice == "none":
        return []
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        return [next((t for t in params.tools if t.name == name), ToolSpec(name, {}))]
    # A prompt saying "use tools" stands in for a model deciding to; once a tool
    # result is the last message, it answers with text as a model would.
    last = params.messages[-1]
    asked = choice in ("any", "required") or (
        last.get("role") == "user" and "use tools" in last_user_text(params.messages).lower()
    )
    if not asked:
        return []
    return list(params.tools[:2] if params.parallel_tool_calls else params.tools[:1])

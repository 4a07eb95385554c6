"""What the mock answers a checked chat request with: choices, tool calls, usage.

Text is deterministic (fixed by the prompt and `seed`); tool-call ids are
random, as OpenAI's are, so a client can never rely on them repeating. A
choice's output is a list of pieces, each one streamed chunk and one counted
token: words for text, JSON fragments for structured outputs and arguments.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, replace
from typing import Final

from providers.mock.config import MockConfig
from providers.mock.faults import Fault, FilterFault
from providers.mock.pieces import split_pieces
from providers.mock.text import answer_rng, last_user_text
from providers.mock.written import tool_arguments, written_answer
from providers.openai.mock_request import ChatParams, ToolSpec
from providers.openai.models import is_reasoning_model

__all__ = ["Answer", "Choice", "ToolCall", "compose", "filtered", "random_id"]

_ID_ALPHABET: Final = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str

    @property
    def fragments(self) -> list[str]:
        return split_pieces(self.arguments)


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    pieces: list[str]
    tool_calls: list[ToolCall]
    finish_reason: str

    @property
    def output_tokens(self) -> int:
        if self.tool_calls:  # the header (name) counts as one, as a model emits it
            return sum(len(c.fragments) + 1 for c in self.tool_calls)
        return len(self.pieces)


@dataclass(frozen=True, slots=True)
class Answer:
    choices: list[Choice]
    prompt_tokens: int
    reasoning_tokens: int

    @property
    def visible_tokens(self) -> int:
        return sum(c.output_tokens for c in self.choices)

    @property
    def completion_tokens(self) -> int:
        return self.visible_tokens + self.reasoning_tokens


def compose(params: ChatParams, config: MockConfig) -> Answer:
    calls = _tools_to_call(params)
    choices = [_choice(params, config, index, calls) for index in range(params.n)]
    visible = sum(c.output_tokens for c in choices)
    # Reasoning models think before answering; the count is hidden text, billed.
    reasoning = 64 * (1 + visible // 16) if is_reasoning_model(params.model) else 0
    return Answer(choices, params.prompt_tokens, reasoning)


def filtered(answer: Answer, fault: Fault | None) -> Answer:
    """The answer as a `filtered` fault leaves it: cut after the fault's token count
    (nothing for a blocked prompt), no tool calls, finish `content_filter`."""
    if not isinstance(fault, FilterFault):
        return answer
    keep = fault.after or 0
    choices = [
        replace(c, pieces=c.pieces[:keep], tool_calls=[], finish_reason="content_filter")
        for c in answer.choices
    ]
    return replace(answer, choices=choices)


def _choice(params: ChatParams, config: MockConfig, index: int, calls: list[ToolSpec]) -> Choice:
    rng = answer_rng(params.messages, params.seed)
    if index:
        # Choice 0 is what n=1 answers; the others differ, reproducibly.
        rng.seed(rng.getrandbits(64) + index)
    if calls:
        made = [
            ToolCall(random_id("call_", 24), spec.name, tool_arguments(spec.parameters, rng))
            for spec in calls
        ]
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
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            return []
        return [next((t for t in params.tools if t.name == name), ToolSpec(name, {}))]
    # A prompt saying "use tools" stands in for a model deciding to; once a tool
    # result is the last message, it answers with text as a model would.
    last = params.messages[-1]
    asked = choice == "required" or (
        last.get("role") == "user" and "use tools" in last_user_text(params.messages).lower()
    )
    if not asked:
        return []
    return list(params.tools[:2] if params.parallel_tool_calls else params.tools[:1])


def random_id(prefix: str, length: int) -> str:
    """`prefix` and `length` random letters and digits, as OpenAI's ids are made."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))

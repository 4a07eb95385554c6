"""What the Anthropic mock answers a validated request with: text or tool calls.

Mirrors the OpenAI mock, so one conversation drives both alike: the same text
for the same last user text (the deterministic engine of `providers.mock.text`);
tool calls when tools are given and the last turn is user text saying "use
tools" (not only tool results), or `tool_choice` asks for them: two at most, one
with `disable_parallel_tool_use`. Tool input is an instance of the tool's
`input_schema`, and with `output_config.format` the text is an instance of its
schema, both drawn from the same seeded RNG as the text (so the OpenAI mock gives
the same values for the same schemas). `stop_sequences` cut the text where the
first one appears (`stop_reason: "stop_sequence"`). Tool-use ids are random, as
real ones.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Final

from providers.anthropic.mock_request import MessagesRequest
from providers.anthropic.mock_usage import CacheCharge, last_user_text
from providers.mock.app import new_id, stamp
from providers.mock.config import MockConfig
from providers.mock.faults import Fault, FilterFault
from providers.mock.schema_json import tool_input
from providers.mock.text import answer_rng, content_text
from providers.mock.written import written_answer

__all__ = ["Answer", "ToolUse", "compose", "dumps", "message_body", "split"]

_SEPARATORS: Final = (",", ":")


def dumps(value: object) -> str:
    return json.dumps(value, separators=_SEPARATORS)


_STOP_REASONS: Final = {
    "complete": "end_turn",
    "length": "max_tokens",
    "stop_sequence": "stop_sequence",
}


@dataclass(frozen=True, slots=True)
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    tokens: list[str]
    tool_uses: list[ToolUse]
    stop_reason: str
    output_tokens: int
    stop_sequence: str | None = None


def _tools_to_call(req: MessagesRequest) -> list[dict[str, Any]]:
    """The tools to call instead of answering with text (empty: answer with text)."""
    tools = req.tools
    choice = req.tool_choice or {"type": "auto"}
    if not tools or choice["type"] == "none":
        return []
    if choice["type"] == "tool":
        return [t for t in tools if t["name"] == choice["name"]][:1]
    # A prompt saying "use tools" stands in for a model deciding to; once the last
    # turn only carries tool results, it answers with text, as a model would.
    last = req.messages[-1]
    asked = choice["type"] == "any" or (
        last["role"] == "user"
        and bool(content_text(last.get("content")))
        and "use tools" in last_user_text(req.messages).lower()
    )
    if not asked:
        return []
    return tools[:1] if choice.get("disable_parallel_tool_use") is True else tools[:2]


def split(arguments: str) -> list[str]:
    """Three fragments (fewer for tiny strings), so clients must concatenate."""
    cut = max(len(arguments) // 3, 1)
    parts = [arguments[:cut], arguments[cut : 2 * cut], arguments[2 * cut :]]
    return [p for p in parts if p]


def refused(answer: Answer, fault: Fault | None) -> Answer:
    """The answer as a `filtered` fault leaves it: Claude's safety classifier stops it
    after the fault's token count (at once for a refused prompt), `stop_reason: refusal`."""
    if not isinstance(fault, FilterFault):
        return answer
    tokens = answer.tokens[: fault.after or 0]
    return Answer(tokens, [], "refusal", len(tokens))


def compose(req: MessagesRequest, config: MockConfig) -> Answer:
    rng = answer_rng([{"role": "user", "content": last_user_text(req.messages)}], None)
    tools = _tools_to_call(req)
    if tools:
        uses = [_tool_use(tool, rng) for tool in tools]
        cost = sum(len(split(dumps(u.input))) + 1 for u in uses)
        return Answer([], uses, "tool_use", cost)
    written = written_answer(
        rng,
        cap=config.max_tokens_default,
        max_tokens=req.max_tokens,
        stop=req.stop_sequences,
        schema=req.output_schema,
    )
    stop = _STOP_REASONS[written.ending]
    return Answer(written.pieces, [], stop, len(written.pieces), written.stop_sequence)


def _tool_use(tool: dict[str, Any], rng: random.Random) -> ToolUse:
    schema = tool.get("input_schema")
    arguments = tool_input(schema if isinstance(schema, dict) else {}, rng)
    return ToolUse(new_id("toolu_"), tool["name"], arguments)


def _content(answer: Answer, config: MockConfig) -> list[dict[str, Any]]:
    if answer.tool_uses:
        return [
            {"type": "tool_use", "id": u.id, "name": u.name, "input": u.input}
            for u in answer.tool_uses
        ]
    if not answer.tokens:
        return []  # as the API sends a turn that said nothing (a stop sequence at once)
    tokens = [stamp() for _ in answer.tokens] if config.stamp_tokens else answer.tokens
    return [{"type": "text", "text": "".join(tokens)}]


def message_body(
    model: str, answer: Answer, charge: CacheCharge, config: MockConfig
) -> dict[str, Any]:
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _content(answer, config),
        "stop_reason": answer.stop_reason,
        "stop_sequence": answer.stop_sequence,
        "usage": charge.usage(answer.output_tokens),
    }

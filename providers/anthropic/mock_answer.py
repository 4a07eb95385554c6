"""What the Anthropic mock answers a validated request with: text or tool calls.

Mirrors the OpenAI mock, so one conversation drives both alike: the same text
for the same last user text (the deterministic engine of `providers.mock.text`);
tool calls when tools are given and the last turn is user text saying "use
tools" (not only tool results), or `tool_choice` asks for them: two at most, one
with `disable_parallel_tool_use`. Tool input is `{"query": <word>}` whatever the
schema (the OpenAI mock fills the schema). Tool-use ids are random, as real ones.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Final

from providers.anthropic.mock_request import MessagesRequest
from providers.anthropic.mock_usage import CacheCharge, last_user_text
from providers.mock.app import new_id
from providers.mock.config import MockConfig
from providers.mock.text import WORDS, answer_rng, answer_tokens, content_text

__all__ = ["Answer", "ToolUse", "compose", "dumps", "message_body", "split", "stamp"]

_SEPARATORS: Final = (",", ":")


def dumps(value: object) -> str:
    return json.dumps(value, separators=_SEPARATORS)


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


def _tool_names(req: MessagesRequest) -> list[str]:
    """The tools to call instead of answering with text (empty: answer with text)."""
    names = [t["name"] for t in req.tools]
    choice = req.tool_choice or {"type": "auto"}
    if not names or choice["type"] == "none":
        return []
    if choice["type"] == "tool":
        return [choice["name"]]
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
    return names[:1] if choice.get("disable_parallel_tool_use") is True else names[:2]


def split(arguments: str) -> list[str]:
    """Three fragments (fewer for tiny strings), so clients must concatenate."""
    cut = max(len(arguments) // 3, 1)
    parts = [arguments[:cut], arguments[cut : 2 * cut], arguments[2 * cut :]]
    return [p for p in parts if p]


def compose(req: MessagesRequest, config: MockConfig) -> Answer:
    rng = answer_rng([{"role": "user", "content": last_user_text(req.messages)}], None)
    names = _tool_names(req)
    if names:
        uses = [ToolUse(new_id("toolu_"), n, {"query": rng.choice(WORDS)}) for n in names]
        cost = sum(len(split(dumps(u.input))) + 1 for u in uses)
        return Answer([], uses, "tool_use", cost)
    count = min(req.max_tokens, config.max_tokens_default)
    stop = "max_tokens" if count < config.max_tokens_default else "end_turn"
    return Answer(answer_tokens(rng, count), [], stop, count)


def stamp() -> str:
    return f" t{time.time_ns()}"


def _content(answer: Answer, config: MockConfig) -> list[dict[str, Any]]:
    if answer.tool_uses:
        return [
            {"type": "tool_use", "id": u.id, "name": u.name, "input": u.input}
            for u in answer.tool_uses
        ]
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
        "stop_sequence": None,
        "usage": charge.usage(answer.output_tokens),
    }

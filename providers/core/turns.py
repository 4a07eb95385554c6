"""Conversation turns for APIs that take alternating roles (Anthropic, Bedrock Converse,
Gemini): two turns of one role in a row are refused there, and so is an empty turn."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from contracts.jobs import Message

__all__ = ["append_turn", "user_assistant_turns"]


def append_turn(turns: list[dict[str, Any]], role: str, key: str, items: list[Any]) -> None:
    """Add `items` (content blocks or parts, under `key`) as a turn of `role`: merged
    into the last turn when it has the same role, left out when there are none (its
    neighbours stay in order)."""
    if not items:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key].extend(items)
    else:
        turns.append({"role": role, key: items})


def user_assistant_turns(
    messages: Sequence[Message], blocks: Callable[[Message, int], list[Any]]
) -> list[dict[str, Any]]:
    """`{"role", "content"}` turns as Anthropic and Bedrock Converse take them: system
    and developer messages left out (both APIs take them apart), tool results in user
    turns, `blocks(message, index)` the content of each."""
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        if msg.role in ("system", "developer"):
            continue
        role = "assistant" if msg.role == "assistant" else "user"
        append_turn(turns, role, "content", blocks(msg, i))
    return turns

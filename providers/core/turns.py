"""Conversation turns for APIs that take alternating roles (Anthropic, Bedrock Converse,
Gemini): two turns of one role in a row are refused there, and so is an empty turn."""

from __future__ import annotations

from typing import Any

__all__ = ["append_turn"]


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

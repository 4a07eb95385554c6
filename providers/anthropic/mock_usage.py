"""Token counts for the Anthropic mock: prompt words and a small prompt cache.

Prompt tokens are words, counted over the same text the OpenAI mock counts (the
system prompt, text blocks, tool results; not tool definitions nor tool inputs),
so one conversation costs the same in both dialects.

The prompt cache follows the real API's accounting on a simple model: the prefix
up to the last block marked `cache_control` (tools, then system, then messages)
is written on first sight (`cache_creation_input_tokens`) and read afterwards
(`cache_read_input_tokens`) until its TTL (`5m` or `1h`) passes, each read
refreshing it; `input_tokens` is the rest. Unlike the real API there is no
minimum cacheable length and only the last breakpoint is looked up.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from providers.anthropic.mock_request import MessagesRequest
from providers.mock.text import content_text

__all__ = ["CacheCharge", "PromptCache", "prompt_tokens"]

_TTL_SECONDS: Final[Mapping[str, float]] = {"5m": 300.0, "1h": 3600.0}
_CAPACITY: Final = 10_000  # prefixes remembered per process; the oldest go first


def _block_words(block: Mapping[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return len(str(block.get("text", "")).split())
    if kind == "tool_result":
        return len(content_text(block.get("content")).split())
    return 0


def _blocks(req: MessagesRequest) -> Iterator[Mapping[str, Any]]:
    """Every block of the prompt in the API's cache order: tools, system, messages."""
    yield from req.tools
    yield from req.system
    for message in req.messages:
        content = message.get("content")
        if isinstance(content, str):
            yield {"type": "text", "text": content}
        elif isinstance(content, list):
            yield from content


def prompt_tokens(req: MessagesRequest) -> int:
    return max(sum(_block_words(b) for b in _blocks(req)), 1)


@dataclass(frozen=True, slots=True)
class CacheCharge:
    """How a request's prompt splits between the cache and fresh input."""

    input_tokens: int
    created: int = 0
    read: int = 0
    ttl: str = "5m"

    def usage(self, output_tokens: int) -> dict[str, Any]:
        """A `usage` object as the Messages API sends it."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.created,
            "cache_read_input_tokens": self.read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.created if self.ttl == "5m" else 0,
                "ephemeral_1h_input_tokens": self.created if self.ttl == "1h" else 0,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }


@dataclass(frozen=True, slots=True)
class _Breakpoint:
    key: str
    tokens: int
    ttl: str


def _last_breakpoint(req: MessagesRequest) -> _Breakpoint | None:
    digest = hashlib.blake2b(req.model.encode(), digest_size=16)
    tokens = 0
    found: _Breakpoint | None = None
    for block in _blocks(req):
        marker = block.get("cache_control")
        plain = {k: v for k, v in block.items() if k != "cache_control"}
        digest.update(json.dumps(plain, sort_keys=True).encode())
        tokens += _block_words(block)
        if isinstance(marker, dict):
            ttl = marker.get("ttl", "5m")
            found = _Breakpoint(digest.hexdigest(), tokens, ttl if ttl in _TTL_SECONDS else "5m")
    return found


class PromptCache:
    """Cached prefixes and their expiry times (per process, like the mock's stats)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def charge(self, owner: str, req: MessagesRequest, prompt: int) -> CacheCharge:
        point = _last_breakpoint(req)
        if point is None:
            return CacheCharge(input_tokens=prompt)
        key = f"{owner}\x00{point.key}"
        now = self._clock()
        hit = self._expiry.get(key, 0.0) > now
        self._expiry[key] = now + _TTL_SECONDS[point.ttl]
        self._expiry.move_to_end(key)
        while len(self._expiry) > _CAPACITY:
            self._expiry.popitem(last=False)
        cached = min(point.tokens, prompt)
        rest = prompt - cached
        if hit:
            return CacheCharge(input_tokens=rest, read=cached, ttl=point.ttl)
        return CacheCharge(input_tokens=rest, created=cached, ttl=point.ttl)


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The newest user text, skipping turns that only carry tool results, so the
    answer is drawn from the same text the OpenAI mock uses (its tool results are
    `tool` messages, not user turns)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = content_text(message.get("content"))
            if text:
                return text
    return ""

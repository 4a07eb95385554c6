"""Reading the router's chat answers: OpenAI's parsers, with TGI's words.

The router relays each upstream's OpenAI-compatible answer. What differs from
OpenAI's own:

* TGI said `eos_token` for a natural end (newer versions say `stop`) and says
  `stop_sequence` for a stop sequence: both are `stop` in the fleet's words.
* Errors inside a stream (or in a 200 body) are `{"error": "text", "error_type":
  "overloaded"}` from TGI, or `{"error": {"message", "type", "code"}}` from other
  upstreams: read with the router's own table, `error_type` included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from providers.core.types import ChatResult, Secret, StreamEvent
from providers.huggingface.errors import ERRORS
from providers.openai.parse import StreamState, parse_chat_response

__all__ = ["HuggingFaceStreamState", "finish_reason", "parse_chat"]

_FINISH_REASONS: Final[Mapping[str, str]] = {"eos_token": "stop", "stop_sequence": "stop"}


def finish_reason(reason: str | None) -> str | None:
    """A finish reason in the fleet's (OpenAI's) words."""
    return _FINISH_REASONS.get(reason, reason) if reason is not None else None


def parse_chat(provider: str, payload: Mapping[str, Any], secret: Secret) -> ChatResult:
    """`ChatResult` from a chat completion body; an error body is raised."""
    if payload.get("error"):
        raise ERRORS.from_payload(provider, payload, secret, context="error body")
    result = parse_chat_response(provider, payload)
    reason = finish_reason(result.finish_reason)
    return result if reason == result.finish_reason else replace(result, finish_reason=reason)


class HuggingFaceStreamState(StreamState):
    """OpenAI's stream state reading the router's in-stream errors and TGI's finish
    reasons. The whole event goes to the error table: TGI's `error_type` is beside
    `error`, not inside it."""

    __slots__ = ("_name", "_scrub")

    def __init__(self, provider: str, secret: Secret) -> None:
        super().__init__(provider, secret)
        self._name = provider
        self._scrub = secret

    def _chunk(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if chunk.get("error"):
            raise ERRORS.from_payload(self._name, chunk, self._scrub)
        return super()._chunk(chunk)

    def _choice(self, choice: dict[str, Any]) -> list[StreamEvent]:
        events = super()._choice(choice)
        self.finish_reason = finish_reason(self.finish_reason)
        return events

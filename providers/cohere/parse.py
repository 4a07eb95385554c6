"""Reading Cohere v2 chat answers: whole responses and SSE streams.

* Text is the `text` items of `message.content` (`thinking` items are not the
  answer). A turn that calls tools has its words in `message.tool_plan` ("I will
  look up …"), returned as that turn's text, as the words Claude writes before a
  tool call are; streamed, `tool-plan-delta` and `content-delta` are both text.
* Finish reasons in the fleet's words: `COMPLETE` and `STOP_SEQUENCE` are "stop",
  `MAX_TOKENS` "length", `TOOL_CALL` "tool_calls". `ERROR` (in a stream: a
  `message-end` whose `delta.error` says what failed) is raised through `ERRORS`,
  `TIMEOUT` as `ProviderTimeout`, the v1-era `ERROR_TOXIC` as `ContentFiltered`.
* Usage is `usage.tokens`, what the model read and wrote, Cohere's own prompt
  template included, as every other provider counts it (and what fills a context
  window); `usage.billed_units` leaves the template out and is used only when
  `tokens` is missing. `cached_tokens` is `Usage.cached_input_tokens`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from contracts.errors import (
    ContentFiltered,
    FleetError,
    InternalError,
    ProviderTimeout,
    ProviderUnavailable,
)
from contracts.frames import ToolCallDelta, Usage
from contracts.jobs import Message, ToolCall
from providers.cohere.errors import ERRORS
from providers.core.sse import ServerSentEvent
from providers.core.types import (
    ChatResult,
    Secret,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolDelta,
)

__all__ = ["StreamState", "finish_reason", "parse_chat_response", "usage_of"]

_FINISH: Final[Mapping[str, str]] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
_FAILED: Final = frozenset({"ERROR", "TIMEOUT", "ERROR_TOXIC"})

# Once per streamed token: msgspec builds the same dicts in a third of json.loads' time.
_decode_event = msgspec.json.Decoder().decode


def finish_reason(raw: Any) -> str | None:
    if not isinstance(raw, str) or not raw:
        return None
    return _FINISH.get(raw, raw.lower())


def usage_of(raw: Any) -> Usage:
    """`Usage` from a chat `usage` object (see the module docstring)."""
    if not isinstance(raw, Mapping):
        return Usage()
    counts = raw.get("tokens")
    if not isinstance(counts, Mapping) or counts.get("input_tokens") is None:
        counts = raw.get("billed_units")
    if not isinstance(counts, Mapping):
        counts = {}
    prompt = _count(counts.get("input_tokens")) or 0
    output = _count(counts.get("output_tokens")) or 0
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        total_tokens=prompt + output,
        cached_input_tokens=_count(raw.get("cached_tokens")),
    )


def _count(value: Any) -> int | None:
    # The API's schema says numbers, and floats have been seen for whole counts.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def failure(provider: str, reason: str, detail: Any, secret: Secret) -> FleetError:
    """The error for a generation Cohere says failed (`finish_reason` in `_FAILED`)."""
    if reason == "TIMEOUT":
        return ProviderTimeout(
            f"{provider}: the generation exceeded Cohere's time limit (finish_reason TIMEOUT)"
        )
    if reason == "ERROR_TOXIC":
        return ContentFiltered(
            f"{provider}: the answer was withheld as toxic (finish_reason ERROR_TOXIC)"
        )
    message = detail if isinstance(detail, str) and detail else "the generation failed"
    return ERRORS.from_payload(provider, {"message": message}, secret)


def _arguments(raw: Any) -> str:
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":"))


def parse_chat_response(provider: str, payload: Mapping[str, Any], secret: Secret) -> ChatResult:
    """`ChatResult` from a `POST /v2/chat` body."""
    reason = payload.get("finish_reason")
    if reason in _FAILED:
        raise failure(provider, reason, payload.get("error"), secret)
    message = payload.get("message")
    if isinstance(message, str):  # an error body (`{"id", "message"}`) behind a 200
        raise ERRORS.from_payload(provider, payload, secret, context="error body")
    if not isinstance(message, Mapping):
        raise InternalError(f"{provider}: response has no message")
    try:
        texts = [
            item["text"]
            for item in message.get("content") or ()
            if item.get("type") == "text" and isinstance(item.get("text"), str)
        ]
        calls = [
            ToolCall(
                id=str(call.get("id") or f"call_{i}"),
                name=str((call.get("function") or {}).get("name") or ""),
                arguments=_arguments((call.get("function") or {}).get("arguments")),
            )
            for i, call in enumerate(message.get("tool_calls") or ())
        ]
    except (AttributeError, TypeError, KeyError):
        raise InternalError(f"{provider}: malformed chat response") from None
    plan = message.get("tool_plan") if calls else None
    text = (plan if isinstance(plan, str) else "") + "".join(texts)
    return ChatResult(
        message=Message(
            role="assistant",
            content=text if text or not calls else None,
            tool_calls=calls or None,
        ),
        finish_reason=finish_reason(reason),
        usage=usage_of(payload.get("usage")),
    )


class StreamState:
    """One stream's bookkeeping: tool-call positions, the finish reason and usage.

    Events are told apart by the `type` inside their data (the `event:` line says
    the same). `message-end` is the end marker; a `[DONE]` after it is tolerated,
    and so is a bare JSON line (Cohere's v1 streams were newline-delimited JSON): an
    error body written into the stream that way is raised like any other.
    """

    __slots__ = ("_provider", "_secret", "_tools", "done", "finish_reason", "usage")

    def __init__(self, provider: str, secret: Secret) -> None:
        self._provider = provider
        self._secret = secret
        # Cohere's tool-call `index` → the fleet's (position among this turn's calls).
        self._tools: dict[int, int] = {}
        self.done = False
        self.finish_reason: str | None = None
        self.usage = Usage()

    def feed(self, sse: ServerSentEvent) -> list[StreamEvent]:
        if sse.data == "[DONE]":
            self.done = True
            return []
        try:
            data = _decode_event(sse.data)
            return self._event(data.get("type") or sse.event, data)
        except (ValueError, AttributeError, TypeError, KeyError):  # DecodeError is a ValueError
            raise ProviderUnavailable(f"{self._provider}: malformed stream event") from None

    def _event(self, kind: str, data: dict[str, Any]) -> list[StreamEvent]:
        if kind == "content-delta":
            text = data["delta"]["message"]["content"].get("text")
            return [TextDelta(text)] if text else []
        if kind == "tool-call-delta":
            arguments = data["delta"]["message"]["tool_calls"]["function"].get("arguments")
            if not arguments:
                return []
            return [ToolDelta(ToolCallDelta(index=self._tools[data["index"]], arguments=arguments))]
        if kind == "tool-plan-delta":
            plan = data["delta"]["message"].get("tool_plan")
            return [TextDelta(plan)] if plan else []
        if kind == "tool-call-start":
            return [self._tool_start(data["index"], data["delta"]["message"]["tool_calls"])]
        if kind == "content-start":
            text = data["delta"]["message"]["content"].get("text")
            return [TextDelta(text)] if text else []
        if kind == "message-end":
            self._end(data.get("delta") or {})
        elif "message" in data and "delta" not in data:
            # An error body (`{"id", "message"}`) where an event should be.
            raise ERRORS.from_payload(self._provider, data, self._secret)
        # message-start, content-end, tool-call-end, citation-*, debug: nothing to pass on.
        return []

    def _tool_start(self, index: int, call: dict[str, Any]) -> StreamEvent:
        position = self._tools[index] = len(self._tools)
        function = call.get("function") or {}
        return ToolDelta(
            ToolCallDelta(
                index=position,
                id=call.get("id") or None,
                name=function.get("name") or None,
                arguments=_arguments(function.get("arguments")),
            )
        )

    def _end(self, delta: dict[str, Any]) -> None:
        reason = delta.get("finish_reason")
        if delta.get("error") and reason not in _FAILED:
            reason = "ERROR"  # an error said is an error, whatever the reason claims
        if reason in _FAILED:
            raise failure(self._provider, reason, delta.get("error"), self._secret)
        self.finish_reason = finish_reason(reason)
        self.usage = usage_of(delta.get("usage"))
        self.done = True

    def end(self) -> StreamEnd:
        return StreamEnd(finish_reason=self.finish_reason, usage=self.usage)

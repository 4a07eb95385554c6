"""Reading OpenAI-dialect answers: completion bodies, chunk streams, embeddings.

See the `providers.openai.adapter` docstring for the servers' variations this
accepts and what it makes of refusals, extra choices and content filters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from contracts.errors import ContentFiltered, InternalError, ProviderUnavailable
from contracts.frames import ToolCallDelta, Usage
from contracts.jobs import Message, ToolCall
from providers.core.packing import pack_rows, vector_bytes
from providers.core.sse import ServerSentEvent
from providers.core.types import (
    ChatResult,
    EmbedResult,
    RefusalDelta,
    Secret,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolDelta,
)
from providers.openai.errors import ERRORS

__all__ = ["StreamState", "parse_chat_response", "parse_embeddings"]

_FILTERED: Final = "content_filter"

# Once per streamed token: msgspec's JSON decoder builds the same dicts in about a
# third of json.loads' time.
_decode_event = msgspec.json.Decoder().decode


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt = raw.get("prompt_tokens") or 0
    completion = raw.get("completion_tokens") or 0
    total = raw.get("total_tokens") or prompt + completion
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        total_tokens=total,
        cached_input_tokens=_detail(raw, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=_detail(raw, "completion_tokens_details", "reasoning_tokens"),
    )


def _detail(usage: dict[str, Any], group: str, name: str) -> int | None:
    details = usage.get(group)
    value = details.get(name) if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _arguments(raw: Any) -> str:
    if raw is None:
        return ""  # vLLM's tool-call header carries no `arguments` at all
    if isinstance(raw, str):
        return raw
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":"))  # Ollama-style objects


def _content_text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return None


def _filtered(provider: str) -> ContentFiltered:
    return ContentFiltered(
        f"{provider}: the answer was withheld by the provider's content filter "
        "(finish_reason content_filter)"
    )


def _choice_zero(choices: list[Any]) -> dict[str, Any] | None:
    """Choice 0 by its `index`; servers need not list choices in order."""
    listed = [c for c in choices if isinstance(c, dict)]
    return next((c for c in listed if c.get("index", 0) == 0), listed[0] if listed else None)


def parse_chat_response(provider: str, payload: Mapping[str, Any]) -> ChatResult:
    """`ChatResult` from a non-streaming chat completion body."""
    choices = payload.get("choices")
    choice = _choice_zero(choices) if isinstance(choices, list) else None
    if choice is None:
        raise InternalError(f"{provider}: response has no choices")
    try:
        result = _chat_result(choice, payload.get("usage"))
    except (AttributeError, TypeError):
        raise InternalError(f"{provider}: malformed chat completion") from None
    if result.finish_reason == _FILTERED:
        raise _filtered(provider)
    return result


def _chat_result(choice: dict[str, Any], usage: Any) -> ChatResult:
    raw = choice.get("message") or {}
    calls = [
        ToolCall(
            id=c.get("id") or f"call_{i}",
            name=(c.get("function") or {}).get("name") or "",
            arguments=_arguments((c.get("function") or {}).get("arguments")),
        )
        for i, c in enumerate(raw.get("tool_calls") or [])
    ]
    refusal = raw.get("refusal")
    message = Message(
        role="assistant",
        content=_content_text(raw.get("content")),
        tool_calls=calls or None,
        refusal=refusal if isinstance(refusal, str) and refusal else None,
    )
    return ChatResult(
        message=message, finish_reason=choice.get("finish_reason"), usage=_usage(usage)
    )


def parse_embeddings(provider: str, payload: Mapping[str, Any], *, expected: int) -> EmbedResult:
    """Packed little-endian float32 rows, ordered by `index`, from an embeddings body."""
    items = payload.get("data")
    if not isinstance(items, list):
        raise InternalError(f"{provider}: expected {expected} embeddings, got 0")
    ordered = sorted(enumerate(items), key=lambda pair: _index(pair[1], pair[0]))
    # A server ignoring encoding_format=base64 (e.g. Ollama) sends numbers instead.
    rows = [
        vector_bytes(provider, item.get("embedding") if isinstance(item, dict) else None)
        for _, item in ordered
    ]
    usage = _usage(payload.get("usage"))
    usage = Usage(input_tokens=usage.input_tokens, total_tokens=usage.total_tokens)
    return pack_rows(provider, rows, expected=expected, usage=usage)


def _index(item: Any, position: int) -> int:
    index = item.get("index") if isinstance(item, dict) else None
    return index if isinstance(index, int) else position


class StreamState:
    """Per-stream bookkeeping: finish reason, usage, tool-call indexes, [DONE].

    Dialects extending OpenAI's override `_chunk` (one decoded chunk) and `_choice`
    (one of its choices) and call up: `providers.azure.parse.AzureStreamState`
    reads Azure's filter verdicts there, so keep those two names and signatures.
    """

    __slots__ = (
        "_ids",
        "_last_index",
        "_next_index",
        "_provider",
        "_secret",
        "done",
        "finish_reason",
        "usage",
    )

    def __init__(self, provider: str, secret: Secret) -> None:
        self._provider = provider
        self._secret = secret
        self.done = False
        self.finish_reason: str | None = None
        self.usage = Usage()
        # Only used for servers that omit `index` on tool-call deltas.
        self._ids: dict[str, int] = {}
        self._next_index = 0
        self._last_index = 0

    def feed(self, sse: ServerSentEvent) -> list[StreamEvent]:
        data = sse.data
        if data == "[DONE]":
            self.done = True
            return []
        try:
            return self._chunk(_decode_event(data))
        except (ValueError, AttributeError, TypeError, msgspec.DecodeError):
            # Not JSON, or JSON of the wrong shape (a dict where we expect one).
            raise ProviderUnavailable(f"{self._provider}: malformed stream event") from None

    def _chunk(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        error = chunk.get("error")
        if error:
            raise ERRORS.from_payload(self._provider, error, self._secret)
        usage = chunk.get("usage")
        if usage:
            self.usage = _usage(usage)
        # Azure's first chunk has no choices (only prompt_filter_results); the usage
        # chunk has none either. A chunk holds at most one delta per choice.
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                return self._choice(choice)
        return []

    def _choice(self, choice: dict[str, Any]) -> list[StreamEvent]:
        reason = choice.get("finish_reason")
        if reason:
            if reason == _FILTERED:
                raise _filtered(self._provider)
            self.finish_reason = reason
        delta = choice.get("delta")
        if not delta:
            return []
        out: list[StreamEvent] = []
        text = delta.get("content")
        if text:
            out.append(TextDelta(text))
        refusal = delta.get("refusal")
        if refusal:
            out.append(RefusalDelta(refusal))
        calls = delta.get("tool_calls")
        if calls:
            out.extend(ToolDelta(self._tool_delta(call)) for call in calls)
        return out

    def _tool_delta(self, call: dict[str, Any]) -> ToolCallDelta:
        function = call.get("function") or {}
        call_id = call.get("id") or None
        index = call.get("index")
        if not isinstance(index, int):
            index = self._infer_index(call_id)
        self._next_index = max(self._next_index, index + 1)
        self._last_index = index
        return ToolCallDelta(
            index=index,
            id=call_id,
            name=function.get("name") or None,
            arguments=_arguments(function.get("arguments")),
        )

    def _infer_index(self, call_id: str | None) -> int:
        if call_id is None:
            return self._last_index  # a continuation of the current call
        if call_id not in self._ids:
            self._ids[call_id] = self._next_index
        return self._ids[call_id]

    def end(self) -> StreamEnd:
        return StreamEnd(finish_reason=self.finish_reason, usage=self.usage)

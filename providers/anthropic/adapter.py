"""Adapter for Anthropic's Messages API (`POST /v1/messages`, `GET /v1/models`).

Reproduced: `x-api-key` and `anthropic-version` headers; the system prompt as the
top-level `system`; user and assistant turns that alternate, made of content
blocks (`tool_use`, `tool_result`, images by base64 or URL); the stream's
`message_start` / `content_block_*` / `message_delta` / `message_stop` events,
`ping` and `error`; the error vocabulary including 529 `overloaded_error`.

Choices:
* `Usage.input_tokens` counts every prompt token, cached or not, as OpenAI's
  `prompt_tokens` does: Anthropic's `input_tokens` leaves out the tokens read from
  (`cache_read_input_tokens`) and written to (`cache_creation_input_tokens`) the
  prompt cache, so the three are added; the two cache counts are also reported apart.
* Finish reasons in the fleet's (OpenAI's) words: `end_turn`/`stop_sequence` are
  "stop", `max_tokens`/`model_context_window_exceeded` "length", `tool_use`
  "tool_calls"; anything else (`pause_turn`) as sent. A `refusal` (the safety
  classifier stopped the answer) is raised as `ContentFiltered`, as the other
  providers' content filters are.
* `seed`, `frequency_penalty` and `presence_penalty` have no Anthropic equivalent
  and are not sent. Thinking blocks are not part of the answer text.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, Final

import httpx
import msgspec

from contracts.errors import ProviderUnavailable, QuotaExceeded
from contracts.frames import ToolCallDelta, Usage
from providers.anthropic.mapping import (
    compact_json,
    finish_reason,
    messages_body,
    parse_message,
    refusal_error,
    usage_of,
)
from providers.core.api import ApiClient, sse_chat_stream
from providers.core.auth import HeaderAuth, header_value
from providers.core.errors import ErrorTable
from providers.core.spec import ProviderContext
from providers.core.sse import ServerSentEvent
from providers.core.types import (
    ChatRequest,
    ChatResult,
    Secret,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolDelta,
    VerifyResult,
)

__all__ = ["ANTHROPIC_VERSION", "ERRORS", "Anthropic"]

# The API version every request must name; a credential's `anthropic_version` wins.
ANTHROPIC_VERSION: Final = "2023-06-01"

# Anthropic's documented error types. In-stream `error` events carry no HTTP
# status, so the status comes from the type.
ERRORS = ErrorTable(
    statuses={
        "invalid_request_error": 400,
        "authentication_error": 401,
        "billing_error": 402,
        "permission_error": 403,
        "not_found_error": 404,
        "request_too_large": 413,
        "rate_limit_error": 429,
        "api_error": 500,
        "timeout_error": 504,
        "overloaded_error": 529,
    },
    classes={
        "billing_error": QuotaExceeded,
        "overloaded_error": ProviderUnavailable,
    },
)


class Anthropic:
    """Chat, stream, tools and verify over the Messages API.

    Credential fields: `api_key` (sent as `x-api-key`), optional `base_url`,
    `anthropic_version` (default `ANTHROPIC_VERSION`) and `anthropic_beta`
    (comma-separated beta names, sent as `anthropic-beta`).
    """

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._api = ApiClient(context.name, context.http, context.base_url, self._auth, ERRORS)

    def _auth(self, secret: Secret) -> httpx.Auth:
        version = (secret.get("anthropic_version") or "").strip() or ANTHROPIC_VERSION
        headers = {"anthropic-version": header_value(self.name, "anthropic_version", version)}
        for header, field in (("x-api-key", "api_key"), ("anthropic-beta", "anthropic_beta")):
            value = secret.get(field) or ""
            if value.strip():
                headers[header] = header_value(self.name, field, value)
        return HeaderAuth(headers)

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        body = messages_body(self.name, req, stream=False)
        payload = await self._api.json("POST", "/messages", secret, body)
        if payload.get("type") == "error":  # an error behind a 200, as some proxies send
            raise ERRORS.from_payload(self.name, payload, secret, context="error body")
        return parse_message(self.name, payload)

    def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncGenerator[StreamEvent, None]:
        return sse_chat_stream(
            self._api,
            "/messages",
            secret,
            lambda: messages_body(self.name, req, stream=True),
            _StreamState(self.name, secret),
            end_marker="message_stop",
        )

    async def verify(self, secret: Secret) -> VerifyResult:
        return await self._api.verify("/models", secret, _models_visible)


def _models_visible(payload: dict[str, Any]) -> str:
    data = payload.get("data")
    more = "+" if payload.get("has_more") is True else ""  # the list is paged
    return f"{len(data) if isinstance(data, list) else 0}{more} models visible"


# Once per streamed token: msgspec builds the same dicts in a third of json.loads' time.
_decode_event = msgspec.json.Decoder().decode


class _StreamState:
    """One stream's bookkeeping: tool positions, cumulative usage, stop reason, end."""

    __slots__ = ("_provider", "_secret", "_tools", "_usage", "done", "finish_reason")

    def __init__(self, provider: str, secret: Secret) -> None:
        self._provider = provider
        self._secret = secret
        # Content-block index → position among the tool_use blocks (the fleet's index).
        self._tools: dict[int, int] = {}
        self._usage: dict[str, Any] = {}
        self.done = False
        self.finish_reason: str | None = None

    def feed(self, sse: ServerSentEvent) -> list[StreamEvent]:
        if sse.event == "ping":
            return []
        try:
            data = _decode_event(sse.data)
            return self._event(data.get("type") or sse.event, data)
        except (ValueError, AttributeError, TypeError, KeyError):  # DecodeError is a ValueError
            raise ProviderUnavailable(f"{self._provider}: malformed stream event") from None

    def _event(self, kind: str, data: dict[str, Any]) -> list[StreamEvent]:
        if kind == "content_block_delta":
            return self._delta(data["index"], data["delta"])
        if kind == "content_block_start":
            return self._block_start(data["index"], data["content_block"])
        if kind == "message_start":
            self._merge_usage(data["message"].get("usage"))
        elif kind == "message_delta":
            stop_reason = data["delta"].get("stop_reason")
            if stop_reason == "refusal":
                raise refusal_error(self._provider)
            self.finish_reason = finish_reason(stop_reason)
            self._merge_usage(data.get("usage"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise ERRORS.from_payload(self._provider, data, self._secret)
        # content_block_stop and event types added later carry nothing we use.
        return []

    def _block_start(self, index: int, block: dict[str, Any]) -> list[StreamEvent]:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            return [TextDelta(block["text"])]
        if kind != "tool_use":
            return []
        position = self._tools[index] = len(self._tools)
        initial = block.get("input")
        arguments = compact_json(initial) if initial else ""
        delta = ToolCallDelta(
            index=position, id=block.get("id"), name=block.get("name"), arguments=arguments
        )
        return [ToolDelta(delta)]

    def _delta(self, index: int, delta: dict[str, Any]) -> list[StreamEvent]:
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta["text"]
            return [TextDelta(text)] if text else []
        if kind == "input_json_delta":
            fragment = delta["partial_json"]
            if not fragment:
                return []
            return [ToolDelta(ToolCallDelta(index=self._tools[index], arguments=fragment))]
        return []  # thinking, signature and citation deltas are not answer text

    def _merge_usage(self, usage: Mapping[str, Any] | None) -> None:
        # message_delta counts are cumulative totals: present ones replace earlier ones.
        if usage:
            self._usage.update((k, v) for k, v in usage.items() if v is not None)

    def end(self) -> StreamEnd:
        return StreamEnd(finish_reason=self.finish_reason, usage=self.usage)

    @property
    def usage(self) -> Usage:
        return usage_of(self._usage)

"""Adapter for the OpenAI Chat Completions / Embeddings API and compatible servers.

One class serves OpenAI, vLLM, Ollama's `/v1`, the HF router, the local mock and
anything else speaking the same dialect; instances differ only in name and
default base URL (see `providers.registry`). The streaming path does one
`json.loads` per SSE event and touches plain dicts only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx
import msgspec

from contracts.errors import (
    BadRequest,
    ContentFiltered,
    InternalError,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
)
from contracts.frames import ToolCallDelta, Usage
from contracts.jobs import ContentPart, Message, Tool, ToolCall
from providers.core.api import ApiClient, decode_object, drain
from providers.core.auth import HeaderAuth, header_value
from providers.core.errors import ErrorTable
from providers.core.packing import pack_rows, vector_bytes
from providers.core.spec import ProviderContext
from providers.core.sse import ServerSentEvent, aiter_sse
from providers.core.types import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    Secret,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolDelta,
    VerifyResult,
)
from providers.options import ModelOptions

__all__ = ["ERRORS", "OpenAICompatible", "chat_body", "parse_chat_response"]

# Options copied verbatim when set; `stop` and `tool_choice` need reshaping.
_PLAIN_OPTIONS = (
    "temperature",
    "max_tokens",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "response_format",
)

# OpenAI's error vocabulary as it has been sent over the years (and by Azure,
# vLLM and the servers copying it). In-stream errors carry no HTTP status, so
# the status comes from the code or type.
ERRORS = ErrorTable(
    statuses={
        "invalid_request_error": 400,
        "context_length_exceeded": 400,
        "content_filter": 400,
        "invalid_api_key": 401,
        "authentication_error": 401,
        "permission_error": 403,
        "model_not_found": 404,
        "not_found_error": 404,
        "rate_limit_exceeded": 429,
        "rate_limit_error": 429,
        "insufficient_quota": 429,
        "server_error": 500,
        "overloaded_error": 529,
    },
    classes={
        "insufficient_quota": QuotaExceeded,
        "billing_hard_limit_reached": QuotaExceeded,
        "content_filter": ContentFiltered,
        "model_not_found": NotFound,
        "DeploymentNotFound": NotFound,
    },
)


class OpenAICompatible:
    """Adapter for OpenAI-compatible HTTP APIs (chat, stream, tools, embed, verify).

    Credential fields: `api_key` (sent as a Bearer token when non-empty),
    optional `base_url` (overrides the operator's address), `organization`, `project`.

        adapter = OpenAICompatible(ProviderContext("vllm", pool, "http://localhost:8000/v1"))
        async with contextlib.aclosing(adapter.stream_chat(request, secret)) as events:
            async for event in events: ...
    """

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._api = ApiClient(context.name, context.http, context.base_url, self._auth, ERRORS)

    def _auth(self, secret: Secret) -> httpx.Auth:
        headers: dict[str, str] = {}
        for header, field, template in _AUTH_HEADERS:
            value = secret.get(field) or ""
            if value.strip():
                headers[header] = template.format(header_value(self.name, field, value))
        return HeaderAuth(headers)

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        body = chat_body(self.name, req, stream=False)
        payload = await self._api.json("POST", "/chat/completions", secret, body)
        if payload.get("error"):
            raise ERRORS.from_payload(self.name, payload["error"], secret, context="error body")
        return parse_chat_response(self.name, payload)

    async def stream_chat(
        self, req: ChatRequest, secret: Secret
    ) -> AsyncGenerator[StreamEvent, None]:
        body = chat_body(self.name, req, stream=True)
        state = _StreamState(self.name, secret)
        async with (
            self._api.stream("POST", "/chat/completions", secret, body) as response,
            contextlib.aclosing(aiter_sse(response.aiter_bytes())) as events,
        ):
            async for sse in events:
                for event in state.feed(sse):
                    yield event
                if state.done:
                    break
            else:
                raise ProviderUnavailable(f"{self.name}: stream ended before [DONE]")
            await drain(events)
        # Yielded after the response is closed, so its connection is already back in
        # the pool however long the caller holds this generator open.
        yield state.end()

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        body: dict[str, Any] = {
            "model": req.model,
            "input": req.inputs,
            "encoding_format": "base64",
        }
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        payload = await self._api.json("POST", "/embeddings", secret, body)
        return parse_embeddings(self.name, payload, expected=len(req.inputs))

    async def verify(self, secret: Secret) -> VerifyResult:
        response = await self._api.send("GET", "/models", secret)
        if response.status_code == 200:
            data = decode_object(self.name, response.content).get("data")
            count = len(data) if isinstance(data, list) else 0
            return VerifyResult(ok=True, detail=f"{count} models visible")
        error = self._api.error(response, secret)
        if response.status_code in (401, 403):
            return VerifyResult(ok=False, detail=error.message)
        raise error


_AUTH_HEADERS = (
    ("Authorization", "api_key", "Bearer {}"),
    ("OpenAI-Organization", "organization", "{}"),
    ("OpenAI-Project", "project", "{}"),
)


# -- request mapping -----------------------------------------------------------


def chat_body(provider: str, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body for `POST /chat/completions`; unset options are omitted."""
    body: dict[str, Any] = {
        "model": req.model,
        "messages": [_message(provider, m) for m in req.messages],
    }
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
    body.update(_options(provider, req.options))
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _message(provider: str, msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role}
    content = msg.content
    if isinstance(content, list):
        out["content"] = [_part(provider, p) for p in content]
    elif content is not None:
        out["content"] = content
    else:
        # OpenAI wants null beside tool_calls; elsewhere some servers reject null.
        out["content"] = None if msg.tool_calls else ""
    if msg.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in msg.tool_calls
        ]
    if msg.tool_call_id is not None:
        out["tool_call_id"] = msg.tool_call_id
    if msg.name is not None:
        out["name"] = msg.name
    return out


def _part(provider: str, part: ContentPart) -> dict[str, Any]:
    if part.type == "text":
        return {"type": "text", "text": part.text or ""}
    if not part.image_url:
        raise BadRequest(f"{provider}: image_url content part without a url")
    return {"type": "image_url", "image_url": {"url": part.image_url}}


def _tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {
        "name": tool.name,
        # Some servers reject `{}`; an empty object schema means "no arguments".
        "parameters": tool.parameters or {"type": "object", "properties": {}},
    }
    if tool.description:
        function["description"] = tool.description
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _options(provider: str, options: ModelOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _PLAIN_OPTIONS:
        value = getattr(options, name)
        if value is not None:
            out[name] = value
    if options.stop is not None:
        out["stop"] = list(options.stop)
    if options.tool_choice is not None:
        out["tool_choice"] = _tool_choice(provider, options.tool_choice)
    return out


def _tool_choice(provider: str, choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str) or "type" in choice:
        return choice
    if "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    if "function" in choice:
        return {"type": "function", "function": choice["function"]}
    raise BadRequest(f"{provider}: unsupported tool_choice {sorted(choice)!r}")


# -- response parsing -------------------------------------------------------------


# Once per streamed token: msgspec's JSON decoder builds the same dicts in about a
# third of json.loads' time.
_decode_event = msgspec.json.Decoder().decode


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt = raw.get("prompt_tokens") or 0
    completion = raw.get("completion_tokens") or 0
    total = raw.get("total_tokens") or prompt + completion
    return Usage(input_tokens=prompt, output_tokens=completion, total_tokens=total)


def _arguments(raw: Any) -> str:
    if raw is None:
        return ""
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


def parse_chat_response(provider: str, payload: Mapping[str, Any]) -> ChatResult:
    """`ChatResult` from a non-streaming chat completion body."""
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise InternalError(f"{provider}: response has no choices")
    try:
        return _chat_result(choices[0], payload.get("usage"))
    except (AttributeError, TypeError):
        raise InternalError(f"{provider}: malformed chat completion") from None


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
    message = Message(
        role="assistant",
        content=_content_text(raw.get("content")),
        tool_calls=calls or None,
    )
    return ChatResult(
        message=message,
        finish_reason=choice.get("finish_reason"),
        usage=_usage(usage),
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


# -- streaming ---------------------------------------------------------------------


class _StreamState:
    """Per-stream bookkeeping: finish reason, usage, tool-call indexes, [DONE]."""

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
        choices = chunk.get("choices")
        if not choices:
            return []
        choice = choices[0]
        reason = choice.get("finish_reason")
        if reason:
            self.finish_reason = reason
        delta = choice.get("delta")
        if not delta:
            return []
        out: list[StreamEvent] = []
        text = delta.get("content")
        if text:
            out.append(TextDelta(text))
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

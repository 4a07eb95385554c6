"""Adapter for the OpenAI Chat Completions / Embeddings API and compatible servers.

One class serves OpenAI, vLLM, Ollama's `/v1`, the HF router, the local mock and
anything else speaking the same dialect; instances differ only in name and
default base URL (see `providers.registry`). The streaming path does one
`json.loads` per SSE event and touches plain dicts only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
from array import array
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import msgspec

from contracts.errors import BadRequest, FleetError, InternalError, ProviderUnavailable
from contracts.frames import ToolCallDelta, Usage
from contracts.jobs import ContentPart, Message, Tool, ToolCall
from providers.base import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    RerankRequest,
    RerankResult,
    Secret,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolDelta,
    VerifyResult,
)
from providers.http import (
    HttpClientPool,
    error_from_payload,
    error_from_response,
    error_info,
    json_body,
    translate_transport_errors,
)
from providers.options import ModelOptions
from providers.sse import ServerSentEvent, aiter_sse

__all__ = ["OpenAICompatible", "chat_body", "parse_chat_response"]

USER_AGENT = "llm-fleet/0.1"
_JSON = "application/json"
# After [DONE], read the (normally empty) rest of the body so the connection can
# go back to the keep-alive pool; give up quickly if the server keeps it open.
_DRAIN_SECONDS = 1.0

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

# Mid-stream error objects carry no HTTP status; infer one from the error's code
# or type so they classify like the equivalent HTTP error.
_STATUS_FOR_ERROR: dict[str, int] = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "content_filter": 400,
    "invalid_api_key": 401,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_exceeded": 429,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "overloaded_error": 529,
}


class OpenAICompatible:
    """`Provider` for OpenAI-compatible HTTP APIs.

    Credential fields: `api_key` (sent as a Bearer token when non-empty),
    optional `base_url` (overrides `default_base_url`), `organization`, `project`.

        provider = OpenAICompatible("vllm", pool, "http://localhost:8000/v1")
        async with contextlib.aclosing(provider.stream_chat(request, secret)) as events:
            async for event in events: ...
    """

    def __init__(self, name: str, http: HttpClientPool, default_base_url: str | None) -> None:
        self.name = name
        self._http = http
        self._default_base_url = default_base_url

    # -- Provider API --------------------------------------------------------

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        body = chat_body(self.name, req, stream=False)
        payload = await self._request_json("POST", "/chat/completions", secret, body)
        return parse_chat_response(self.name, payload)

    async def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncIterator[StreamEvent]:
        url = self._url(secret, "/chat/completions")
        headers = self._headers(secret, accept="text/event-stream", has_body=True)
        content = json_body(chat_body(self.name, req, stream=True))
        state = _StreamState(self.name, secret)
        client = self._http.client
        request = client.build_request("POST", url, content=content, headers=headers)
        with translate_transport_errors(self.name, secret=secret):
            response = await client.send(request, stream=True)
        # Closed here on every way out, not by `client.stream()`: that context
        # manager is one more generator inside this one, and one left for loop
        # shutdown to close raised "generator didn't stop after athrow()".
        try:
            with translate_transport_errors(self.name, secret=secret):
                if response.status_code != 200:
                    raise await self._error(response, secret)
                async with contextlib.aclosing(aiter_sse(response.aiter_bytes())) as events:
                    async for sse in events:
                        for event in state.feed(sse):
                            yield event
                        if state.done:
                            break
                    else:
                        raise ProviderUnavailable(f"{self.name}: stream ended before [DONE]")
                    await _drain(events)
        finally:
            await _close(response)
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
        payload = await self._request_json("POST", "/embeddings", secret, body)
        return parse_embeddings(self.name, payload, expected=len(req.inputs))

    async def rerank(self, req: RerankRequest, secret: Secret) -> RerankResult:
        raise BadRequest(f"{self.name} does not support rerank")

    async def verify(self, secret: Secret) -> VerifyResult:
        response = await self._send("GET", "/models", secret, None)
        if response.status_code == 200:
            data = _json(self.name, response.content).get("data")
            count = len(data) if isinstance(data, list) else 0
            return VerifyResult(ok=True, detail=f"{count} models visible")
        error = error_from_response(
            self.name, response.status_code, response.headers, response.content, secret
        )
        if response.status_code in (401, 403):
            return VerifyResult(ok=False, detail=error.message)
        raise error

    # -- HTTP plumbing ---------------------------------------------------------

    def _url(self, secret: Secret, path: str) -> str:
        base = secret.get("base_url") or self._default_base_url
        if not base:
            raise BadRequest(f"{self.name}: no base_url configured")
        return base.rstrip("/") + path

    def _headers(self, secret: Secret, *, accept: str, has_body: bool) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        if has_body:
            headers["Content-Type"] = _JSON
        optional = (
            ("Authorization", "api_key", "Bearer {}"),
            ("OpenAI-Organization", "organization", "{}"),
            ("OpenAI-Project", "project", "{}"),
        )
        for header, field, template in optional:
            value = (secret.get(field) or "").strip()
            if not value:
                continue
            # httpx/h11 errors would quote the bad value; refuse it without echoing it.
            if not (value.isascii() and value.isprintable()):
                raise BadRequest(f"{self.name}: credential field {field!r} is not a valid header")
            headers[header] = template.format(value)
        return headers

    async def _send(
        self, method: str, path: str, secret: Secret, body: Mapping[str, Any] | None
    ) -> httpx.Response:
        url = self._url(secret, path)
        headers = self._headers(secret, accept=_JSON, has_body=body is not None)
        content = json_body(body) if body is not None else None
        client = self._http.client
        with translate_transport_errors(self.name, secret=secret):
            return await client.request(method, url, content=content, headers=headers)

    async def _request_json(
        self, method: str, path: str, secret: Secret, body: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        response = await self._send(method, path, secret, body)
        if not 200 <= response.status_code < 300:
            raise await self._error(response, secret)
        payload = _json(self.name, response.content)
        if payload.get("error"):
            raise payload_error(self.name, payload["error"], secret)
        return payload

    async def _error(self, response: httpx.Response, secret: Secret) -> FleetError:
        with translate_transport_errors(self.name, secret=secret):
            body = await response.aread()
        return error_from_response(self.name, response.status_code, response.headers, body, secret)


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


def _json(provider: str, content: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(content)
    except ValueError:
        # A 2xx with a broken body is usually a proxy or a cut connection.
        raise ProviderUnavailable(f"{provider}: response is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InternalError(f"{provider}: expected a JSON object, got {type(payload).__name__}")
    return payload


def payload_error(provider: str, error: Any, secret: Secret) -> FleetError:
    """Map an `{"error": …}` object that arrived without a useful HTTP status."""
    info = error_info({"error": error})
    status = 500
    raw_code = error.get("code") if isinstance(error, dict) else None
    if isinstance(raw_code, int) or (isinstance(raw_code, str) and raw_code.isdigit()):
        status = int(raw_code) if 400 <= int(raw_code) <= 599 else status
    for key in (info.code, info.type):
        if key is not None and key in _STATUS_FOR_ERROR:
            status = _STATUS_FOR_ERROR[key]
            break
    return error_from_payload(provider, status, info, secret, context="stream error")


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
    if not isinstance(items, list) or len(items) != expected:
        got = len(items) if isinstance(items, list) else 0
        raise InternalError(f"{provider}: expected {expected} embeddings, got {got}")
    ordered = sorted(enumerate(items), key=lambda pair: _index(pair[1], pair[0]))
    rows = [_vector_bytes(provider, item) for _, item in ordered]
    width = len(rows[0]) if rows else 0
    if width == 0 or width % 4 or any(len(r) != width for r in rows):
        raise InternalError(f"{provider}: embeddings have inconsistent or empty dimensions")
    raw_usage = payload.get("usage")
    usage = _usage(raw_usage)
    return EmbedResult(
        data=b"".join(rows),
        dims=width // 4,
        count=len(rows),
        usage=Usage(input_tokens=usage.input_tokens, total_tokens=usage.total_tokens),
    )


def _index(item: Any, position: int) -> int:
    index = item.get("index") if isinstance(item, dict) else None
    return index if isinstance(index, int) else position


def _vector_bytes(provider: str, item: Any) -> bytes:
    vector = item.get("embedding") if isinstance(item, dict) else None
    if isinstance(vector, str):
        try:
            return base64.b64decode(vector, validate=True)
        except ValueError:
            raise InternalError(f"{provider}: embedding is not valid base64") from None
    if isinstance(vector, list):
        # The server ignored encoding_format=base64 (e.g. Ollama): pack it ourselves.
        try:
            packed = array("f", vector)
        except TypeError:
            raise InternalError(f"{provider}: embedding holds non-numbers") from None
        if sys.byteorder == "big":
            packed.byteswap()
        return packed.tobytes()
    raise InternalError(f"{provider}: embedding missing from response item")


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
            raise payload_error(self._provider, error, self._secret)
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


async def _close(response: httpx.Response) -> None:
    # What ended the stream (its end, its error, a consumer that left or was
    # cancelled) is what the caller must see: a failure to close adds nothing, and
    # must not turn a cancellation into a provider error.
    with contextlib.suppress(httpx.HTTPError):
        await response.aclose()


async def _drain(events: AsyncIterator[ServerSentEvent]) -> None:
    # The answer is complete; failing here only means the connection is not reused.
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in events:
                pass

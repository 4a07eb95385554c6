"""The OpenAI-compatible adapter against `httpx.MockTransport` fakes (no network)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest

from contracts.errors import (
    BadRequest,
    ContentFiltered,
    ContractError,
    FleetError,
    Forbidden,
    InternalError,
    NotFound,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from contracts.frames import ToolCallDelta, Usage
from contracts.jobs import ContentPart, Message, Tool, ToolCall
from providers.core import api as core_api
from providers.core.http import (
    HttpClientPool,
    json_body,
    translate_transport_errors,
)
from providers.core.spec import ProviderContext
from providers.core.testing import Handler, Recorder, collect, stream_response
from providers.core.types import (
    ChatRequest,
    EmbedRequest,
    RefusalDelta,
    Secret,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolDelta,
)
from providers.openai.adapter import ERRORS, OpenAICompatible
from providers.options import ModelOptions
from providers.registry import ProviderRegistry, default_registry

CANARY = "sk-canary-0123456789abcdefCANARY"
SECRET = Secret({"api_key": CANARY})
BASE = "https://llm.test/v1"


@pytest.fixture
def adapter(pools: list[HttpClientPool]) -> Callable[..., OpenAICompatible]:
    def make(
        handler: Handler, *, name: str = "openai", base: str | None = BASE
    ) -> OpenAICompatible:
        pool = HttpClientPool(transport=httpx.MockTransport(handler))
        pools.append(pool)
        return OpenAICompatible(ProviderContext(name, pool, base))

    return make


def sse(*events: Any, done: bool = True) -> bytes:
    parts = [f"data: {json.dumps(e)}\n\n" for e in events]
    if done:
        parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def request(**options: Any) -> ChatRequest:
    return ChatRequest(
        model="gpt-test",
        messages=[Message(role="user", content="hi")],
        options=ModelOptions(**options),
    )


# -- request mapping ---------------------------------------------------------------

OK_CHAT = {
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "yo"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


async def test_chat_request_mapping(adapter: Callable[..., OpenAICompatible]) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    req = ChatRequest(
        model="gpt-test",
        messages=[
            Message(role="system", content="be brief"),
            Message(
                role="user",
                content=[
                    ContentPart(type="text", text="what is this?"),
                    ContentPart(type="image_url", image_url="https://img.test/a.png"),
                ],
            ),
            Message(
                role="assistant",
                tool_calls=[ToolCall(id="call_1", name="lookup", arguments='{"q":"x"}')],
            ),
            Message(role="tool", tool_call_id="call_1", content='{"ok":true}'),
        ],
        tools=[
            Tool(
                name="lookup",
                description="Look it up",
                parameters={"type": "object", "properties": {"q": {"type": "string"}}},
                strict=True,
            ),
            Tool(name="noargs"),
        ],
        options=ModelOptions(
            temperature=0.2,
            max_tokens=64,
            top_p=0.9,
            stop=("END", "STOP"),
            tool_choice={"name": "lookup"},
            frequency_penalty=0.1,
            presence_penalty=0.3,
            seed=7,
            response_format={"type": "json_object"},
        ),
    )
    await adapter(rec).chat(req, SECRET)
    sent = rec.requests[0]
    assert sent.method == "POST"
    assert str(sent.url) == f"{BASE}/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {CANARY}"
    assert sent.headers["content-type"] == "application/json"
    assert rec.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://img.test/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q":"x"}'},
                    }
                ],
            },
            {"role": "tool", "content": '{"ok":true}', "tool_call_id": "call_1"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Look it up",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                    "strict": True,
                },
            },
            {
                "type": "function",
                "function": {"name": "noargs", "parameters": {"type": "object", "properties": {}}},
            },
        ],
        "temperature": 0.2,
        "max_tokens": 64,
        "top_p": 0.9,
        "stop": ["END", "STOP"],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "seed": 7,
        "response_format": {"type": "json_object"},
    }


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("auto", "auto"),
        ("required", "required"),
        (
            {"type": "function", "function": {"name": "f"}},
            {"type": "function", "function": {"name": "f"}},
        ),
        ({"name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ],
)
async def test_tool_choice_shapes(
    adapter: Callable[..., OpenAICompatible], given: Any, sent: Any
) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    await adapter(rec).chat(request(tool_choice=given), SECRET)
    assert rec.body["tool_choice"] == sent


async def test_unset_options_omitted_and_optional_headers(
    adapter: Callable[..., OpenAICompatible],
) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    secret = Secret({"api_key": "k", "organization": "org-1", "project": "proj-1"})
    await adapter(rec).chat(request(), secret)
    assert rec.body == {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    headers = rec.requests[0].headers
    assert headers["openai-organization"] == "org-1"
    assert headers["openai-project"] == "proj-1"


async def test_no_auth_header_without_key_and_base_url_from_secret(
    adapter: Callable[..., OpenAICompatible],
) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    secret = Secret({"api_key": "", "base_url": "http://vllm.internal:8000/v1/"})
    await adapter(rec, name="vllm", base=None).chat(request(), secret)
    assert "authorization" not in rec.requests[0].headers
    assert str(rec.requests[0].url) == "http://vllm.internal:8000/v1/chat/completions"


async def test_missing_base_url_is_bad_request(adapter: Callable[..., OpenAICompatible]) -> None:
    provider = adapter(Recorder(lambda r: httpx.Response(200, json=OK_CHAT)), name="x", base=None)
    with pytest.raises(BadRequest, match="x: no base_url configured"):
        await provider.chat(request(), SECRET)


async def test_header_unsafe_key_rejected_without_echoing_it(
    adapter: Callable[..., OpenAICompatible],
) -> None:
    provider = adapter(Recorder(lambda r: httpx.Response(200, json=OK_CHAT)))
    with pytest.raises(BadRequest) as info:
        await provider.chat(request(), Secret({"api_key": "sk-bad\nvalue"}))
    assert "sk-bad" not in str(info.value)


# -- non-streaming chat -----------------------------------------------------------


# -- request body encoding -----------------------------------------------------------


def nan_tool() -> Tool:
    schema = {"type": "object", "properties": {"n": {"type": "number", "maximum": float("nan")}}}
    return Tool(name="bounded", parameters=schema)


NAN_FIELD = "tools[0].function.parameters.properties.n.maximum"


async def test_non_finite_tool_parameter_is_refused_before_sending(
    adapter: Callable[..., OpenAICompatible],
) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    req = ChatRequest(model="m", messages=[Message(role="user", content="hi")], tools=[nan_tool()])
    provider = adapter(rec)
    for call in (provider.chat(req, SECRET), collect(provider.stream_chat(req, SECRET))):
        with pytest.raises(ContractError) as info:
            await call
        assert info.value.field == NAN_FIELD
        assert info.value.code.value == "bad_request" and not info.value.retryable
        assert "nan is not a finite number" in info.value.message
    assert rec.requests == []  # nothing that is not JSON ever leaves


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"a": float("inf")}, "a"),
        ({"a": [0.5, {"b": float("-inf")}]}, "a[1].b"),
        ({"a": {float("nan"): 1}}, "a[nan]"),
        ({"odd key": {"x-y": float("nan")}}, "['odd key']['x-y']"),
    ],
)
def test_json_body_names_the_first_non_finite_number(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ContractError) as info:
        json_body(body)
    assert info.value.field == field


def test_json_body_output() -> None:
    body = {"text": "café ✓", "n": [1, 2.5, -0.0, 1e308], "ok": True, "none": None}
    assert json_body(body) == (
        '{"text":"café ✓","n":[1,2.5,-0.0,1e+308],"ok":true,"none":null}'.encode()
    )


async def test_every_request_body_goes_through_json_body(
    adapter: Callable[..., OpenAICompatible], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The finite-number rule holds only if no adapter path encodes a body another way."""
    encoded: list[bytes] = []

    def spy(body: Mapping[str, Any]) -> bytes:
        encoded.append(json_body(body))
        return encoded[-1]

    monkeypatch.setattr(core_api, "json_body", spy)
    embedding = base64.b64encode(struct.pack("<2f", 1.0, 2.0)).decode()

    def handler(r: httpx.Request) -> httpx.Response:
        if r.url.path.endswith("/embeddings"):
            return httpx.Response(200, json={"data": [{"index": 0, "embedding": embedding}]})
        if json.loads(r.content).get("stream"):
            return stream_response(sse(chunk({"content": "a"})))
        return httpx.Response(200, json=OK_CHAT)

    rec = Recorder(handler)
    provider = adapter(rec)
    await provider.chat(request(), SECRET)
    await collect(provider.stream_chat(request(), SECRET))
    await provider.embed(EmbedRequest(model="e", inputs=["x"]), SECRET)
    assert [r.content for r in rec.requests] == encoded and len(encoded) == 3


async def test_chat_result_with_tool_calls(adapter: Callable[..., OpenAICompatible]) -> None:
    payload = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "a",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        },
                        {
                            "id": "b",
                            "type": "function",
                            "function": {"name": "g", "arguments": '{"x":1}'},
                        },
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    result = await adapter(lambda r: httpx.Response(200, json=payload)).chat(request(), SECRET)
    assert result.finish_reason == "tool_calls"
    assert result.usage == Usage(input_tokens=10, output_tokens=5, total_tokens=15)
    assert result.message == Message(
        role="assistant",
        tool_calls=[
            ToolCall(id="a", name="f", arguments="{}"),
            ToolCall(id="b", name="g", arguments='{"x":1}'),
        ],
    )


async def test_chat_text_result(adapter: Callable[..., OpenAICompatible]) -> None:
    result = await adapter(lambda r: httpx.Response(200, json=OK_CHAT)).chat(request(), SECRET)
    assert result.message.text() == "yo"
    assert result.finish_reason == "stop"


async def test_chat_malformed_success_body(adapter: Callable[..., OpenAICompatible]) -> None:
    with pytest.raises(ProviderUnavailable):
        await adapter(lambda r: httpx.Response(200, content=b"{trunc")).chat(request(), SECRET)
    with pytest.raises(InternalError):
        await adapter(lambda r: httpx.Response(200, json={"choices": []})).chat(request(), SECRET)


# -- streaming ---------------------------------------------------------------------


async def test_stream_text_and_usage(adapter: Callable[..., OpenAICompatible]) -> None:
    body = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo ✓"}),
        chunk({}, finish="stop"),
        {
            "id": "c1",
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        },
    )
    rec = Recorder(lambda r: stream_response(body))
    events = await collect(adapter(rec).stream_chat(request(), SECRET))
    assert events == [
        TextDelta("Hel"),
        TextDelta("lo ✓"),
        StreamEnd(
            finish_reason="stop", usage=Usage(input_tokens=5, output_tokens=2, total_tokens=7)
        ),
    ]
    assert rec.body["stream"] is True
    assert rec.body["stream_options"] == {"include_usage": True}
    assert rec.requests[0].headers["accept"] == "text/event-stream"


async def test_stream_parallel_tool_calls_by_index(
    adapter: Callable[..., OpenAICompatible],
) -> None:
    def call(index: int, **fields: Any) -> dict[str, Any]:
        return {"index": index, **fields}

    body = sse(
        chunk(
            {
                "role": "assistant",
                "tool_calls": [
                    call(
                        0,
                        id="call_a",
                        type="function",
                        function={"name": "weather", "arguments": ""},
                    ),
                ],
            }
        ),
        chunk({"tool_calls": [call(0, function={"arguments": '{"city":'})]}),
        chunk(
            {
                "tool_calls": [
                    call(
                        1, id="call_b", type="function", function={"name": "time", "arguments": ""}
                    ),
                ]
            }
        ),
        chunk({"tool_calls": [call(1, function={"arguments": '{"tz":"UTC"}'})]}),
        chunk({"tool_calls": [call(0, function={"arguments": '"Oslo"}'})]}),
        chunk({}, finish="tool_calls"),
    )
    events = await collect(adapter(lambda r: stream_response(body)).stream_chat(request(), SECRET))
    deltas = [e.delta for e in events if isinstance(e, ToolDelta)]
    assembled: dict[int, dict[str, str]] = {}
    for d in deltas:
        slot = assembled.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
        slot["id"] = d.id or slot["id"]
        slot["name"] = d.name or slot["name"]
        slot["arguments"] += d.arguments
    assert assembled == {
        0: {"id": "call_a", "name": "weather", "arguments": '{"city":"Oslo"}'},
        1: {"id": "call_b", "name": "time", "arguments": '{"tz":"UTC"}'},
    }
    assert deltas[0] == ToolCallDelta(index=0, id="call_a", name="weather", arguments="")
    assert events[-1] == StreamEnd(finish_reason="tool_calls", usage=Usage())


async def test_stream_tool_calls_without_index(adapter: Callable[..., OpenAICompatible]) -> None:
    body = sse(
        chunk({"tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"id": "y", "function": {"name": "g", "arguments": "{}"}}]}),
        chunk({}, finish="tool_calls"),
    )
    events = await collect(adapter(lambda r: stream_response(body)).stream_chat(request(), SECRET))
    assert [(e.delta.index, e.delta.id) for e in events if isinstance(e, ToolDelta)] == [
        (0, "x"),
        (1, "y"),
    ]


async def test_stream_without_done_is_unavailable(adapter: Callable[..., OpenAICompatible]) -> None:
    body = sse(chunk({"content": "partial"}), done=False)
    seen: list[StreamEvent] = []
    with pytest.raises(ProviderUnavailable, match=r"stream ended before \[DONE\]"):
        async for event in adapter(lambda r: stream_response(body)).stream_chat(request(), SECRET):
            seen.append(event)
    assert seen == [TextDelta("partial")]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({"message": "boom", "type": "server_error"}, ProviderUnavailable),
        ({"message": "slow", "type": "tokens", "code": "rate_limit_exceeded"}, RateLimited),
        ({"message": "bad", "type": "invalid_request_error", "code": None}, BadRequest),
        ({"message": "filtered", "code": "content_filter"}, ContentFiltered),
        ({"message": "vllm", "type": "BadRequestError", "code": 400}, BadRequest),
    ],
)
async def test_stream_error_event_is_mapped(
    adapter: Callable[..., OpenAICompatible], error: dict[str, Any], expected: type[FleetError]
) -> None:
    body = sse(chunk({"content": "x"}), {"error": error}, done=False)
    with pytest.raises(expected):
        await collect(adapter(lambda r: stream_response(body)).stream_chat(request(), SECRET))


async def test_stream_non_200_reads_error_body(adapter: Callable[..., OpenAICompatible]) -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            headers={"retry-after-ms": "1500"},
            json={"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
        )

    with pytest.raises(RateLimited) as info:
        await collect(adapter(handler).stream_chat(request(), SECRET))
    assert info.value.retry_after == 1.5
    assert info.value.message == "openai: HTTP 429 rate_limit_exceeded: Rate limit reached"


async def test_stream_dropped_connection_is_unavailable(
    adapter: Callable[..., OpenAICompatible],
) -> None:
    async def gen() -> AsyncIterator[bytes]:
        yield sse(chunk({"content": "a"}), done=False)
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message")

    provider = adapter(lambda r: httpx.Response(200, content=gen()))
    with pytest.raises(ProviderUnavailable, match="RemoteProtocolError"):
        await collect(provider.stream_chat(request(), SECRET))


async def test_closing_stream_early_closes_response(
    adapter: Callable[..., OpenAICompatible],
) -> None:
    class Body(httpx.AsyncByteStream):
        closed = False

        async def __aiter__(self) -> AsyncIterator[bytes]:
            for i in range(100):
                yield sse(chunk({"content": str(i)}), done=False)

        async def aclose(self) -> None:
            self.closed = True

    body = Body()
    stream = adapter(lambda r: httpx.Response(200, stream=body)).stream_chat(request(), SECRET)
    assert await anext(stream) == TextDelta("0")
    assert not body.closed
    await stream.aclose()
    assert body.closed


class BrokenClose(httpx.AsyncByteStream):
    """Streams tokens (then silence); closing it fails, as a reset socket can."""

    def __init__(self) -> None:
        self.close_attempts = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(3):
            yield sse(chunk({"content": str(i)}), done=False)
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.close_attempts += 1
        raise httpx.ReadError("connection reset while closing")


async def test_a_failing_close_never_hides_why_the_stream_ended(
    adapter: Callable[..., OpenAICompatible],
) -> None:
    body = BrokenClose()
    provider = adapter(lambda r: httpx.Response(200, stream=body))

    # The consumer leaves because of its own error: that error is what it sees.
    with pytest.raises(LookupError):
        async with contextlib.aclosing(provider.stream_chat(request(), SECRET)) as events:
            async for _ in events:
                raise LookupError("reply queue gone")

    # The consumer is cancelled mid-stream: it stays a cancellation, not a provider error.
    async def consume() -> None:
        async with contextlib.aclosing(provider.stream_chat(request(), SECRET)) as events:
            async for _ in events:
                pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert body.close_attempts == 2


# -- transport errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), ProviderUnavailable),
        (httpx.ConnectTimeout("slow connect"), ProviderUnavailable),
        (httpx.ReadTimeout("idle"), ProviderTimeout),
        (httpx.WriteTimeout("slow write"), ProviderTimeout),
        (httpx.PoolTimeout("pool full"), ProviderTimeout),
        (httpx.ReadError("reset"), ProviderUnavailable),
        (httpx.RemoteProtocolError("eof"), ProviderUnavailable),
    ],
)
async def test_transport_errors_translated(
    adapter: Callable[..., OpenAICompatible], exc: Exception, expected: type[FleetError]
) -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(expected) as info:
        await adapter(handler).chat(request(), SECRET)
    assert info.value.__cause__ is exc
    assert type(info.value) is expected


def test_transport_error_message_is_scrubbed() -> None:
    with pytest.raises(ProviderUnavailable) as info, translate_transport_errors("p", secret=SECRET):
        raise httpx.ConnectError(f"could not reach https://x/?key={CANARY}")
    assert CANARY not in str(info.value)
    assert "[redacted]" in str(info.value)


async def test_closed_pool_refuses_requests() -> None:
    pool = HttpClientPool(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json=OK_CHAT))
    )
    provider = OpenAICompatible(ProviderContext("openai", pool, BASE))
    await provider.chat(request(), SECRET)
    await pool.aclose()
    with pytest.raises(ProviderUnavailable) as info:
        await provider.chat(request(), SECRET)
    assert info.value.retryable is False


# -- error body mapping ----------------------------------------------------------------


def openai_error(code: str | None, message: str = "msg", type_: str = "some_type") -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}
    ).encode()


@pytest.mark.parametrize(
    ("status", "body", "expected", "retryable"),
    [
        (400, openai_error("invalid_value"), BadRequest, False),
        (400, openai_error("content_filter"), ContentFiltered, False),
        (413, openai_error(None), BadRequest, False),
        (422, b'{"detail":[{"loc":["body","model"],"msg":"field required"}]}', BadRequest, False),
        (401, openai_error("invalid_api_key"), Unauthorized, False),
        (402, b'{"error":"You have exceeded your monthly credits"}', QuotaExceeded, False),
        (403, openai_error("unsupported_country_region_territory"), Forbidden, False),
        (404, openai_error("model_not_found"), NotFound, False),
        (408, b"", ProviderTimeout, True),
        (409, openai_error(None), ProviderUnavailable, True),
        (429, openai_error("rate_limit_exceeded"), RateLimited, True),
        (429, openai_error("insufficient_quota"), QuotaExceeded, False),
        (500, openai_error(None, type_="server_error"), ProviderUnavailable, True),
        (502, b"<html><body>Bad gateway</body></html>", ProviderUnavailable, True),
        (503, b'{"message":"overloaded"}', ProviderUnavailable, True),
        (
            529,
            b'{"type":"error","error":{"type":"overloaded_error","message":"x"}}',
            ProviderUnavailable,
            True,
        ),
        (424, b'{"error":"generation failed","error_type":"generation"}', InternalError, False),
    ],
)
def test_error_status_mapping(
    status: int, body: bytes, expected: type[FleetError], retryable: bool
) -> None:
    error = ERRORS.from_response("openai", status, httpx.Headers(), body, SECRET)
    assert type(error) is expected
    assert error.retryable is retryable
    assert error.provider_status == status
    assert error.message.startswith(f"openai: HTTP {status}")


@pytest.mark.parametrize(
    ("header", "status", "retryable"),
    [
        ("true", 400, True),
        ("false", 500, False),
        ("false", 429, False),
        ("TRUE", 401, True),
        ("maybe", 500, True),
    ],
)
def test_x_should_retry(header: str, status: int, retryable: bool) -> None:
    headers = httpx.Headers({"x-should-retry": header})
    error = ERRORS.from_response("openai", status, headers, openai_error(None), SECRET)
    assert error.retryable is retryable


def test_retry_after_carried_on_429_and_5xx() -> None:
    headers = httpx.Headers({"retry-after": "2"})
    limited = ERRORS.from_response(
        "openai", 429, headers, openai_error("rate_limit_exceeded"), SECRET
    )
    down = ERRORS.from_response("openai", 503, headers, b"", SECRET)
    assert isinstance(limited, RateLimited) and limited.retry_after == 2.0
    assert isinstance(down, ProviderUnavailable) and down.retry_after == 2.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            openai_error("rate_limit_exceeded", "Too many"),
            "openai: HTTP 429 rate_limit_exceeded: Too many",
        ),
        (b'{"error":"plain text error"}', "openai: HTTP 429: plain text error"),
        (b'{"detail":"Unauthorized"}', "openai: HTTP 429: Unauthorized"),
        (
            b'{"message":"flat","type":"invalid_request_error"}',
            "openai: HTTP 429 invalid_request_error: flat",
        ),
        (b"not json\n at all", "openai: HTTP 429: not json at all"),
        (b"", "openai: HTTP 429"),
        (
            b'[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}]',
            "openai: HTTP 429 RESOURCE_EXHAUSTED: quota",
        ),
    ],
)
def test_error_body_shapes(body: bytes, message: str) -> None:
    assert ERRORS.from_response("openai", 429, httpx.Headers(), body, SECRET).message == message


def test_long_messages_truncated() -> None:
    error = ERRORS.from_response(
        "openai", 400, httpx.Headers(), openai_error("x", "y" * 5000), SECRET
    )
    assert len(error.message) < 400
    assert error.message.endswith("…")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500])
def test_canary_key_never_in_error_message(status: int) -> None:
    # OpenAI echoes (masked) keys in 401 bodies; a proxy may echo the whole header.
    padding = "x" * 290  # puts the key across the truncation point
    bodies = [
        openai_error("invalid_api_key", f"Incorrect API key provided: {CANARY}."),
        openai_error("invalid_api_key", f"{padding}{CANARY}"),
        json.dumps({"error": f"Authorization: Bearer {CANARY}"}).encode(),
        f"<html>Bearer {CANARY}</html>".encode(),
        json.dumps({"error": {"message": "m", "code": CANARY}}).encode(),
    ]
    for body in bodies:
        error = ERRORS.from_response("openai", status, httpx.Headers(), body, SECRET)
        assert CANARY not in error.message
        assert CANARY not in str(error)
        assert CANARY[:12] not in error.message


async def test_canary_key_never_in_stream_or_verify_errors(
    adapter: Callable[..., OpenAICompatible],
) -> None:
    body = sse({"error": {"message": f"bad key {CANARY}", "code": "invalid_api_key"}}, done=False)
    with pytest.raises(Unauthorized) as info:
        await collect(adapter(lambda r: stream_response(body)).stream_chat(request(), SECRET))
    assert CANARY not in str(info.value)

    def unauthorized(r: httpx.Request) -> httpx.Response:
        return httpx.Response(
            401, content=openai_error("invalid_api_key", f"Incorrect key {CANARY}")
        )

    result = await adapter(unauthorized).verify(SECRET)
    assert result.ok is False
    assert CANARY not in result.detail
    assert "[redacted]" in result.detail


# -- embeddings ---------------------------------------------------------------------


def packed(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


async def test_embed_base64_ordered_by_index(adapter: Callable[..., OpenAICompatible]) -> None:
    rows = [[0.5, -1.0, 2.0], [3.0, 0.25, -0.125]]
    payload = {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": 1,
                "embedding": base64.b64encode(packed(rows[1])).decode(),
            },
            {
                "object": "embedding",
                "index": 0,
                "embedding": base64.b64encode(packed(rows[0])).decode(),
            },
        ],
        "usage": {"prompt_tokens": 6, "total_tokens": 6},
    }
    rec = Recorder(lambda r: httpx.Response(200, json=payload))
    result = await adapter(rec).embed(
        EmbedRequest(model="text-embedding-3-small", inputs=["a", "b"], dimensions=3), SECRET
    )
    assert rec.body == {
        "model": "text-embedding-3-small",
        "input": ["a", "b"],
        "encoding_format": "base64",
        "dimensions": 3,
    }
    assert str(rec.requests[0].url) == f"{BASE}/embeddings"
    assert (result.count, result.dims) == (2, 3)
    assert result.data == packed(rows[0]) + packed(rows[1])
    assert result.usage == Usage(input_tokens=6, total_tokens=6)


async def test_embed_float_fallback(adapter: Callable[..., OpenAICompatible]) -> None:
    payload = {
        "data": [{"index": 0, "embedding": [1.0, 2.5]}],
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    rec = Recorder(lambda r: httpx.Response(200, json=payload))
    result = await adapter(rec).embed(EmbedRequest(model="m", inputs=["a"]), SECRET)
    assert "dimensions" not in rec.body
    assert result.data == packed([1.0, 2.5])
    assert (result.count, result.dims) == (1, 2)


@pytest.mark.parametrize(
    "data",
    [
        [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}],
        [{"index": 0, "embedding": [1.0, 2.0]}],
        [{"index": 0, "embedding": "***"}, {"index": 1, "embedding": "AAAA"}],
    ],
    ids=["ragged", "too-few", "bad-base64"],
)
async def test_embed_rejects_inconsistent_results(
    adapter: Callable[..., OpenAICompatible], data: list[dict[str, Any]]
) -> None:
    provider = adapter(lambda r: httpx.Response(200, json={"data": data}))
    with pytest.raises(InternalError):
        await provider.embed(EmbedRequest(model="m", inputs=["a", "b"]), SECRET)


# -- verify / rerank -------------------------------------------------------------------


async def test_verify_ok(adapter: Callable[..., OpenAICompatible]) -> None:
    models = {
        "object": "list",
        "data": [{"id": "a", "object": "model"}, {"id": "b", "object": "model"}],
    }
    rec = Recorder(lambda r: httpx.Response(200, json=models))
    result = await adapter(rec).verify(SECRET)
    assert result.ok is True
    assert result.detail == "2 models visible"
    assert rec.requests[0].method == "GET"
    assert str(rec.requests[0].url) == f"{BASE}/models"


async def test_verify_unauthorized_and_server_error(
    adapter: Callable[..., OpenAICompatible],
) -> None:
    result = await adapter(
        lambda r: httpx.Response(401, content=openai_error("invalid_api_key"))
    ).verify(SECRET)
    assert result.ok is False
    assert result.detail.startswith("openai: HTTP 401 invalid_api_key")
    with pytest.raises(ProviderUnavailable):
        await adapter(lambda r: httpx.Response(500, content=b"oops")).verify(SECRET)


def test_rerank_is_not_offered(adapter: Callable[..., OpenAICompatible]) -> None:
    """OpenAI has no rerank API: the adapter has no stub, the registry answers for it."""
    assert not hasattr(adapter(lambda r: httpx.Response(500)), "rerank")


# -- registry ------------------------------------------------------------------------------


def iter_names(registry: ProviderRegistry) -> Iterator[str]:
    yield from registry.names()


async def test_default_registry(pools: list[HttpClientPool]) -> None:
    pool = HttpClientPool(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json=OK_CHAT))
    )
    pools.append(pool)
    registry = default_registry(pool, base_urls={"openai": "http://proxy.test/v1"})
    names = list(iter_names(registry))
    assert {"mock", "ollama", "openai", "openai-compatible", "vllm"} <= set(names)
    assert names == sorted(names)
    with pytest.raises(BadRequest, match=r"unknown provider 'nope'; known: .*mock, ollama"):
        registry.get("nope")
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    pool._transport = httpx.MockTransport(rec)
    await registry.get("openai").chat().chat(request(), SECRET)
    assert str(rec.requests[0].url) == "http://proxy.test/v1/chat/completions"
    with pytest.raises(BadRequest, match="no base_url"):
        await registry.get("openai-compatible").chat().chat(request(), SECRET)
    with pytest.raises(BadRequest, match="provider 'openai' does not support rerank"):
        registry.get("openai").reranker()
    with pytest.raises(ValueError, match="unknown providers: opneai"):
        default_registry(pool, base_urls={"opneai": "http://x"})


# -- what real servers send ------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "sent", "effort"),
    [
        ("openai", "o3-mini", "max_completion_tokens", "high"),
        ("openai", "gpt-5-mini", "max_completion_tokens", "high"),
        ("mock", "o1-2024-12-17", "max_completion_tokens", "high"),
        ("openai", "gpt-4o", "max_tokens", None),
        ("vllm", "o3-mini", "max_tokens", "high"),
        ("openai-compatible", "gpt-5", "max_tokens", "high"),
    ],
)
async def test_token_limit_name_and_reasoning_effort_follow_the_model(
    adapter: Callable[..., OpenAICompatible],
    provider: str,
    model: str,
    sent: str,
    effort: str | None,
) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    options = ModelOptions.from_mapping(
        {"model.max_completion_tokens": "12", "model.reasoning_effort": "high"}
    )
    req = ChatRequest(model=model, messages=[Message(role="user", content="hi")], options=options)
    await adapter(rec, name=provider).chat(req, SECRET)
    assert rec.body[sent] == 12
    assert {"max_tokens", "max_completion_tokens"} & set(rec.body) == {sent}
    assert rec.body.get("reasoning_effort") == effort


async def test_seed_only_options_are_sent(adapter: Callable[..., OpenAICompatible]) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    options = ModelOptions.from_mapping(
        {
            "model.user": "u-1",
            "model.service_tier": "flex",
            "model.top_logprobs": "2",
            "model.metadata": '{"team": "search"}',
            "model.response_format": "json_object",
        }
    )
    req = ChatRequest(
        model="gpt-4o", messages=[Message(role="user", content="hi")], options=options
    )
    await adapter(rec).chat(req, SECRET)
    assert {k: rec.body[k] for k in set(rec.body) - {"model", "messages"}} == {
        "user": "u-1",
        "service_tier": "flex",
        "logprobs": True,
        "top_logprobs": 2,
        "metadata": {"team": "search"},
        "response_format": {"type": "json_object"},
    }


def completion(message: dict[str, Any], finish: str, **extra: Any) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


async def test_usage_details_are_carried(adapter: Callable[..., OpenAICompatible]) -> None:
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 192, "audio_tokens": 0},
    }
    payload = completion({"role": "assistant", "content": "ok"}, "stop", usage=usage)
    result = await adapter(lambda r: httpx.Response(200, json=payload)).chat(request(), SECRET)
    assert result.usage == Usage(
        input_tokens=2006,
        output_tokens=300,
        total_tokens=2306,
        cached_input_tokens=1920,
        reasoning_tokens=192,
    )
    bare = completion({"role": "assistant", "content": "ok"}, "stop", usage=OK_CHAT["usage"])
    result = await adapter(lambda r: httpx.Response(200, json=bare)).chat(request(), SECRET)
    assert (result.usage.cached_input_tokens, result.usage.reasoning_tokens) == (None, None)


async def test_refusal_reaches_the_caller(adapter: Callable[..., OpenAICompatible]) -> None:
    refused = completion(
        {"role": "assistant", "content": None, "refusal": "I can't help with that."}, "stop"
    )
    result = await adapter(lambda r: httpx.Response(200, json=refused)).chat(request(), SECRET)
    assert result.message.refusal == "I can't help with that."
    assert (result.message.content, result.finish_reason) == (None, "stop")
    body = sse(
        chunk({"role": "assistant", "content": None, "refusal": ""}),
        chunk({"refusal": "I can't"}),
        chunk({"refusal": " help."}),
        chunk({}, finish="stop"),
    )
    events = await collect(adapter(lambda r: stream_response(body)).stream_chat(request(), SECRET))
    assert events == [
        RefusalDelta("I can't"),
        RefusalDelta(" help."),
        StreamEnd(finish_reason="stop", usage=Usage()),
    ]


async def test_only_choice_zero_is_answered(adapter: Callable[..., OpenAICompatible]) -> None:
    payload = {
        "choices": [
            {
                "index": 1,
                "message": {"role": "assistant", "content": "other"},
                "finish_reason": "stop",
            },
            {
                "index": 0,
                "message": {"role": "assistant", "content": "first"},
                "finish_reason": "length",
            },
        ]
    }
    result = await adapter(lambda r: httpx.Response(200, json=payload)).chat(request(), SECRET)
    assert (result.message.content, result.finish_reason) == ("first", "length")

    def choice(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}

    body = sse(
        choice(0, {"role": "assistant", "content": ""}),
        choice(0, {"content": "a"}),
        choice(1, {"role": "assistant", "content": ""}),
        choice(1, {"content": "X"}),
        choice(0, {"content": "b"}),
        choice(1, {"content": "Y"}),
        choice(0, {}, "stop"),
        choice(1, {}, "length"),
    )
    events = await collect(adapter(lambda r: stream_response(body)).stream_chat(request(), SECRET))
    assert events == [TextDelta("a"), TextDelta("b"), StreamEnd("stop", Usage())]


async def test_content_filter_finish_is_content_filtered(
    adapter: Callable[..., OpenAICompatible],
) -> None:
    filtered = completion({"role": "assistant", "content": ""}, "content_filter")
    with pytest.raises(ContentFiltered):
        await adapter(lambda r: httpx.Response(200, json=filtered)).chat(request(), SECRET)
    body = sse(chunk({"content": "Once"}), chunk({}, finish="content_filter"))
    seen: list[StreamEvent] = []
    with pytest.raises(ContentFiltered) as info:
        async for event in adapter(lambda r: stream_response(body)).stream_chat(request(), SECRET):
            seen.append(event)
    assert seen == [TextDelta("Once")]
    assert not info.value.retryable


def azure_filter_error() -> bytes:
    return json.dumps(
        {
            "error": {
                "message": "The response was filtered due to the prompt triggering Azure "
                "OpenAI's content management policy.",
                "type": None,
                "param": "prompt",
                "code": "content_filter",
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": {"hate": {"filtered": True, "severity": "high"}},
                },
            }
        }
    ).encode()


def error_of(type_: str | None, code: str | int | None, message: str = "m") -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}
    ).encode()


# (HTTP status, body) as OpenAI and the servers copying it have sent them, and the class.
HISTORIC_ERRORS = [
    (429, error_of("insufficient_quota", None), QuotaExceeded),  # 2022: the type says it
    (429, error_of("insufficient_quota", "insufficient_quota"), QuotaExceeded),  # 2023 on
    (429, error_of("requests", "rate_limit_exceeded"), RateLimited),
    (429, error_of("tokens", "rate_limit_exceeded"), RateLimited),
    (429, error_of("requests", None), RateLimited),  # before codes were filled in
    (429, error_of("invalid_request_error", "billing_hard_limit_reached"), QuotaExceeded),
    (400, error_of("invalid_request_error", "context_length_exceeded"), BadRequest),
    (400, error_of("invalid_request_error", "unsupported_parameter"), BadRequest),
    (400, azure_filter_error(), ContentFiltered),
    (400, error_of("invalid_request_error", "content_policy_violation"), ContentFiltered),
    (401, error_of("invalid_request_error", "invalid_api_key"), Unauthorized),
    (401, error_of("invalid_request_error", None), Unauthorized),  # no key at all
    (403, error_of("request_forbidden", "unsupported_country_region_territory"), Forbidden),
    (404, error_of("invalid_request_error", "model_not_found"), NotFound),
    (404, error_of(None, "DeploymentNotFound"), NotFound),  # Azure
    (404, error_of("api_error", None), NotFound),  # Ollama: model not pulled
    (500, error_of("server_error", None), ProviderUnavailable),
    (502, error_of("cf_bad_gateway", 502), ProviderUnavailable),
    (503, error_of("cf_service_unavailable", 503), ProviderUnavailable),
    (503, error_of("server_error", None), ProviderUnavailable),
    (400, error_of("BadRequestError", 400), BadRequest),  # vLLM
]


@pytest.mark.parametrize(("status", "body", "expected"), HISTORIC_ERRORS)
def test_errors_classified_from_type_and_code(
    status: int, body: bytes, expected: type[FleetError]
) -> None:
    assert type(ERRORS.from_response("openai", status, httpx.Headers(), body, SECRET)) is expected


@pytest.mark.parametrize(("status", "body", "expected"), HISTORIC_ERRORS)
async def test_in_stream_errors_classified_without_a_status(
    adapter: Callable[..., OpenAICompatible],
    status: int,
    body: bytes,
    expected: type[FleetError],
) -> None:
    """In a 200 stream only the body speaks: it must say as much as the status did."""
    if status == 404 and b"api_error" in body:
        expected = ProviderUnavailable  # Ollama's type alone says nothing of a 404
    if status == 401 and b'"code": null' in body:
        expected = BadRequest  # nor does a bare invalid_request_error of a 401
    stream = sse(chunk({"content": "x"}), done=False) + b"data: " + body + b"\n\n"
    with pytest.raises(expected) as info:
        await collect(adapter(lambda r: stream_response(stream)).stream_chat(request(), SECRET))
    assert type(info.value) is expected

"""The Anthropic adapter against `httpx.MockTransport` fakes (no network)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from contracts.errors import (
    BadRequest,
    ContentFiltered,
    ContractError,
    FleetError,
    Forbidden,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from contracts.frames import ToolCallDelta, Usage
from contracts.jobs import ContentPart, Message, Tool, ToolCall
from providers.anthropic.adapter import Anthropic
from providers.anthropic.mapping import DEFAULT_MAX_TOKENS, JSON_OBJECT_INSTRUCTION
from providers.core.http import HttpClientPool
from providers.core.spec import Capability, ProviderContext
from providers.core.testing import Handler, Recorder, collect, stream_response
from providers.core.types import (
    ChatRequest,
    Secret,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolDelta,
)
from providers.options import ModelOptions
from providers.registry import default_registry

CANARY = "sk-ant-canary-0123456789abcdefCANARY"
SECRET = Secret({"api_key": CANARY})
BASE = "https://anthropic.test/v1"

Make = Callable[..., Anthropic]


@pytest.fixture
def adapter(pools: list[HttpClientPool]) -> Make:
    def make(handler: Handler, *, base: str | None = BASE) -> Anthropic:
        pool = HttpClientPool(transport=httpx.MockTransport(handler))
        pools.append(pool)
        return Anthropic(ProviderContext("anthropic", pool, base))

    return make


def message(content: list[dict[str, Any]], stop: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 3, "output_tokens": 1},
    }


OK = message([{"type": "text", "text": "yo"}])


def ok(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=OK)


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    return lambda _: httpx.Response(status, json=body, headers=headers)


def request(*messages: Message, **options: Any) -> ChatRequest:
    return ChatRequest(
        model="claude-test",
        messages=list(messages) or [Message(role="user", content="hi")],
        options=ModelOptions(**options),
    )


def sse(*events: dict[str, Any]) -> bytes:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


def error_body(kind: str, text: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": text}, "request_id": "req_body"}


# -- request mapping ---------------------------------------------------------------


async def test_headers_url_and_default_max_tokens(adapter: Make) -> None:
    rec = Recorder(ok)
    await adapter(rec).chat(request(), SECRET)
    sent = rec.requests[0]
    assert str(sent.url) == f"{BASE}/messages"
    assert sent.headers["x-api-key"] == CANARY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "anthropic-beta" not in sent.headers
    assert "authorization" not in sent.headers
    assert rec.body == {
        "model": "claude-test",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }


async def test_credential_overrides_version_beta_and_base_url(adapter: Make) -> None:
    rec = Recorder(ok)
    secret = Secret(
        {
            "api_key": "k",
            "anthropic_version": "2024-01-01",
            "anthropic_beta": "a-1,b-2",
            "base_url": "https://proxy.test/anthropic/v1/",
        }
    )
    await adapter(rec, base=None).chat(request(), secret)
    sent = rec.requests[0]
    assert str(sent.url) == "https://proxy.test/anthropic/v1/messages"
    assert sent.headers["anthropic-version"] == "2024-01-01"
    assert sent.headers["anthropic-beta"] == "a-1,b-2"


async def test_conversation_mapping(adapter: Make) -> None:
    rec = Recorder(ok)
    req = ChatRequest(
        model="claude-test",
        messages=[
            Message(role="system", content="be brief"),
            Message(role="developer", content="answer in French"),
            Message(
                role="user",
                content=[
                    ContentPart(type="text", text="what are these?"),
                    ContentPart(type="image_url", image_url="https://img.test/a.png"),
                    ContentPart(type="image_url", image_url="data:image/png;base64,iVBORw0K"),
                ],
            ),
            Message(role="user", content="and quickly"),
            Message(
                role="assistant",
                content="Let me look.",
                tool_calls=[
                    ToolCall(id="toolu_1", name="lookup", arguments='{"q":"x"}'),
                    ToolCall(id="toolu_2", name="noargs", arguments=""),
                ],
            ),
            Message(role="tool", tool_call_id="toolu_1", content='{"ok":true}'),
            Message(role="tool", tool_call_id="toolu_2", content=""),
            Message(role="user", content="thanks"),
        ],
        tools=[
            Tool(
                name="lookup",
                description="Look it up",
                parameters={"type": "object", "properties": {"q": {"type": "string"}}},
            ),
            Tool(name="noargs"),
        ],
        options=ModelOptions(
            temperature=0.2,
            max_tokens=64,
            top_p=0.9,
            stop=("END", "STOP"),
            tool_choice="required",
            frequency_penalty=0.1,
            presence_penalty=0.3,
            seed=7,
        ),
    )
    await adapter(rec).chat(req, SECRET)
    assert rec.body == {
        "model": "claude-test",
        "max_tokens": 64,
        "system": "be brief\n\nanswer in French",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what are these?"},
                    {"type": "image", "source": {"type": "url", "url": "https://img.test/a.png"}},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
                    },
                    {"type": "text", "text": "and quickly"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "noargs", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": '{"ok":true}'}],
                    },
                    {"type": "tool_result", "tool_use_id": "toolu_2"},
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
        "tools": [
            {
                "name": "lookup",
                "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
                "description": "Look it up",
            },
            {"name": "noargs", "input_schema": {"type": "object", "properties": {}}},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END", "STOP"],
        "tool_choice": {"type": "any"},
    }


async def test_tool_results_come_before_text_in_a_merged_user_turn(adapter: Make) -> None:
    rec = Recorder(ok)
    req = request(
        Message(role="user", content="go"),
        Message(role="assistant", tool_calls=[ToolCall(id="t1", name="f", arguments="{}")]),
        Message(role="user", content="also this"),
        Message(role="tool", tool_call_id="t1", content="done"),
    )
    await adapter(rec).chat(req, SECRET)
    last = rec.body["messages"][-1]
    assert [b["type"] for b in last["content"]] == ["tool_result", "text"]


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"name": "f"}, {"type": "tool", "name": "f"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
        (
            {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
            {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        ),
    ],
)
async def test_tool_choice_shapes(adapter: Make, given: Any, sent: Any) -> None:
    rec = Recorder(ok)
    await adapter(rec).chat(request(tool_choice=given), SECRET)
    assert rec.body["tool_choice"] == sent


@pytest.mark.parametrize("choice", ["sometimes", {"function": {}}])
async def test_unsupported_tool_choice_is_bad_request(adapter: Make, choice: Any) -> None:
    rec = Recorder(ok)
    with pytest.raises(BadRequest, match="unsupported tool_choice"):
        await adapter(rec).chat(request(tool_choice=choice), SECRET)
    assert rec.requests == []


async def test_response_formats(adapter: Make) -> None:
    rec = Recorder(ok)
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    await adapter(rec).chat(request(response_format=fmt), SECRET)
    assert rec.body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "system" not in rec.body
    req = request(
        Message(role="system", content="be brief"),
        Message(role="user", content="hi"),
        response_format={"type": "json_object"},
    )
    await adapter(rec).chat(req, SECRET)
    assert rec.body["system"] == f"be brief\n\n{JSON_OBJECT_INSTRUCTION}"
    assert "output_config" not in rec.body
    with pytest.raises(BadRequest, match="unsupported response_format"):
        await adapter(rec).chat(request(response_format={"type": "xml"}), SECRET)


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
async def test_bad_tool_arguments_are_a_contract_error(adapter: Make, arguments: str) -> None:
    rec = Recorder(ok)
    req = request(
        Message(role="user", content="go"),
        Message(role="assistant", tool_calls=[ToolCall(id="t", name="f", arguments=arguments)]),
    )
    with pytest.raises(ContractError) as info:
        await adapter(rec).chat(req, SECRET)
    assert info.value.field == "messages[1].tool_calls[0].arguments"
    assert rec.requests == []


async def test_tool_message_needs_its_call_id(adapter: Make) -> None:
    req = request(Message(role="user", content="go"), Message(role="tool", content="x"))
    with pytest.raises(ContractError, match="tool_call_id"):
        await adapter(Recorder(ok)).chat(req, SECRET)


@pytest.mark.parametrize("url", ["ftp://x/y.png", "data:image/png,raw", ""])
async def test_unusable_image_is_bad_request(adapter: Make, url: str) -> None:
    req = request(Message(role="user", content=[ContentPart(type="image_url", image_url=url)]))
    with pytest.raises(BadRequest, match="image"):
        await adapter(Recorder(ok)).chat(req, SECRET)


async def test_header_unsafe_key_rejected_without_echoing_it(adapter: Make) -> None:
    with pytest.raises(BadRequest) as info:
        await adapter(Recorder(ok)).chat(request(), Secret({"api_key": "sk-bad\nvalue"}))
    assert "sk-bad" not in str(info.value)


# -- non-streaming responses ---------------------------------------------------------


async def test_text_and_tool_use_response(adapter: Make) -> None:
    body = message(
        [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Let me "},
            {"type": "text", "text": "check."},
            {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {"q": "é", "n": 1}},
            {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {}},
        ],
        stop="tool_use",
        input_tokens=10,
        cache_read_input_tokens=5,
        cache_creation_input_tokens=3,
        output_tokens=7,
    )
    result = await adapter(lambda r: httpx.Response(200, json=body)).chat(request(), SECRET)
    assert result.message.content == "Let me check."
    assert result.message.tool_calls == [
        ToolCall(id="toolu_a", name="f", arguments='{"q":"é","n":1}'),
        ToolCall(id="toolu_b", name="g", arguments="{}"),
    ]
    assert result.finish_reason == "tool_calls"
    assert result.usage == Usage(
        input_tokens=18,
        output_tokens=7,
        total_tokens=25,
        cached_input_tokens=5,
        cache_write_tokens=3,
    )


async def test_tool_only_response_has_no_text_and_uncached_usage_is_none(adapter: Make) -> None:
    body = message([{"type": "tool_use", "id": "t", "name": "f", "input": {}}], stop="tool_use")
    result = await adapter(lambda r: httpx.Response(200, json=body)).chat(request(), SECRET)
    assert result.message.content is None
    assert result.usage == Usage(input_tokens=3, output_tokens=1, total_tokens=4)
    assert result.usage.cached_input_tokens is None


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "pause_turn"),
    ],
)
async def test_finish_reasons(adapter: Make, stop: str, finish: str) -> None:
    body = message([{"type": "text", "text": "x"}], stop=stop)
    result = await adapter(lambda r: httpx.Response(200, json=body)).chat(request(), SECRET)
    assert result.finish_reason == finish


async def test_refusal_is_content_filtered(adapter: Make) -> None:
    body = message([{"type": "text", "text": "x"}], stop="refusal")
    with pytest.raises(ContentFiltered, match="refusal"):
        await adapter(lambda r: httpx.Response(200, json=body)).chat(request(), SECRET)


async def test_error_body_behind_a_200_is_raised(adapter: Make) -> None:
    body = error_body("overloaded_error", "Overloaded")
    with pytest.raises(ProviderUnavailable, match="overloaded_error"):
        await adapter(lambda r: httpx.Response(200, json=body)).chat(request(), SECRET)


# -- streaming -----------------------------------------------------------------------


def start(**usage: int) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": message([], stop="", **usage) | {"stop_reason": None},
    }


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": body}


def stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(reason: str, **usage: int) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": reason, "stop_sequence": None},
        "usage": usage,
    }


PING = {"type": "ping"}
END = {"type": "message_stop"}


async def test_stream_text_with_ping_thinking_and_cache_usage(adapter: Make) -> None:
    body = sse(
        start(
            input_tokens=10,
            cache_read_input_tokens=4,
            cache_creation_input_tokens=0,
            output_tokens=1,
        ),
        block_start(0, {"type": "thinking", "thinking": ""}),
        PING,
        delta(0, {"type": "thinking_delta", "thinking": "secret plan"}),
        delta(0, {"type": "signature_delta", "signature": "sig"}),
        stop(0),
        block_start(1, {"type": "text", "text": ""}),
        delta(1, {"type": "text_delta", "text": "Hel"}),
        PING,
        delta(1, {"type": "text_delta", "text": "lo é"}),
        stop(1),
        message_delta("end_turn", output_tokens=9),
        END,
    )
    events = await collect(adapter(lambda r: stream_response(body)).stream_chat(request(), SECRET))
    assert events == [
        TextDelta("Hel"),
        TextDelta("lo é"),
        StreamEnd(
            finish_reason="stop",
            usage=Usage(
                input_tokens=14,
                output_tokens=9,
                total_tokens=23,
                cached_input_tokens=4,
                cache_write_tokens=0,
            ),
        ),
    ]


async def test_stream_body_asks_for_a_stream(adapter: Make) -> None:
    rec = Recorder(lambda r: stream_response(sse(start(), message_delta("end_turn"), END)))
    await collect(adapter(rec).stream_chat(request(), SECRET))
    assert rec.body["stream"] is True
    assert rec.requests[0].headers["accept"] == "text/event-stream"


async def test_stream_parallel_tool_use(adapter: Make) -> None:
    body = sse(
        start(input_tokens=20, output_tokens=1),
        block_start(0, {"type": "text", "text": ""}),
        PING,
        delta(0, {"type": "text_delta", "text": "Checking."}),
        stop(0),
        block_start(1, {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}),
        delta(1, {"type": "input_json_delta", "partial_json": ""}),
        delta(1, {"type": "input_json_delta", "partial_json": '{"q": '}),
        delta(1, {"type": "input_json_delta", "partial_json": '"x"}'}),
        stop(1),
        block_start(2, {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {}}),
        delta(2, {"type": "input_json_delta", "partial_json": "{}"}),
        stop(2),
        message_delta("tool_use", input_tokens=20, output_tokens=30),
        END,
    )
    events = await collect(adapter(lambda r: stream_response(body)).stream_chat(request(), SECRET))
    assert events == [
        TextDelta("Checking."),
        ToolDelta(ToolCallDelta(index=0, id="toolu_a", name="f", arguments="")),
        ToolDelta(ToolCallDelta(index=0, arguments='{"q": ')),
        ToolDelta(ToolCallDelta(index=0, arguments='"x"}')),
        ToolDelta(ToolCallDelta(index=1, id="toolu_b", name="g", arguments="")),
        ToolDelta(ToolCallDelta(index=1, arguments="{}")),
        StreamEnd(
            finish_reason="tool_calls",
            usage=Usage(input_tokens=20, output_tokens=30, total_tokens=50),
        ),
    ]


@pytest.mark.parametrize(
    ("kind", "cls", "status"),
    [
        ("overloaded_error", ProviderUnavailable, 529),
        ("api_error", ProviderUnavailable, 500),
        ("rate_limit_error", RateLimited, 429),
        ("invalid_request_error", BadRequest, 400),
        ("billing_error", QuotaExceeded, 402),
    ],
)
async def test_stream_error_event(
    adapter: Make, kind: str, cls: type[FleetError], status: int
) -> None:
    body = sse(
        start(),
        block_start(0, {"type": "text", "text": ""}),
        delta(0, {"type": "text_delta", "text": "Hi"}),
        error_body(kind, "went wrong"),
    )
    received: list[StreamEvent] = []
    with pytest.raises(cls) as info:
        async for event in adapter(lambda r: stream_response(body)).stream_chat(request(), SECRET):
            received.append(event)
    assert received == [TextDelta("Hi")]
    assert type(info.value) is cls
    assert info.value.provider_status == status
    assert f"anthropic: stream error {kind}: went wrong" == info.value.message
    assert info.value.provider_request_id == "req_body"


async def test_stream_without_message_stop_is_unavailable(adapter: Make) -> None:
    body = sse(start(), block_start(0, {"type": "text", "text": ""}), message_delta("end_turn"))
    with pytest.raises(ProviderUnavailable, match="before message_stop"):
        await collect(adapter(lambda r: stream_response(body)).stream_chat(request(), SECRET))


@pytest.mark.parametrize(
    "raw",
    [
        b"event: content_block_delta\ndata: {not json\n\n",
        # A delta for a tool block that was never opened.
        sse(delta(3, {"type": "input_json_delta", "partial_json": "{}"})),
    ],
)
async def test_malformed_stream_event_is_unavailable(adapter: Make, raw: bytes) -> None:
    body = sse(start()) + raw
    with pytest.raises(ProviderUnavailable, match="malformed stream event"):
        await collect(adapter(lambda r: stream_response(body)).stream_chat(request(), SECRET))


async def test_stream_http_error_before_any_event(adapter: Make) -> None:
    handler = answer(529, error_body("overloaded_error", "Overloaded"), {"retry-after": "3"})
    with pytest.raises(ProviderUnavailable) as info:
        await collect(adapter(handler).stream_chat(request(), SECRET))
    assert info.value.provider_status == 529 and info.value.retry_after == 3.0


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "cls", "retryable"),
    [
        (400, "invalid_request_error", BadRequest, False),
        (401, "authentication_error", Unauthorized, False),
        (402, "billing_error", QuotaExceeded, False),
        (403, "permission_error", Forbidden, False),
        (404, "not_found_error", NotFound, False),
        (413, "request_too_large", BadRequest, False),
        (429, "rate_limit_error", RateLimited, True),
        (500, "api_error", ProviderUnavailable, True),
        (504, "timeout_error", ProviderUnavailable, True),
        (529, "overloaded_error", ProviderUnavailable, True),
    ],
)
async def test_error_classification(
    adapter: Make, status: int, kind: str, cls: type[FleetError], retryable: bool
) -> None:
    headers = {"request-id": "req_hdr", "retry-after": "7"}
    handler = answer(status, error_body(kind, "nope"), headers)
    with pytest.raises(FleetError) as info:
        await adapter(handler).chat(request(), SECRET)
    error = info.value
    assert type(error) is cls
    assert error.retryable is retryable
    assert error.provider_status == status
    assert error.message == f"anthropic: HTTP {status} {kind}: nope"
    assert error.provider_request_id == "req_hdr"
    # The wait is advice for a retry: only errors that will be retried carry it.
    assert error.retry_after == (7.0 if retryable else None)


async def test_canary_key_never_appears_in_errors(adapter: Make) -> None:
    echo = error_body("authentication_error", f"invalid x-api-key {CANARY}")
    failures: list[Handler] = [
        lambda r: httpx.Response(401, json=echo),
        lambda r: httpx.Response(400, text=f"bad key {CANARY}"),
        lambda r: stream_response(sse(start(), error_body("api_error", f"key={CANARY}"))),
    ]
    for handler in failures:
        for call in ("chat", "stream"):
            provider = adapter(handler)
            with pytest.raises(FleetError) as info:
                if call == "chat":
                    await provider.chat(request(), SECRET)
                else:
                    await collect(provider.stream_chat(request(), SECRET))
            assert CANARY not in str(info.value)
            assert CANARY not in repr(info.value.args)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach with {CANARY}")

    with pytest.raises(ProviderUnavailable) as info:
        await adapter(refuse).chat(request(), SECRET)
    assert CANARY not in str(info.value)


async def test_canary_cut_by_truncation_still_never_appears(adapter: Make) -> None:
    # The key straddles the message length limit: scrubbed whole, before the cut.
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("x" * 280 + CANARY + "y" * 100)

    with pytest.raises(ProviderUnavailable) as info:
        await adapter(refuse).chat(request(), SECRET)
    assert CANARY[:12] not in str(info.value)
    assert "[redacted]" in str(info.value)


async def test_canary_echoed_as_request_id_is_scrubbed(adapter: Make) -> None:
    body = {**error_body("api_error", "boom"), "request_id": f"req_{CANARY}"}
    with pytest.raises(ProviderUnavailable) as info:
        await adapter(answer(500, body)).chat(request(), SECRET)
    assert info.value.provider_request_id == "req_[redacted]"


async def test_unusable_credential_base_url_is_a_bad_request(adapter: Make) -> None:
    secret = Secret({"api_key": CANARY, "base_url": "https://anthropic.test/\x7fv1"})
    with pytest.raises(BadRequest, match="invalid URL") as info:
        await adapter(ok).chat(request(), secret)
    assert CANARY not in str(info.value)
    with pytest.raises(BadRequest, match="invalid URL"):
        await collect(adapter(ok).stream_chat(request(), secret))


# -- verify and registry -----------------------------------------------------------------


async def test_verify(adapter: Make) -> None:
    models = {
        "data": [{"type": "model", "id": "claude-a", "display_name": "A", "created_at": "x"}],
        "has_more": True,
        "first_id": "claude-a",
        "last_id": "claude-a",
    }
    rec = Recorder(lambda r: httpx.Response(200, json=models))
    result = await adapter(rec).verify(SECRET)
    assert result.ok and result.detail == "1+ models visible"
    assert str(rec.requests[0].url) == f"{BASE}/models"
    assert rec.requests[0].headers["x-api-key"] == CANARY
    for status, kind in ((401, "authentication_error"), (403, "permission_error")):
        body = error_body(kind, "invalid x-api-key")
        denied = await adapter(answer(status, body)).verify(SECRET)
        assert not denied.ok
        assert denied.detail == f"anthropic: HTTP {status} {kind}: invalid x-api-key"
    with pytest.raises(ProviderUnavailable):
        body = error_body("overloaded_error", "Overloaded")
        await adapter(lambda r: httpx.Response(529, json=body)).verify(SECRET)


async def test_registry_serves_anthropic_without_embeddings() -> None:
    async with HttpClientPool(transport=httpx.MockTransport(ok)) as pool:
        registry = default_registry(pool)
        provider = registry.get("anthropic")
        assert provider.base_url == "https://api.anthropic.com/v1"
        assert "anthropic-mock" in registry
        assert provider.supports(Capability.STREAM | Capability.TOOLS | Capability.VERIFY)
        with pytest.raises(BadRequest, match="does not support embed"):
            provider.embedder()
        with pytest.raises(BadRequest, match="does not support rerank"):
            provider.reranker()
        result = await provider.chat().chat(request(), SECRET)
        assert result.message.content == "yo"

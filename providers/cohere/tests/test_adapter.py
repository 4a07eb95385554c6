"""The Cohere adapter against `httpx.MockTransport` fakes (no network)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from contracts.errors import (
    BadRequest,
    ContentFiltered,
    ContractError,
    FleetError,
    InternalError,
    NotFound,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from contracts.frames import RerankItem, ToolCallDelta, Usage
from contracts.jobs import ContentPart, Message, Tool, ToolCall
from providers.cohere.adapter import Cohere
from providers.cohere.embed import BATCH
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.testing import Handler, Recorder, collect, stream_response
from providers.core.types import (
    ChatRequest,
    EmbedRequest,
    RerankRequest,
    Secret,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolDelta,
)
from providers.options import ModelOptions

CANARY = "co-canary-0123456789abcdefCANARY"
SECRET = Secret({"api_key": CANARY})
BASE = "https://cohere.test"

Make = Callable[..., Cohere]


@pytest.fixture
def adapter(pools: list[HttpClientPool]) -> Make:
    def make(handler: Handler, *, base: str | None = BASE) -> Cohere:
        pool = HttpClientPool(transport=httpx.MockTransport(handler))
        pools.append(pool)
        return Cohere(ProviderContext("cohere", pool, base))

    return make


def request(*messages: Message, tools: list[Tool] | None = None, **options: Any) -> ChatRequest:
    return ChatRequest(
        model="command-a-03-2025",
        messages=list(messages) or [Message(role="user", content="hi")],
        tools=tools or [],
        options=ModelOptions.from_mapping(options),
    )


def chat_body(
    *,
    text: str | None = "Hello there",
    finish: str = "COMPLETE",
    usage: dict[str, Any] | None = None,
    **message: Any,
) -> dict[str, Any]:
    content = [{"type": "text", "text": text}] if text is not None else []
    return {
        "id": "a1b2",
        "finish_reason": finish,
        "message": {"role": "assistant", "content": content, **message},
        "usage": usage
        or {
            "billed_units": {"input_tokens": 3, "output_tokens": 2},
            "tokens": {"input_tokens": 70, "output_tokens": 2},
        },
    }


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    return lambda _: httpx.Response(status, json=body, headers=headers)


WEATHER = Tool(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


# -- request mapping ---------------------------------------------------------------------


async def test_chat_request_shape_and_auth(adapter: Make) -> None:
    rec = Recorder(answer(200, chat_body()))
    messages = [
        Message(role="system", content="Be brief."),
        Message(role="developer", content="Answer in English."),
        Message(
            role="user",
            content=[
                ContentPart(type="text", text="What is this?"),
                ContentPart(type="image_url", image_url="https://img.test/cat.png"),
            ],
        ),
    ]
    await adapter(rec).chat(request(*messages), SECRET)
    sent = rec.requests[-1]
    assert sent.url == "https://cohere.test/v2/chat"
    assert sent.headers["authorization"] == f"Bearer {CANARY}"
    assert rec.body == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Answer in English."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://img.test/cat.png"}},
                ],
            },
        ],
        "stream": False,
    }


async def test_every_option_cohere_has_is_mapped(adapter: Make) -> None:
    rec = Recorder(answer(200, chat_body()))
    req = request(
        temperature=0.2,
        max_completion_tokens="50",
        top_p=0.9,
        stop="END,STOP",
        seed=7,
        frequency_penalty=0.1,
        presence_penalty=0.3,
        top_logprobs=2,
        reasoning_effort="none",
        response_format="json_object",
        # Not Cohere's, and not changing the answer: left out.
        user="u-1",
        metadata={"a": "b"},
        service_tier="flex",
    )
    await adapter(rec).chat(req, SECRET)
    body = rec.body
    del body["messages"]
    assert body == {
        "model": "command-a-03-2025",
        "temperature": 0.2,
        "max_tokens": 50,
        "seed": 7,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "p": 0.9,
        "stop_sequences": ["END", "STOP"],
        "logprobs": True,
        "response_format": {"type": "json_object"},
        "thinking": {"type": "disabled"},
        "stream": False,
    }


@pytest.mark.parametrize(
    ("response_format", "sent"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            {"type": "json_object", "json_schema": {"type": "object"}},
        ),
        (
            {"type": "json_object", "json_schema": {"type": "object"}},
            {"type": "json_object", "json_schema": {"type": "object"}},
        ),
    ],
)
async def test_response_format(
    adapter: Make, response_format: dict[str, Any], sent: dict[str, Any] | None
) -> None:
    rec = Recorder(answer(200, chat_body()))
    await adapter(rec).chat(request(response_format=response_format), SECRET)
    assert rec.body.get("response_format") == sent


@pytest.mark.parametrize(
    ("choice", "sent"),
    [("auto", None), ("required", "REQUIRED"), ("none", "NONE"), ({"type": "any"}, "REQUIRED")],
)
async def test_tool_choice(adapter: Make, choice: Any, sent: str | None) -> None:
    rec = Recorder(answer(200, chat_body()))
    await adapter(rec).chat(request(tools=[WEATHER], tool_choice=choice), SECRET)
    assert rec.body.get("tool_choice") == sent
    assert rec.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER.parameters,
                "description": "Weather for a city",
            },
        }
    ]


@pytest.mark.parametrize(
    "refused",
    [
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "no schema"}}},
        {"response_format": {"type": "grammar"}},
    ],
)
async def test_what_cohere_cannot_express_is_refused(
    adapter: Make, refused: dict[str, Any]
) -> None:
    rec = Recorder(answer(200, chat_body()))
    with pytest.raises(BadRequest, match=r"^cohere: "):
        await adapter(rec).chat(request(tools=[WEATHER], **refused), SECRET)
    assert not rec.requests


async def test_strict_tools_and_empty_schema(adapter: Make) -> None:
    rec = Recorder(answer(200, chat_body()))
    tools = [Tool(name="now", strict=True), WEATHER]
    await adapter(rec).chat(request(tools=tools), SECRET)
    assert rec.body["strict_tools"] is True
    assert rec.body["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}


async def test_a_tool_turn_is_sent_as_cohere_wants_it(adapter: Make) -> None:
    rec = Recorder(answer(200, chat_body()))
    call = ToolCall(id="get_weather_1", name="get_weather", arguments='{"city":"Oslo"}')
    messages = [
        Message(role="user", content="Weather in Oslo?"),
        Message(role="assistant", content="I will look it up.", tool_calls=[call]),
        Message(role="tool", content='{"temp": 3}', tool_call_id="get_weather_1", name="x"),
        Message(role="assistant", content="It is 3 degrees."),
    ]
    await adapter(rec).chat(request(*messages, tools=[WEATHER]), SECRET)
    assert rec.body["messages"][1:] == [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "get_weather_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
            "tool_plan": "I will look it up.",
        },
        {"role": "tool", "tool_call_id": "get_weather_1", "content": '{"temp": 3}'},
        {"role": "assistant", "content": "It is 3 degrees."},
    ]


async def test_malformed_turns_are_refused(adapter: Make) -> None:
    rec = Recorder(answer(200, chat_body()))
    with pytest.raises(ContractError, match="tool_call_id"):
        await adapter(rec).chat(request(Message(role="tool", content="x")), SECRET)
    image = ContentPart(type="image_url", image_url="https://img.test/a.png")
    with pytest.raises(BadRequest, match="text only"):
        await adapter(rec).chat(request(Message(role="system", content=[image])), SECRET)
    assert not rec.requests


# -- answers -------------------------------------------------------------------------------


async def test_text_answer_and_usage_from_tokens(adapter: Make) -> None:
    body = chat_body(usage={**chat_body()["usage"], "cached_tokens": 64})
    result = await adapter(answer(200, body)).chat(request(), SECRET)
    assert result.message == Message(role="assistant", content="Hello there")
    assert result.finish_reason == "stop"
    # `tokens` (the template included), not the smaller `billed_units`.
    assert result.usage == Usage(
        input_tokens=70, output_tokens=2, total_tokens=72, cached_input_tokens=64
    )


async def test_usage_falls_back_to_billed_units(adapter: Make) -> None:
    usage = {"billed_units": {"input_tokens": 3.0, "output_tokens": 2.0}}
    result = await adapter(answer(200, chat_body(usage=usage))).chat(request(), SECRET)
    assert result.usage == Usage(input_tokens=3, output_tokens=2, total_tokens=5)


@pytest.mark.parametrize(
    ("finish", "ours"),
    [
        ("COMPLETE", "stop"),
        ("STOP_SEQUENCE", "stop"),
        ("MAX_TOKENS", "length"),
        ("TOOL_CALL", "tool_calls"),
        ("SOMETHING_NEW", "something_new"),
    ],
)
async def test_finish_reasons(adapter: Make, finish: str, ours: str) -> None:
    result = await adapter(answer(200, chat_body(finish=finish))).chat(request(), SECRET)
    assert result.finish_reason == ours


@pytest.mark.parametrize(
    ("finish", "cls"),
    [
        ("ERROR", ProviderUnavailable),
        ("TIMEOUT", ProviderTimeout),
        ("ERROR_TOXIC", ContentFiltered),
    ],
)
async def test_failed_generations_are_raised(
    adapter: Make, finish: str, cls: type[FleetError]
) -> None:
    with pytest.raises(cls, match=r"^cohere: "):
        await adapter(answer(200, chat_body(finish=finish))).chat(request(), SECRET)


async def test_tool_calls_with_their_plan(adapter: Make) -> None:
    calls = [
        {
            "id": "get_weather_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
        },
        {"id": "get_weather_b", "type": "function", "function": {"name": "get_weather"}},
    ]
    body = chat_body(text=None, finish="TOOL_CALL", tool_plan="I will check.", tool_calls=calls)
    result = await adapter(answer(200, body)).chat(request(), SECRET)
    assert result.finish_reason == "tool_calls"
    assert result.message.content == "I will check."
    assert result.message.tool_calls == [
        ToolCall(id="get_weather_a", name="get_weather", arguments='{"city":"Oslo"}'),
        ToolCall(id="get_weather_b", name="get_weather", arguments=""),
    ]


async def test_thinking_is_not_the_answer(adapter: Make) -> None:
    body = chat_body()
    body["message"]["content"].insert(0, {"type": "thinking", "thinking": "hmm"})
    result = await adapter(answer(200, body)).chat(request(), SECRET)
    assert result.message.content == "Hello there"


async def test_malformed_answers(adapter: Make) -> None:
    with pytest.raises(InternalError):
        await adapter(answer(200, {"id": "x", "finish_reason": "COMPLETE"})).chat(request(), SECRET)
    with pytest.raises(RateLimited, match="error body"):
        body = {"id": "x", "message": "You are past the per minute request limit."}
        await adapter(answer(200, body)).chat(request(), SECRET)


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "cls", "retryable"),
    [
        (400, "invalid request: temperature must be between 0 and 1.0.", BadRequest, False),
        (400, "too many tokens: size limit exceeded by 280 tokens.", BadRequest, False),
        (401, "invalid api token", Unauthorized, False),
        (402, "Please add or update your payment method", QuotaExceeded, False),
        (404, "model 'x' not found, make sure the correct model ID was used", NotFound, False),
        (422, "unprocessable", BadRequest, False),
        (429, "You are past the per minute request limit, please wait and try again later.",
         RateLimited, True),
        (429, "You are using a Trial key, which is limited to 40 API calls / minute.",
         RateLimited, True),
        (429, "You are using a Trial key, which is limited to 1000 API calls / month. You can",
         QuotaExceeded, False),
        (498, "invalid token", Unauthorized, False),
        (499, "request cancelled", ProviderUnavailable, True),
        (500, "internal server error", ProviderUnavailable, True),
        (501, "not implemented", BadRequest, False),
        (503, "service unavailable", ProviderUnavailable, True),
        (504, "gateway timeout", ProviderUnavailable, True),
    ],
)  # fmt: skip
async def test_error_statuses_and_wording(
    adapter: Make, status: int, message: str, cls: type[FleetError], retryable: bool
) -> None:
    body = {"id": "0f8a-req", "message": message}
    with pytest.raises(FleetError) as info:
        await adapter(answer(status, body, {"retry-after": "3"})).chat(request(), SECRET)
    error = info.value
    assert type(error) is cls, error
    assert error.retryable is retryable
    assert error.provider_status == status
    assert error.provider_request_id == "0f8a-req"
    assert error.message.startswith(f"cohere: HTTP {status}")
    assert error.retry_after == (3.0 if retryable else None)


async def test_trial_monthly_limit_is_named(adapter: Make) -> None:
    body = {"message": "You are using a Trial key, which is limited to 1000 API calls / month."}
    with pytest.raises(QuotaExceeded) as info:
        await adapter(answer(429, body)).chat(request(), SECRET)
    assert "trial_key_monthly_limit" in info.value.message


async def test_errors_never_carry_the_key(adapter: Make) -> None:
    body = {"message": f"invalid api token {CANARY}"}
    with pytest.raises(Unauthorized) as info:
        await adapter(answer(401, body)).chat(request(), SECRET)
    assert CANARY not in info.value.message
    with pytest.raises(ProviderUnavailable) as plain:
        await adapter(lambda _: httpx.Response(502, text=f"<html>{CANARY}</html>")).chat(
            request(), SECRET
        )
    assert CANARY not in plain.value.message


# -- streams -------------------------------------------------------------------------------


def sse(*events: dict[str, Any], done: bool = False) -> bytes:
    out = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    return (out + ("data: [DONE]\n\n" if done else "")).encode()


START = {
    "id": "s1",
    "type": "message-start",
    "delta": {
        "message": {
            "role": "assistant",
            "content": [],
            "tool_plan": "",
            "tool_calls": [],
            "citations": [],
        }
    },
}
USAGE = {
    "billed_units": {"input_tokens": 3, "output_tokens": 2},
    "tokens": {"input_tokens": 70, "output_tokens": 2},
}


def text_delta(text: str) -> dict[str, Any]:
    return {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": text}}}}


def end(finish: str = "COMPLETE", **extra: Any) -> dict[str, Any]:
    return {"type": "message-end", "delta": {"finish_reason": finish, "usage": USAGE, **extra}}


CONTENT_START = {
    "type": "content-start",
    "index": 0,
    "delta": {"message": {"content": {"type": "text", "text": ""}}},
}


async def test_stream_text(adapter: Make) -> None:
    body = sse(
        START,
        CONTENT_START,
        text_delta("Héllo"),
        text_delta(" wörld"),
        {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"thinking": "x"}}}},
        {"type": "citation-start", "index": 0, "delta": {"message": {"citations": {}}}},
        {"type": "citation-end", "index": 0},
        {"type": "content-end", "index": 0},
        end(),
        done=True,
    )
    rec = Recorder(lambda _: stream_response(body))
    events = await collect(adapter(rec).stream_chat(request(), SECRET))
    assert events == [
        TextDelta("Héllo"),
        TextDelta(" wörld"),
        StreamEnd("stop", Usage(input_tokens=70, output_tokens=2, total_tokens=72)),
    ]
    assert rec.body["stream"] is True
    assert rec.requests[-1].headers["accept"] == "text/event-stream"


async def test_stream_tool_calls(adapter: Make) -> None:
    def call_start(index: int, call_id: str) -> dict[str, Any]:
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
        return {
            "type": "tool-call-start",
            "index": index,
            "delta": {"message": {"tool_calls": call}},
        }

    def call_delta(index: int, arguments: str) -> dict[str, Any]:
        call = {"function": {"arguments": arguments}}
        return {
            "type": "tool-call-delta",
            "index": index,
            "delta": {"message": {"tool_calls": call}},
        }

    plan = {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will"}}}
    body = sse(
        START,
        plan,
        call_start(0, "w_a"),
        call_delta(0, '{"city":'),
        call_delta(0, '"Oslo"}'),
        {"type": "tool-call-end", "index": 0},
        call_start(1, "w_b"),
        call_delta(1, "{}"),
        {"type": "tool-call-end", "index": 1},
        end("TOOL_CALL"),
    )
    events = await collect(adapter(lambda _: stream_response(body)).stream_chat(request(), SECRET))
    expected: list[StreamEvent] = [
        TextDelta("I will"),
        ToolDelta(ToolCallDelta(index=0, id="w_a", name="get_weather", arguments="")),
        ToolDelta(ToolCallDelta(index=0, arguments='{"city":')),
        ToolDelta(ToolCallDelta(index=0, arguments='"Oslo"}')),
        ToolDelta(ToolCallDelta(index=1, id="w_b", name="get_weather", arguments="")),
        ToolDelta(ToolCallDelta(index=1, arguments="{}")),
        StreamEnd("tool_calls", Usage(input_tokens=70, output_tokens=2, total_tokens=72)),
    ]
    assert events == expected


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        ("You are past the per minute request limit, please wait and try again later.",
         RateLimited),
        ("too many tokens: size limit exceeded by 12 tokens", BadRequest),
        ("invalid request: the rate limit field is unknown", BadRequest),
        ("internal server error", ProviderUnavailable),
        (None, ProviderUnavailable),
    ],
)  # fmt: skip
async def test_errors_inside_a_stream(
    adapter: Make, error: str | None, cls: type[FleetError]
) -> None:
    extra = {"error": error} if error is not None else {}
    body = sse(START, CONTENT_START, text_delta("Hi"), end("ERROR", **extra))
    got: list[StreamEvent] = []
    with pytest.raises(cls) as info:
        async for event in adapter(lambda _: stream_response(body)).stream_chat(request(), SECRET):
            got.append(event)
    assert got == [TextDelta("Hi")]
    assert info.value.message.startswith("cohere: stream error")
    assert info.value.provider_status is not None


async def test_an_error_said_is_an_error(adapter: Make) -> None:
    body = sse(START, end("COMPLETE", error="internal server error"))
    with pytest.raises(ProviderUnavailable):
        await collect(adapter(lambda _: stream_response(body)).stream_chat(request(), SECRET))


async def test_stream_timeout_and_bare_json_error(adapter: Make) -> None:
    body = sse(START, end("TIMEOUT"))
    with pytest.raises(ProviderTimeout):
        await collect(adapter(lambda _: stream_response(body)).stream_chat(request(), SECRET))
    bare = sse(START) + b'{"id":"r","message":"invalid api token"}\n'
    with pytest.raises(Unauthorized):
        await collect(adapter(lambda _: stream_response(bare)).stream_chat(request(), SECRET))


async def test_stream_cut_before_message_end(adapter: Make) -> None:
    body = sse(START, CONTENT_START, text_delta("Hi"))
    with pytest.raises(ProviderUnavailable, match="message-end"):
        await collect(adapter(lambda _: stream_response(body)).stream_chat(request(), SECRET))


async def test_malformed_stream_event(adapter: Make) -> None:
    body = b"event: content-delta\ndata: {not json}\n\n"
    with pytest.raises(ProviderUnavailable, match="malformed"):
        await collect(adapter(lambda _: stream_response(body)).stream_chat(request(), SECRET))


async def test_stream_http_error(adapter: Make) -> None:
    body = {"id": "r2", "message": "invalid api token"}
    with pytest.raises(Unauthorized):
        await collect(adapter(answer(401, body)).stream_chat(request(), SECRET))


# -- embed, rerank, verify ---------------------------------------------------------------


def embed_handler(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    vectors = [[float(len(text)), 1.0] for text in body["texts"]]
    meta = {"api_version": {"version": "2"}, "billed_units": {"input_tokens": len(vectors)}}
    return httpx.Response(
        200,
        json={
            "id": "e1",
            "embeddings": {"float": vectors},
            "texts": body["texts"],
            "meta": meta,
            "response_type": "embeddings_by_type",
        },
    )


async def test_embed_in_batches_in_order(adapter: Make) -> None:
    rec = Recorder(embed_handler)
    inputs = ["x" * (i % 50 + 1) for i in range(2 * BATCH + 5)]
    req = EmbedRequest(model="embed-v4.0", inputs=inputs, input_type="query", dimensions=256)
    result = await adapter(rec).embed(req, SECRET)
    assert [len(json.loads(r.content)["texts"]) for r in rec.requests] == [BATCH, BATCH, 5]
    first = json.loads(rec.requests[0].content)
    assert {k: v for k, v in first.items() if k != "texts"} == {
        "model": "embed-v4.0",
        "input_type": "search_query",
        "embedding_types": ["float"],
        "output_dimension": 256,
    }
    assert rec.requests[0].url == "https://cohere.test/v2/embed"
    assert (result.count, result.dims) == (len(inputs), 2)
    rows = [struct.unpack_from("<2f", result.data, i * 8) for i in range(result.count)]
    assert [row[0] for row in rows] == [float(len(text)) for text in inputs]
    assert result.usage == Usage(input_tokens=len(inputs), total_tokens=len(inputs))


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        (None, "search_document"),
        ("document", "search_document"),
        ("classification", "classification"),
        ("CLUSTERING", "clustering"),
    ],
)
async def test_embed_input_types(adapter: Make, given: str | None, sent: str) -> None:
    rec = Recorder(embed_handler)
    await adapter(rec).embed(EmbedRequest(model="m", inputs=["a"], input_type=given), SECRET)
    assert rec.body["input_type"] == sent
    assert "output_dimension" not in rec.body


async def test_embed_refusals_and_failures(adapter: Make) -> None:
    with pytest.raises(BadRequest, match="input_type"):
        await adapter(embed_handler).embed(
            EmbedRequest(model="m", inputs=["a"], input_type="poem"), SECRET
        )
    calls = 0

    def fail_second(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if json.loads(request.content)["texts"][0] == "second":
            return httpx.Response(429, json={"message": "Please wait and try again later"})
        return embed_handler(request)

    inputs = ["first"] * BATCH + ["second"] * BATCH
    with pytest.raises(RateLimited):
        await adapter(fail_second).embed(EmbedRequest(model="m", inputs=inputs), SECRET)
    short = answer(200, {"id": "e", "embeddings": {"float": [[1.0]]}, "meta": {}})
    with pytest.raises(InternalError, match="expected 2"):
        await adapter(short).embed(EmbedRequest(model="m", inputs=["a", "b"]), SECRET)


async def test_rerank(adapter: Make) -> None:
    payload = {
        "id": "r",
        "results": [{"index": 2, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}],
        "meta": {"billed_units": {"search_units": 1.0}},
    }
    rec = Recorder(answer(200, payload))
    req = RerankRequest(model="rerank-v3.5", query="q", documents=["a", "b", "c"], top_n=2)
    result = await adapter(rec).rerank(req, SECRET)
    assert rec.requests[-1].url == "https://cohere.test/v2/rerank"
    assert rec.body == {
        "model": "rerank-v3.5",
        "query": "q",
        "documents": ["a", "b", "c"],
        "top_n": 2,
    }
    assert result.items == [RerankItem(index=2, score=0.9), RerankItem(index=0, score=0.1)]
    assert result.usage == Usage(search_units=1)
    with pytest.raises(InternalError):
        await adapter(answer(200, {"results": [{"index": 0}]})).rerank(req, SECRET)


async def test_verify(adapter: Make) -> None:
    rec = Recorder(answer(200, {"valid": True, "organization_id": "org-1", "owner_id": "o"}))
    good = await adapter(rec).verify(SECRET)
    assert good.ok and "org-1" in good.detail
    assert rec.requests[-1].method == "POST"
    assert rec.requests[-1].url == "https://cohere.test/v1/check-api-key"
    invalid = await adapter(answer(200, {"valid": False})).verify(SECRET)
    assert not invalid.ok and invalid.detail
    refused = await adapter(answer(401, {"message": "invalid api token"})).verify(SECRET)
    assert not refused.ok and "invalid api token" in refused.detail
    with pytest.raises(ProviderUnavailable):
        await adapter(answer(503, {"message": "service unavailable"})).verify(SECRET)


async def test_credential_base_url_wins(adapter: Make) -> None:
    rec = Recorder(answer(200, chat_body()))
    secret = Secret({"api_key": CANARY, "base_url": "https://cohere.private.test/"})
    await adapter(rec, base=None).chat(request(), secret)
    assert rec.requests[-1].url == "https://cohere.private.test/v2/chat"

"""The official `anthropic` SDK as an independent judge of the Anthropic mock.

The SDK must parse every body and stream the mock sends and raise its own typed
error for every fault; raw bodies are validated with the SDK's own response
models too, and any field those models do not know (`model_extra`) fails.

The installed SDK (2.x) authenticates with `Authorization: Bearer <key>` and
sends a 2026 `anthropic-version`; the mock accepts both, as it does `x-api-key`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx
import pydantic
import pytest
from anthropic.types import (
    ErrorResponse,
    Message,
    ModelInfo,
    RawMessageStreamEvent,
)

from providers.anthropic.tests.schema_check import problems
from providers.anthropic.tests.schemas import LOOKUP_SCHEMA, Forecast
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from providers.mock.text import answer_rng, answer_tokens

MODEL = "mock-claude"  # "mock-" names are always served; real ones may warn as deprecated
HELLO: list[Any] = [{"role": "user", "content": "Say hello to the fleet"}]
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "units": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
    },
    "required": ["city", "units", "days"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {"name": "lookup", "description": "Look up", "input_schema": LOOKUP_SCHEMA},
    {"name": "weather", "input_schema": WEATHER_SCHEMA},
]
_EVENTS: pydantic.TypeAdapter[RawMessageStreamEvent] = pydantic.TypeAdapter(RawMessageStreamEvent)


@pytest.fixture
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig(context_window=5000), "127.0.0.1", 0)
    yield running
    await running.close()


@pytest.fixture
async def client(mock: RunningMock) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(
        base_url=mock.sdk_url("anthropic"), api_key="mock-key", max_retries=0
    )
    yield sdk
    await sdk.close()


@pytest.fixture
async def raw(mock: RunningMock) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"x-api-key": "mock-key", "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=mock.url("anthropic"), headers=headers) as http:
        yield http


def _models(value: Any) -> Iterator[pydantic.BaseModel]:
    if isinstance(value, pydantic.BaseModel):
        yield value
        for name in type(value).model_fields:
            yield from _models(getattr(value, name))
    elif isinstance(value, list):
        for item in value:
            yield from _models(item)


def assert_no_invented_fields(value: pydantic.BaseModel) -> None:
    for model in _models(value):
        assert not model.model_extra, f"{type(model).__name__} has unknown {model.model_extra}"


def sse_events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in body.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            assert name.startswith("event: ") and data.startswith("data: ")
            events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def hello_text(count: int) -> str:
    return "".join(answer_tokens(answer_rng(HELLO, None), count))


# -- bodies and streams ------------------------------------------------------------------


async def test_create_text_is_parsed_and_valid(
    client: anthropic.AsyncAnthropic, raw: httpx.AsyncClient
) -> None:
    message = await client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert message.content[0].type == "text"
    assert message.content[0].text == hello_text(5)
    assert message.stop_reason == "max_tokens"
    assert message.usage.input_tokens == 5 and message.usage.output_tokens == 5
    response = await raw.post(
        "/messages", json={"model": MODEL, "max_tokens": 5, "messages": HELLO}
    )
    assert response.status_code == 200
    assert response.headers["request-id"].startswith("req_")
    assert_no_invented_fields(Message.model_validate(response.json()))


async def test_create_with_parallel_tools(
    client: anthropic.AsyncAnthropic, raw: httpx.AsyncClient
) -> None:
    asks: list[Any] = [{"role": "user", "content": "please use tools"}]
    message = await client.messages.create(model=MODEL, max_tokens=100, messages=asks, tools=TOOLS)
    assert message.stop_reason == "tool_use"
    uses = [b for b in message.content if b.type == "tool_use"]
    assert [u.name for u in uses] == ["lookup", "weather"]
    assert all(u.id.startswith("toolu_") for u in uses)
    assert problems(uses[0].input, LOOKUP_SCHEMA) == []
    assert problems(uses[1].input, WEATHER_SCHEMA) == []
    assert set(uses[1].input) == {"city", "units", "days"}
    single = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=asks,
        tools=TOOLS,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert [b.type for b in single.content] == ["tool_use"]
    body = {"model": MODEL, "max_tokens": 100, "messages": asks, "tools": TOOLS}
    response = await raw.post("/messages", json=body)
    assert_no_invented_fields(Message.model_validate(response.json()))


async def test_stream_helper_text(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(model=MODEL, max_tokens=12, messages=HELLO) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == hello_text(12)
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 12 and final.usage.input_tokens == 5


@pytest.mark.parametrize(("spec", "tokens"), [("filtered", 0), ("filtered-after:3", 3)])
async def test_refusal_as_the_sdk_reads_it(
    client: anthropic.AsyncAnthropic, raw: httpx.AsyncClient, spec: str, tokens: int
) -> None:
    headers = {"x-mock-fault": spec}
    message = await client.messages.create(
        model=MODEL, max_tokens=12, messages=HELLO, extra_headers=headers
    )
    assert message.stop_reason == "refusal"
    assert "".join(b.text for b in message.content if b.type == "text") == hello_text(tokens)
    assert message.usage.output_tokens == tokens
    body = {"model": MODEL, "max_tokens": 12, "messages": HELLO}
    response = await raw.post("/messages", json=body, headers=headers)
    assert_no_invented_fields(Message.model_validate(response.json()))
    async with client.messages.stream(
        model=MODEL, max_tokens=12, messages=HELLO, extra_headers=headers
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == hello_text(tokens) and final.stop_reason == "refusal"


async def test_stream_helper_parallel_tools(client: anthropic.AsyncAnthropic) -> None:
    asks: list[Any] = [{"role": "user", "content": "Use tools now"}]
    whole = await client.messages.create(model=MODEL, max_tokens=100, messages=asks, tools=TOOLS)
    async with client.messages.stream(
        model=MODEL, max_tokens=100, messages=asks, tools=TOOLS
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    streamed = [(b.name, b.input) for b in final.content if b.type == "tool_use"]
    created = [(b.name, b.input) for b in whole.content if b.type == "tool_use"]
    assert streamed == created and len(streamed) == 2
    assert problems(streamed[0][1], LOOKUP_SCHEMA) == problems(streamed[1][1], WEATHER_SCHEMA) == []
    assert final.usage.output_tokens == whole.usage.output_tokens


@pytest.mark.parametrize("tools", [False, True])
async def test_raw_stream_events_validate(
    client: anthropic.AsyncAnthropic, raw: httpx.AsyncClient, tools: bool
) -> None:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 4, "messages": HELLO, "stream": True}
    if tools:
        body |= {"tools": TOOLS, "tool_choice": {"type": "any"}}
    response = await raw.post("/messages", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.content)
    for name, data in events:
        assert data["type"] == name
        if name == "ping":
            assert data == {"type": "ping"}
        else:
            assert_no_invented_fields(_EVENTS.validate_python(data))
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    # And the SDK's own event stream reads the same sequence, ping left out.
    sdk_stream = await client.messages.create(**body)
    seen = [event.type async for event in sdk_stream]
    assert seen == [n for n in names if n != "ping"]


async def test_output_format_is_parsed_by_the_sdk(client: anthropic.AsyncAnthropic) -> None:
    parsed = await client.messages.parse(
        model=MODEL, max_tokens=200, messages=HELLO, output_format=Forecast
    )
    assert isinstance(parsed.parsed_output, Forecast)
    assert parsed.stop_reason == "end_turn"
    async with client.messages.stream(
        model=MODEL, max_tokens=200, messages=HELLO, output_format=Forecast
    ) as stream:
        final = await stream.get_final_message()
    assert final.parsed_output == parsed.parsed_output
    assert final.usage.output_tokens == parsed.usage.output_tokens
    schema: dict[str, object] = {**LOOKUP_SCHEMA, "required": ["query", "limit"]}
    plain = await client.messages.create(
        model=MODEL,
        max_tokens=200,
        messages=HELLO,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert plain.content[0].type == "text"
    assert problems(json.loads(plain.content[0].text), schema) == []


@pytest.mark.parametrize("at_once", [False, True])
async def test_stop_sequences_as_the_sdk_reads_them(
    client: anthropic.AsyncAnthropic, raw: httpx.AsyncClient, at_once: bool
) -> None:
    text = hello_text(20)
    stop = text.split()[0 if at_once else 6]
    sent = text[: text.index(stop)]
    stops = ["not in the text", stop]
    message = await client.messages.create(
        model=MODEL, max_tokens=20, messages=HELLO, stop_sequences=stops
    )
    async with client.messages.stream(
        model=MODEL, max_tokens=20, messages=HELLO, stop_sequences=stops
    ) as stream:
        pieces = [piece async for piece in stream.text_stream]
        final = await stream.get_final_message()
    for answer in (message, final):
        assert (answer.stop_reason, answer.stop_sequence) == ("stop_sequence", stop)
        assert "".join(b.text for b in answer.content if b.type == "text") == sent
        assert answer.usage.output_tokens == len(pieces)  # what was sent, no more
    assert "".join(pieces) == sent and (pieces == []) == at_once
    assert final.usage.output_tokens == message.usage.output_tokens
    body = {"model": MODEL, "max_tokens": 20, "messages": HELLO, "stop_sequences": stops}
    assert_no_invented_fields(
        Message.model_validate((await raw.post("/messages", json=body)).json())
    )
    events = sse_events((await raw.post("/messages", json={**body, "stream": True})).content)
    for _, data in events:
        if data["type"] != "ping":
            assert_no_invented_fields(_EVENTS.validate_python(data))


async def test_prompt_cache_usage(client: anthropic.AsyncAnthropic) -> None:
    system: Any = [
        {"type": "text", "text": "You are a long and stable system prompt " * 5},
        {"type": "text", "text": "cached up to here", "cache_control": {"type": "ephemeral"}},
    ]
    first = await client.messages.create(model=MODEL, max_tokens=3, system=system, messages=HELLO)
    second = await client.messages.create(model=MODEL, max_tokens=3, system=system, messages=HELLO)
    assert first.usage.cache_creation_input_tokens == 44
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == 44
    assert second.usage.cache_creation_input_tokens == 0
    assert first.usage.input_tokens == second.usage.input_tokens == 5


async def test_models_list_retrieve_and_count_tokens(
    client: anthropic.AsyncAnthropic, raw: httpx.AsyncClient
) -> None:
    ids = [m.id async for m in client.models.list(limit=3)]  # pages through them all
    assert ids == list(MockConfig().models)
    info = await client.models.retrieve("claude-3-5-haiku-latest")
    assert info.id == "claude-3-5-haiku-latest" and info.type == "model"
    page = (await raw.get("/models")).json()
    for item in page["data"]:
        assert_no_invented_fields(ModelInfo.model_validate(item))
    count = await client.messages.count_tokens(model=MODEL, messages=HELLO)
    assert count.input_tokens == 5


# -- errors ----------------------------------------------------------------------------

FAULTS = [
    ("400", anthropic.BadRequestError, 400, "invalid_request_error"),
    ("401", anthropic.AuthenticationError, 401, "authentication_error"),
    ("403", anthropic.PermissionDeniedError, 403, "permission_error"),
    ("404", anthropic.NotFoundError, 404, "not_found_error"),
    ("429:retry-after=2", anthropic.RateLimitError, 429, "rate_limit_error"),
    ("quota", anthropic.PaymentRequiredError, 402, "billing_error"),
    ("context", anthropic.BadRequestError, 400, "invalid_request_error"),
    ("overloaded", anthropic.OverloadedError, 529, "overloaded_error"),
    ("500", anthropic.InternalServerError, 500, "api_error"),
    ("503", anthropic.ServiceUnavailableError, 503, "api_error"),
    ("504", anthropic.GatewayTimeoutError, 504, "timeout_error"),
]


@pytest.mark.parametrize(("spec", "cls", "status", "kind"), FAULTS)
@pytest.mark.parametrize("stream", [False, True])
async def test_every_fault_is_the_sdks_typed_error(
    client: anthropic.AsyncAnthropic,
    spec: str,
    cls: type[anthropic.APIStatusError],
    status: int,
    kind: str,
    stream: bool,
) -> None:
    with pytest.raises(cls) as info:
        if stream:
            async with client.messages.stream(
                model=MODEL, max_tokens=5, messages=HELLO, extra_headers={"x-mock-fault": spec}
            ) as events:
                await events.get_final_message()
        else:
            await client.messages.create(
                model=MODEL, max_tokens=5, messages=HELLO, extra_headers={"x-mock-fault": spec}
            )
    error = info.value
    assert error.status_code == status
    assert error.type == kind
    assert error.request_id is not None and error.request_id.startswith("req_")
    assert_no_invented_fields(ErrorResponse.model_validate(error.body))
    if status == 429:
        assert error.response.headers["retry-after"] == "2"


async def test_mid_stream_error_event_raises(client: anthropic.AsyncAnthropic) -> None:
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(
            model=MODEL,
            max_tokens=10,
            messages=HELLO,
            extra_headers={"x-mock-fault": "stream-error-after:3"},
        ) as stream:
            async for text in stream.text_stream:
                received.append(text)
    assert "".join(received) == hello_text(3)
    assert info.value.type == "overloaded_error"
    assert_no_invented_fields(ErrorResponse.model_validate(info.value.body))


async def test_unknown_model_and_context_overflow(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="claude-nonexistent", max_tokens=5, messages=HELLO)
    assert missing.value.api_message == "model: claude-nonexistent"
    with pytest.raises(anthropic.NotFoundError):
        await client.models.retrieve("claude-nonexistent")
    with pytest.raises(anthropic.BadRequestError) as overflow:
        await client.messages.create(model=MODEL, max_tokens=4999, messages=HELLO)
    assert overflow.value.api_message is not None
    assert "exceed context limit: 5 + 4999 > 5000" in overflow.value.api_message
    long_prompt: Any = [{"role": "user", "content": "word " * 5001}]
    with pytest.raises(anthropic.BadRequestError) as too_long:
        await client.messages.create(model=MODEL, max_tokens=1, messages=long_prompt)
    assert too_long.value.api_message == "prompt is too long: 5001 tokens > 5000 maximum"


async def test_bad_key_and_bad_requests(
    mock: RunningMock, client: anthropic.AsyncAnthropic
) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=mock.sdk_url("anthropic"), api_key="wrong-key", max_retries=0
    ) as wrong:
        with pytest.raises(anthropic.AuthenticationError) as info:
            await wrong.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert info.value.api_message == "invalid x-api-key"
    system_role: Any = [{"role": "system", "content": "x"}, *HELLO]
    with pytest.raises(anthropic.BadRequestError, match='Unexpected role "system"'):
        await client.messages.create(model=MODEL, max_tokens=5, messages=system_role)

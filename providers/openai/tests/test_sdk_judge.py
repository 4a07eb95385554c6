"""The official `openai` SDK judges the mock: every body and stream must parse, every
fault must become the SDK's own typed error.

Two judges: the SDK client itself (what an application sees), and the SDK's
pydantic response models validating the raw bytes strictly, with no field the
models do not know (`model_extra` empty all the way down).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import httpx
import openai
import pydantic
import pytest
from openai import AsyncOpenAI
from openai.types import CreateEmbeddingResponse, Model
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)

from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock

KEY = "mock-key"
M = TypeVar("M", bound=pydantic.BaseModel)
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello to the fleet"}]


@pytest.fixture(scope="module")
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig())
    yield running
    await running.close()


@pytest.fixture
async def sdk(mock: RunningMock) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(base_url=mock.sdk_url("openai"), api_key=KEY, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def raw(mock: RunningMock) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=mock.base_url, headers=headers) as client:
        yield client


def tool(name: str) -> ChatCompletionFunctionToolParam:
    params: dict[str, object] = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    }
    return {"type": "function", "function": {"name": name, "parameters": params}}


# ---------------------------------------------------------------- strict validation


def extras(value: object, path: str = "") -> Iterator[str]:
    """Paths of fields a response model did not declare."""
    if isinstance(value, pydantic.BaseModel):
        for name in value.model_extra or {}:
            yield f"{path}.{name}"
        for name in type(value).model_fields:
            yield from extras(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from extras(item, f"{path}[{i}]")


def strictly(model: type[M], payload: Any) -> M:
    parsed = model.model_validate(payload, strict=True)
    assert list(extras(parsed)) == []
    return parsed


async def raw_chunks(http: httpx.AsyncClient, body: dict[str, Any]) -> list[ChatCompletionChunk]:
    chunks: list[ChatCompletionChunk] = []
    async with http.stream("POST", "/chat/completions", json={**body, "stream": True}) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            data = line.removeprefix("data: ")
            if line.startswith("data: ") and data != "[DONE]":
                chunks.append(strictly(ChatCompletionChunk, json.loads(data)))
    return chunks


STRICT_BODIES: list[dict[str, Any]] = [
    {},
    {"max_tokens": 3},
    {"n": 2, "max_tokens": 4},
    {"stop": ["queue"]},
    {"tools": [tool("weather"), tool("time")], "tool_choice": "required"},
    {"tools": [tool("weather")], "tool_choice": "required", "parallel_tool_calls": False},
    {"model": "o3-mini", "max_completion_tokens": 5},
    {
        "messages": [{"role": "user", "content": "json please"}],
        "response_format": {"type": "json_object"},
    },
    {"service_tier": "flex", "seed": 3},
]


@pytest.mark.parametrize("extra", STRICT_BODIES)
async def test_bodies_and_chunks_validate_strictly(
    raw: httpx.AsyncClient, extra: dict[str, Any]
) -> None:
    body = {"model": "mock-model", "messages": ASK, **extra}
    resp = await raw.post("/chat/completions", json=body)
    assert resp.status_code == 200
    completion = strictly(ChatCompletion, resp.json())
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    for options in (None, {"include_usage": True}, {"include_obfuscation": False}):
        streamed = {**body, **({"stream_options": options} if options else {})}
        chunks = await raw_chunks(raw, streamed)
        with_usage = options is not None and options.get("include_usage")
        assert (chunks[-1].usage is not None) is bool(with_usage)
        assert all(c.usage is None for c in chunks[:-1])


async def test_embeddings_and_models_validate_strictly(raw: httpx.AsyncClient) -> None:
    for encoding in ("float", "base64"):
        body = {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": encoding}
        resp = await raw.post("/embeddings", json=body)
        if encoding == "float":
            strictly(CreateEmbeddingResponse, resp.json())
    listed = (await raw.get("/models")).json()
    assert listed["object"] == "list"
    for item in listed["data"]:
        strictly(Model, item)
    strictly(Model, (await raw.get("/models/gpt-4o")).json())


# ---------------------------------------------------------------- the SDK client


async def test_plain_chat(sdk: AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content
    assert choice.message.refusal is None
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert completion.system_fingerprint and completion.system_fingerprint.startswith("fp_")


async def test_stream_with_usage(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=ASK,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=5,
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert len(text.split()) == 5 and finish == "length"
    assert usage is not None and usage.completion_tokens == 5


@pytest.mark.parametrize(("spec", "words"), [("filtered", 0), ("filtered-after:3", 3)])
async def test_content_filter_finish(sdk: AsyncOpenAI, spec: str, words: int) -> None:
    headers = {"x-mock-fault": spec}
    completion = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=ASK, extra_headers=headers
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "content_filter"
    assert len((choice.message.content or "").split()) == words
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=ASK, stream=True, extra_headers=headers
    )
    finishes = [c.choices[0].finish_reason async for c in stream if c.choices]
    assert finishes[-1] == "content_filter"


async def test_stream_helper_assembles_parallel_tool_calls(sdk: AsyncOpenAI) -> None:
    for fault in ("", "interleave"):
        async with sdk.chat.completions.stream(
            model="gpt-4o-mini",
            messages=ASK,
            tools=[tool("weather"), tool("time")],
            tool_choice="required",
            extra_headers={"x-mock-fault": fault} if fault else None,
        ) as stream:
            final = await stream.get_final_completion()
        calls = final.choices[0].message.tool_calls or []
        assert [c.function.name for c in calls] == ["weather", "time"]
        for call in calls:
            assert set(json.loads(call.function.arguments)) == {"city", "days"}


async def test_n_and_stop(sdk: AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=ASK,
        n=2,
        stop=["."],
    )
    assert [c.index for c in completion.choices] == [0, 1]
    for choice in completion.choices:
        assert choice.finish_reason == "stop"
        assert choice.message.content and "." not in choice.message.content


async def test_json_modes(sdk: AsyncOpenAI) -> None:
    ask: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Reply in json"}]
    plain = await sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=ask,
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(plain.choices[0].message.content or ""), dict)

    class Step(pydantic.BaseModel):
        explanation: str
        output: str

    class Math(pydantic.BaseModel):
        steps: list[Step]
        final_answer: float
        confident: bool

    parsed = await sdk.chat.completions.parse(
        model="gpt-4o",
        messages=ask,
        response_format=Math,
    )
    answer = parsed.choices[0].message.parsed
    assert isinstance(answer, Math) and answer.steps


async def test_embeddings(sdk: AsyncOpenAI) -> None:
    floats = await sdk.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], dimensions=8, encoding_format="float"
    )
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    decoded = await sdk.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], dimensions=8
    )
    assert [d.embedding for d in floats.data] == [d.embedding for d in decoded.data]
    assert floats.usage.prompt_tokens == 2


async def test_models(sdk: AsyncOpenAI) -> None:
    ids = [m.id async for m in sdk.models.list()]
    assert "gpt-4o-mini" in ids
    assert (await sdk.models.retrieve("gpt-4o-mini")).id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.models.retrieve("gpt-nope")
    assert info.value.code == "model_not_found"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("spec", "error", "code", "type_"),
    [
        ("400", openai.BadRequestError, None, "invalid_request_error"),
        ("401", openai.AuthenticationError, "invalid_api_key", "invalid_request_error"),
        (
            "403",
            openai.PermissionDeniedError,
            "unsupported_country_region_territory",
            "request_forbidden",
        ),
        ("404", openai.NotFoundError, "model_not_found", "invalid_request_error"),
        ("429:retry-after=1", openai.RateLimitError, "rate_limit_exceeded", "requests"),
        ("quota", openai.RateLimitError, "insufficient_quota", "insufficient_quota"),
        ("context", openai.BadRequestError, "context_length_exceeded", "invalid_request_error"),
        ("overloaded", openai.InternalServerError, None, "server_error"),
        ("500", openai.InternalServerError, None, "server_error"),
        ("502", openai.InternalServerError, "502", "cf_bad_gateway"),
        ("503", openai.InternalServerError, "503", "cf_service_unavailable"),
        ("504", openai.InternalServerError, "504", "cf_gateway_timeout"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_every_fault_is_the_sdks_typed_error(
    sdk: AsyncOpenAI,
    spec: str,
    error: type[openai.APIStatusError],
    code: str | None,
    type_: str,
    stream: bool,
) -> None:
    with pytest.raises(error) as info:
        await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=ASK,
            stream=stream,
            extra_headers={"x-mock-fault": spec},
        )
    assert type(info.value) is error
    assert (info.value.code, info.value.type) == (code, type_)
    assert info.value.request_id and info.value.request_id.startswith("req_")
    if spec.startswith("429"):
        assert info.value.response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("spec", "type_"),
    [
        ("stream-error-after:3", "server_error"),
        ("stream-error-after:0:quota", "insufficient_quota"),
    ],
)
async def test_in_stream_error_is_raised_while_iterating(
    sdk: AsyncOpenAI, spec: str, type_: str
) -> None:
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=ASK,
        stream=True,
        extra_headers={"x-mock-fault": spec},
    )
    text = ""
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            text += "".join(c.delta.content or "" for c in chunk.choices)
    assert not isinstance(info.value, openai.APIStatusError)  # a 200 that failed midway
    assert info.value.type == type_
    assert len(text.split()) == int(spec.split(":")[1])


async def test_dropped_connection_is_a_connection_error(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=ASK,
            extra_headers={"x-mock-fault": "drop-after:0"},
        )


async def test_refusals_of_bad_requests(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.chat.completions.create(model="gpt-nope", messages=ASK)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as old_name:
        await sdk.chat.completions.create(
            model="o3-mini",
            messages=ASK,
            max_tokens=5,
        )
    assert (old_name.value.code, old_name.value.param) == ("unsupported_parameter", "max_tokens")
    with pytest.raises(openai.BadRequestError) as too_long:
        await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=ASK,
            max_completion_tokens=200_000,
        )
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.AuthenticationError) as bad_key:
        await sdk.with_options(api_key="sk-not-the-key-1234").models.list()
    assert bad_key.value.code == "invalid_api_key"
    assert "sk-not-the" not in str(bad_key.value) and "1234" in str(bad_key.value)


async def test_rate_limiter_is_the_sdks_rate_limit_error() -> None:
    mock = await start_mock(MockConfig(requests_per_minute=1))
    try:
        async with AsyncOpenAI(base_url=mock.sdk_url("openai"), api_key=KEY, max_retries=0) as sdk:
            first = await sdk.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=ASK,
            )
            assert first.headers["x-ratelimit-remaining-requests"] == "0"
            with pytest.raises(openai.RateLimitError) as info:
                await sdk.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    finally:
        await mock.close()
    assert (info.value.code, info.value.type) == ("rate_limit_exceeded", "requests")
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert int(info.value.response.headers["retry-after-ms"]) > 0

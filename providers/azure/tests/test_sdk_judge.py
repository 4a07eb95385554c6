"""The official `openai` SDK's Azure client judges the Azure mock: every body and
stream must parse, every fault must become the SDK's own typed error.

Two judges: `openai.AsyncAzureOpenAI` itself, signed in with an API key and with
an Entra ID token provider (tokens from the mock's own token endpoint), and the
SDK's pydantic models validating raw bytes strictly, where the only fields they
may not know are Azure's filter verdicts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import openai
import pydantic
import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI
from openai.types import CreateEmbeddingResponse
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)

from providers.azure.mock import ENTRA_CREDENTIALS
from providers.azure.mock_entra import SCOPES
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock

KEY = "mock-key"
VERSION = "2024-10-21"
M = TypeVar("M", bound=pydantic.BaseModel)
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello to the fleet"}]
# What Azure adds to OpenAI's shapes; the SDK's models keep them as extras.
AZURE_EXTRAS = {"content_filter_results", "prompt_filter_results", "content_filter_offsets"}


@pytest.fixture(scope="module")
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig())
    yield running
    await running.close()


def token_provider(mock: RunningMock, fetched: list[str]) -> Callable[[], Awaitable[str]]:
    """What `azure.identity`'s provider does: client credentials at the token endpoint."""
    url = (mock.token_url("azure") or "").replace("{tenant_id}", ENTRA_CREDENTIALS["tenant_id"])

    async def provide() -> str:
        form = {
            "grant_type": "client_credentials",
            "client_id": ENTRA_CREDENTIALS["client_id"],
            "client_secret": ENTRA_CREDENTIALS["client_secret"],
            "scope": sorted(SCOPES)[0],
        }
        async with httpx.AsyncClient() as http:
            response = await http.post(url, data=form)
        response.raise_for_status()
        token: str = response.json()["access_token"]
        fetched.append(token)
        return token

    return provide


@pytest.fixture(params=["api-key", "entra"])
async def sdk(request: pytest.FixtureRequest, mock: RunningMock) -> AsyncIterator[AsyncAzureOpenAI]:
    endpoint = mock.sdk_url("azure")
    if request.param == "api-key":
        client = AsyncAzureOpenAI(
            azure_endpoint=endpoint, api_key=KEY, api_version=VERSION, max_retries=0
        )
    else:
        client = AsyncAzureOpenAI(
            azure_endpoint=endpoint,
            azure_ad_token_provider=token_provider(mock, []),
            api_version=VERSION,
            max_retries=0,
        )
    yield client
    await client.close()


@pytest.fixture
async def raw(mock: RunningMock) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"api-key": KEY}
    async with httpx.AsyncClient(base_url=mock.url("azure"), headers=headers) as client:
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
    """Paths of fields a response model did not declare, Azure's verdicts aside."""
    if isinstance(value, pydantic.BaseModel):
        for name in value.model_extra or {}:
            if name not in AZURE_EXTRAS:
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


STRICT_BODIES: list[dict[str, Any]] = [
    {},
    {"max_completion_tokens": 3},
    {"n": 2, "max_tokens": 4},
    {"tools": [tool("weather"), tool("time")], "tool_choice": "required"},
    {"messages": [{"role": "user", "content": "json"}], "response_format": {"type": "json_object"}},
]


@pytest.mark.parametrize("extra", STRICT_BODIES)
async def test_bodies_and_chunks_validate_strictly(
    raw: httpx.AsyncClient, extra: dict[str, Any]
) -> None:
    path = "/openai/deployments/gpt-4o-mini/chat/completions"
    body = {"messages": ASK, **extra}
    resp = await raw.post(path, params={"api-version": VERSION}, json=body)
    assert resp.status_code == 200
    strictly(ChatCompletion, resp.json())
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with raw.stream("POST", path, params={"api-version": VERSION}, json=streamed) as s:
        lines = [line.removeprefix("data: ") async for line in s.aiter_lines() if line]
    first, *chunks, done = lines
    assert done == "[DONE]"
    # Azure's filter-only first chunk fails the SDK's model (an empty `object`), as
    # real Azure's does (see the recording): the SDK builds chunks without validating,
    # and the client tests below read streams starting with it. Its keys are the
    # recording's.
    assert sorted(json.loads(first)) == [
        "choices",
        "created",
        "id",
        "model",
        "object",
        "prompt_filter_results",
    ]
    parsed = [strictly(ChatCompletionChunk, json.loads(c)) for c in chunks]
    assert parsed[-1].usage is not None and parsed[-1].choices == []


async def test_embeddings_validate_strictly(raw: httpx.AsyncClient) -> None:
    path = "/openai/deployments/text-embedding-3-small/embeddings"
    resp = await raw.post(path, params={"api-version": VERSION}, json={"input": ["a", "b"]})
    strictly(CreateEmbeddingResponse, resp.json())


# ---------------------------------------------------------------- the SDK client


async def test_plain_chat(sdk: AsyncAzureOpenAI) -> None:
    completion = await sdk.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert (choice.model_extra or {})["content_filter_results"]["hate"]["severity"] == "safe"


async def test_stream_with_usage(sdk: AsyncAzureOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=ASK,
        stream=True,
        stream_options={"include_usage": True},
        max_completion_tokens=5,
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert len(text.split()) == 5 and finish == "length"
    assert usage is not None and usage.completion_tokens == 5


async def test_stream_helper_assembles_parallel_tool_calls(sdk: AsyncAzureOpenAI) -> None:
    for fault in ("", "interleave"):
        async with sdk.chat.completions.stream(
            model="gpt-4o-mini",
            messages=ASK,
            tools=[tool("weather"), tool("time")],
            tool_choice="required",
            extra_headers={"x-mock-fault": fault} if fault else None,
        ) as stream:
            final = await stream.get_final_completion()
        assert final.choices[0].finish_reason == "tool_calls"
        calls = final.choices[0].message.tool_calls or []
        assert [c.function.name for c in calls] == ["weather", "time"]
        assert len({c.id for c in calls}) == 2
        for call in calls:
            assert set(json.loads(call.function.arguments)) == {"city", "days"}


async def test_embeddings(sdk: AsyncAzureOpenAI) -> None:
    floats = await sdk.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], dimensions=8, encoding_format="float"
    )
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    decoded = await sdk.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], dimensions=8
    )
    assert [d.embedding for d in floats.data] == [d.embedding for d in decoded.data]
    assert floats.usage.prompt_tokens == 2


async def test_credential_check_lists_models(sdk: AsyncAzureOpenAI) -> None:
    ids = [m.id async for m in sdk.models.list()]
    assert "gpt-4o-mini" in ids


async def test_wrong_credentials_are_authentication_errors(mock: RunningMock) -> None:
    endpoint = mock.sdk_url("azure")

    async def stale() -> str:
        return "a-token-nobody-issued"

    clients = [
        AsyncAzureOpenAI(
            azure_endpoint=endpoint, api_key="wrong-key", api_version=VERSION, max_retries=0
        ),
        AsyncAzureOpenAI(
            azure_endpoint=endpoint,
            azure_ad_token_provider=stale,
            api_version=VERSION,
            max_retries=0,
        ),
    ]
    for client in clients:
        async with client:
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()


async def test_the_token_provider_is_asked_per_request(mock: RunningMock) -> None:
    fetched: list[str] = []
    async with AsyncAzureOpenAI(
        azure_endpoint=mock.sdk_url("azure"),
        azure_ad_token_provider=token_provider(mock, fetched),
        api_version=VERSION,
        max_retries=0,
    ) as client:
        for _ in range(2):
            await client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert len(fetched) == 2 and len(set(fetched)) == 2  # each token is accepted


async def test_v1_api_with_openais_own_client(mock: RunningMock) -> None:
    async with AsyncOpenAI(
        base_url=f"{mock.sdk_url('azure')}/openai/v1/", api_key=KEY, max_retries=0
    ) as client:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
        assert completion.choices[0].message.content
        vectors = await client.embeddings.create(model="text-embedding-3-small", input="a")
        assert vectors.data[0].embedding
        assert [m.id async for m in client.models.list()]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("spec", "error", "code"),
    [
        ("400", openai.BadRequestError, None),
        ("401", openai.AuthenticationError, "401"),
        ("403", openai.PermissionDeniedError, "403"),
        ("404", openai.NotFoundError, "DeploymentNotFound"),
        ("429:retry-after=1", openai.RateLimitError, "429"),
        ("quota", openai.RateLimitError, "insufficient_quota"),
        ("context", openai.BadRequestError, "context_length_exceeded"),
        ("filtered", openai.BadRequestError, "content_filter"),
        ("overloaded", openai.InternalServerError, "ServiceUnavailable"),
        ("500", openai.InternalServerError, None),
        ("502", openai.InternalServerError, "502"),
        ("503", openai.InternalServerError, "503"),
        ("504", openai.InternalServerError, "504"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_every_fault_is_the_sdks_typed_error(
    sdk: AsyncAzureOpenAI,
    spec: str,
    error: type[openai.APIStatusError],
    code: str | None,
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
    assert info.value.code == code
    assert info.value.request_id  # x-request-id, beside Azure's apim-request-id
    assert info.value.response.headers["apim-request-id"]
    if spec.startswith("429"):
        assert info.value.response.headers["retry-after"] == "1"
    if spec == "filtered":
        body = info.value.body
        assert isinstance(body, dict)
        verdict = body["innererror"]["content_filter_result"]
        assert verdict["hate"] == {"filtered": True, "severity": "medium"}


async def test_a_filtered_answer_finishes_with_content_filter(sdk: AsyncAzureOpenAI) -> None:
    headers = {"x-mock-fault": "filtered-after:2"}
    whole = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=ASK, extra_headers=headers
    )
    assert whole.choices[0].finish_reason == "content_filter"
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=ASK, stream=True, extra_headers=headers
    )
    finish = [c.choices[0].finish_reason async for c in stream if c.choices]
    assert finish[-1] == "content_filter"


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ("stream-error-after:3", "ServiceUnavailable"),
        ("stream-error-after:0:quota", "insufficient_quota"),
    ],
)
async def test_in_stream_error_is_raised_while_iterating(
    sdk: AsyncAzureOpenAI, spec: str, code: str
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
    assert info.value.code == code
    assert len(text.split()) == int(spec.split(":")[1])


async def test_dropped_connection_is_a_connection_error(sdk: AsyncAzureOpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=ASK,
            extra_headers={"x-mock-fault": "drop-after:0"},
        )


async def test_unknown_routes_and_versions(mock: RunningMock) -> None:
    async with AsyncAzureOpenAI(
        azure_endpoint=mock.sdk_url("azure"), api_key=KEY, api_version="v1", max_retries=0
    ) as wrong_version:
        with pytest.raises(openai.NotFoundError) as info:
            await wrong_version.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert (info.value.code, info.value.message) == ("404", "Error code: 404 - Resource not found")
    async with AsyncAzureOpenAI(
        azure_endpoint=mock.sdk_url("azure"), api_key=KEY, api_version=VERSION, max_retries=0
    ) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="no-such-deployment", messages=ASK)
        assert missing.value.code == "DeploymentNotFound"
        with pytest.raises(openai.NotFoundError) as route:
            await client.files.list()
        assert route.value.code == "404"


async def test_rate_limiter_is_the_sdks_rate_limit_error() -> None:
    mock = await start_mock(MockConfig(requests_per_minute=1))
    try:
        async with AsyncAzureOpenAI(
            azure_endpoint=mock.sdk_url("azure"), api_key=KEY, api_version=VERSION, max_retries=0
        ) as sdk:
            first = await sdk.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=ASK
            )
            assert first.headers["x-ratelimit-remaining-requests"] == "0"
            with pytest.raises(openai.RateLimitError) as info:
                await sdk.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    finally:
        await mock.close()
    assert info.value.code == "429"
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert int(info.value.response.headers["retry-after-ms"]) > 0

"""The official clients judge the mock: `huggingface_hub` (its `AsyncInferenceClient`
and `HfApi`) and, as Hugging Face documents it for the router, the `openai` SDK.

Every answer must parse with the clients' own types, every fault must become their
own typed error. The hub's types are permissive (every field optional, unknown
ones kept aside), so answers are also checked strictly here: every field the types
require is present and nothing is sent they do not declare, save TGI's `object`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final, TypeVar

import numpy as np
import openai
import pytest
from huggingface_hub import AsyncInferenceClient, HfApi
from huggingface_hub.errors import (
    BadRequestError,
    GenerationError,
    HfHubHTTPError,
    InferenceTimeoutError,
    OverloadedError,
    TextGenerationError,
    UnknownError,
    ValidationError,
)
from huggingface_hub.inference._generated.types.base import BaseInferenceType
from huggingface_hub.inference._generated.types.chat_completion import (
    ChatCompletionInputFunctionDefinition,
    ChatCompletionInputMessage,
    ChatCompletionInputStreamOptions,
    ChatCompletionInputTool,
)
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

from providers.huggingface.mock_errors import QUOTA_MESSAGE
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock

KEY: Final = "mock-key"
HELLO: Final = "Say hello to the fleet"
ASK: Final[list[dict[Any, Any] | ChatCompletionInputMessage]] = [{"role": "user", "content": HELLO}]
OAI_ASK: Final[list[ChatCompletionMessageParam]] = [{"role": "user", "content": HELLO}]
T = TypeVar("T", bound=BaseInferenceType)
# TGI sends `object` ("chat.completion", "chat.completion.chunk"); the hub's types,
# generated from TGI's spec, leave it out.
TOLERATED: Final = frozenset({"object"})


PARAMETERS: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
TOOLS: Final = [
    ChatCompletionInputTool(
        function=ChatCompletionInputFunctionDefinition(name=name, parameters=PARAMETERS),
        type="function",
    )
    for name in ("weather", "time")
]
OAI_TOOLS: Final[list[ChatCompletionFunctionToolParam]] = [
    {"type": "function", "function": {"name": name, "parameters": PARAMETERS}}
    for name in ("weather", "time")
]


@pytest.fixture(scope="module")
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig())
    yield running
    await running.close()


@pytest.fixture
async def hub(mock: RunningMock) -> AsyncIterator[AsyncInferenceClient]:
    async with AsyncInferenceClient(base_url=mock.sdk_url("huggingface"), api_key=KEY) as client:
        yield client


@pytest.fixture
async def oai(mock: RunningMock) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(base_url=mock.sdk_url("huggingface"), api_key=KEY, max_retries=0)
    yield client
    await client.close()


def root(mock: RunningMock) -> str:
    return mock.sdk_url("huggingface").removesuffix("/v1")


# ---------------------------------------------------------------- strict reading


def problems(value: Any, path: str = "") -> Iterator[str]:
    """Fields a hub type requires but did not get, and fields it does not declare."""
    if isinstance(value, BaseInferenceType):
        fields = dataclasses.fields(value)
        declared = {f.name for f in fields}
        for key in set(value.keys()) - declared - TOLERATED:
            yield f"{path}.{key} (undeclared)"
        for f in fields:
            item = getattr(value, f.name)
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if item is None and required:
                yield f"{path}.{f.name} (missing)"
            yield from problems(item, f"{path}.{f.name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from problems(item, f"{path}[{i}]")


def strictly(value: T) -> T:
    assert list(problems(value)) == []
    return value


# ---------------------------------------------------------------- huggingface_hub


async def test_chat(hub: AsyncInferenceClient) -> None:
    out = strictly(await hub.chat_completion(ASK, model="mock-model:together", max_tokens=5))
    assert out.choices[0].message.content
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 5
    assert out.model == "mock-model"


async def test_stream(hub: AsyncInferenceClient) -> None:
    chunks = [
        strictly(c)
        async for c in await hub.chat_completion(
            ASK,
            model="mock-model",
            stream=True,
            stream_options=ChatCompletionInputStreamOptions(include_usage=True),
        )
    ]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text
    assert chunks[-1].choices[0].finish_reason == "stop"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == len(chunks) - 1


async def test_parallel_tools(hub: AsyncInferenceClient) -> None:
    out = strictly(
        await hub.chat_completion(ASK, model="mock-model", tools=TOOLS, tool_choice="required")
    )
    calls = out.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["weather", "time"]
    assert len({c.id for c in calls}) == 2
    assert out.choices[0].finish_reason == "tool_calls"
    stream = await hub.chat_completion(
        ASK, model="mock-model", tools=TOOLS, tool_choice="required", stream=True
    )
    arguments: dict[int, str] = {}
    async for chunk in stream:
        strictly(chunk)
        for call in chunk.choices[0].delta.tool_calls or []:
            arguments[call.index] = arguments.get(call.index, "") + call.function.arguments
    assert sorted(arguments) == [0, 1]
    assert all(a.startswith("{") and a.endswith("}") for a in arguments.values())


async def test_feature_extraction(mock: RunningMock) -> None:
    url = f"{root(mock)}/hf-inference/models/mock-embed/pipeline/feature-extraction"
    async with AsyncInferenceClient(model=url, token=KEY) as client:
        vectors = await client.feature_extraction(["one", "two", "one"], normalize=True)
        single = await client.feature_extraction("one", prompt_name="query")
        with pytest.raises(HfHubHTTPError) as info:
            await client.feature_extraction(["x"] * 33)
    assert vectors.shape == (3, 1536)
    assert vectors.dtype == np.float32
    assert np.array_equal(vectors[0], vectors[2]) and not np.array_equal(vectors[0], vectors[1])
    assert single.shape == (1, 1536) and not np.array_equal(single[0], vectors[0])
    assert info.value.response.status_code == 413
    assert "maximum allowed batch size 32" in str(info.value)


async def test_whoami(mock: RunningMock) -> None:
    me = await asyncio.to_thread(HfApi(endpoint=root(mock), token=KEY).whoami)
    assert me["name"] == "mock-user"
    assert me["auth"]["accessToken"]["role"] == "fineGrained"
    with pytest.raises(HfHubHTTPError, match="Invalid user token") as info:
        await asyncio.to_thread(HfApi(endpoint=root(mock), token="hf_wrong").whoami)
    assert info.value.response.status_code == 401


HUB_FAULTS: list[tuple[str, type[Exception], int, str]] = [
    ("400", BadRequestError, 400, "Invalid request (mock fault)."),
    ("401", HfHubHTTPError, 401, "Invalid credentials in Authorization header"),
    ("403", HfHubHTTPError, 403, "does not have sufficient permissions"),
    ("404", HfHubHTTPError, 404, "The requested model 'mock-model' does not exist."),
    ("429:retry-after=2", HfHubHTTPError, 429, "Rate limit reached"),
    ("quota", HfHubHTTPError, 402, QUOTA_MESSAGE),
    ("overloaded", HfHubHTTPError, 503, "is currently loading"),
    ("context", HfHubHTTPError, 422, "Input validation error"),
    ("500", HfHubHTTPError, 500, "Internal Server Error"),
    ("502", HfHubHTTPError, 502, "502 Bad Gateway"),
    ("503", HfHubHTTPError, 503, "Service Unavailable"),
    ("504", HfHubHTTPError, 504, "504 Gateway Timeout"),  # the status line: HTML is left out
]


@pytest.mark.parametrize(
    ("fault", "cls", "status", "words"), HUB_FAULTS, ids=[f[0] for f in HUB_FAULTS]
)
async def test_hub_errors(
    mock: RunningMock, fault: str, cls: type[Exception], status: int, words: str
) -> None:
    headers = {"x-mock-fault": fault}
    async with AsyncInferenceClient(
        base_url=mock.sdk_url("huggingface"), api_key=KEY, headers=headers
    ) as client:
        with pytest.raises(HfHubHTTPError) as info:
            await client.chat_completion(ASK, model="mock-model")
    error = info.value
    assert type(error) is cls
    assert error.response.status_code == status
    assert words in str(error)
    assert error.request_id
    if fault.startswith("429"):
        assert error.response.headers["retry-after"] == "2"


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        ("stream-error-after:2", OverloadedError),
        ("stream-error-after:2:500", GenerationError),
        ("stream-error-after:2:context", ValidationError),
        ("stream-error-after:2:429", UnknownError),
    ],
)
async def test_hub_errors_inside_a_stream(
    mock: RunningMock, fault: str, cls: type[TextGenerationError]
) -> None:
    headers = {"x-mock-fault": fault}
    texts: list[str] = []
    async with AsyncInferenceClient(
        base_url=mock.sdk_url("huggingface"), api_key=KEY, headers=headers
    ) as client:
        with pytest.raises(TextGenerationError) as info:
            async for chunk in await client.chat_completion(ASK, model="mock-model", stream=True):
                texts.append(chunk.choices[0].delta.content or "")
    assert type(info.value) is cls
    assert len(texts) == 2


async def test_a_stalled_answer_is_the_hubs_timeout(mock: RunningMock) -> None:
    async with AsyncInferenceClient(
        base_url=mock.sdk_url("huggingface"),
        api_key=KEY,
        timeout=0.3,
        headers={"x-mock-fault": "stall:2"},
    ) as client:
        with pytest.raises(InferenceTimeoutError):
            await client.chat_completion(ASK, model="mock-model")


async def test_unknown_routes_answer_in_the_routers_shape(mock: RunningMock) -> None:
    async with AsyncInferenceClient(model=f"{root(mock)}/v2", token=KEY) as client:
        with pytest.raises(HfHubHTTPError) as info:
            await client.chat_completion(ASK, model="mock-model")
    assert info.value.response.status_code == 404
    assert info.value.server_message == "Cannot POST /huggingface/v2/v1/chat/completions"


# ---------------------------------------------------------------- openai


async def test_openai_chat_stream_and_tools(oai: AsyncOpenAI) -> None:
    out = await oai.chat.completions.create(model="mock-model:fastest", messages=OAI_ASK)
    assert out.choices[0].message.content
    assert out.usage is not None and out.usage.total_tokens > 0
    stream = await oai.chat.completions.create(
        model="mock-model",
        messages=OAI_ASK,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks) == out.choices[0].message.content
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == out.usage.completion_tokens
    called = await oai.chat.completions.create(
        model="mock-model",
        messages=OAI_ASK,
        tools=OAI_TOOLS,
        tool_choice="required",
    )
    calls = called.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls if c.type == "function"] == ["weather", "time"]


OPENAI_FAULTS: list[tuple[str, type[openai.APIStatusError]]] = [
    ("400", openai.BadRequestError),
    ("401", openai.AuthenticationError),
    ("403", openai.PermissionDeniedError),
    ("404", openai.NotFoundError),
    ("429", openai.RateLimitError),
    ("context", openai.UnprocessableEntityError),
    ("overloaded", openai.InternalServerError),
    ("500", openai.InternalServerError),
    ("502", openai.InternalServerError),
]


@pytest.mark.parametrize(("fault", "cls"), OPENAI_FAULTS, ids=[f[0] for f in OPENAI_FAULTS])
async def test_openai_errors(
    oai: AsyncOpenAI, fault: str, cls: type[openai.APIStatusError]
) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await oai.chat.completions.create(
            model="mock-model",
            messages=OAI_ASK,
            extra_headers={"x-mock-fault": fault},
        )
    assert type(info.value) is cls


async def test_openai_quota_and_in_stream_errors(oai: AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await oai.chat.completions.create(
            model="mock-model",
            messages=OAI_ASK,
            extra_headers={"x-mock-fault": "quota"},
        )
    assert info.value.status_code == 402
    assert info.value.body == QUOTA_MESSAGE  # the SDK keeps a bare `error` string as the body
    stream = await oai.chat.completions.create(
        model="mock-model",
        messages=OAI_ASK,
        stream=True,
        extra_headers={"x-mock-fault": "stream-error-after:1:429"},
    )
    with pytest.raises(openai.APIError, match="Rate limit reached"):
        async for _ in stream:
            pass

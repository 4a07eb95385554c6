"""Official SDKs judge the vLLM mock: `openai` for chat, streams, tools, embeddings,
models and errors (vLLM speaks its API), `cohere` for `/v2/rerank` (vLLM's rerank
routes take Cohere's requests). Every answer must parse with the SDK's models and
every fault must raise the SDK's own typed error."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import cohere
import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock

KEY = "mock-key"
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello to the fleet"}]
QUERY = "durable queue"
DOCUMENTS = ["cats and dogs", "the queue is durable", "a durable queue of jobs", "one queue"]


@pytest.fixture(scope="module")
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig())
    yield running
    await running.close()


@pytest.fixture
async def sdk(mock: RunningMock) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(base_url=mock.sdk_url("vllm"), api_key=KEY, max_retries=0)
    yield client
    await client.close()


def tool(name: str) -> ChatCompletionFunctionToolParam:
    parameters: dict[str, object] = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


async def test_plain_chat(sdk: AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(model="mock-model", messages=ASK, max_tokens=4)
    choice = completion.choices[0]
    assert choice.finish_reason == "length" and choice.message.content
    assert completion.id.startswith("chatcmpl-")
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    assert (choice.model_extra or {}).get("stop_reason", "missing") is None


async def test_stream_with_usage(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="mock-model", messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    whole = await sdk.chat.completions.create(model="mock-model", messages=ASK)
    assert text == whole.choices[0].message.content and finish == "stop"
    assert usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.parametrize("fault", ["", "interleave"])
async def test_stream_helper_assembles_parallel_tool_calls(sdk: AsyncOpenAI, fault: str) -> None:
    async with sdk.chat.completions.stream(
        model="mock-model",
        messages=ASK,
        tools=[tool("weather"), tool("time")],
        tool_choice="required",
        extra_headers={"x-mock-fault": fault} if fault else None,
    ) as stream:
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["weather", "time"]
    assert all(c.id.startswith("chatcmpl-tool-") for c in calls)
    assert final.choices[0].finish_reason == "tool_calls"
    whole = await sdk.chat.completions.create(
        model="mock-model", messages=ASK, tools=[tool("weather")], tool_choice="required"
    )
    assert whole.choices[0].message.tool_calls


async def test_embeddings_and_models(sdk: AsyncOpenAI) -> None:
    floats = await sdk.embeddings.create(model="mock-embed", input=["a", "b"], dimensions=8)
    assert [len(d.embedding) for d in floats.data] == [8, 8]
    packed = await sdk.embeddings.create(
        model="mock-embed", input=["a", "b"], dimensions=8, encoding_format="base64"
    )
    assert [len(base64.b64decode(str(d.embedding))) for d in packed.data] == [32, 32]
    models = await sdk.models.list()
    assert "mock-model" in {m.id for m in models.data}
    assert all(m.owned_by == "vllm" for m in models.data)


async def test_wrong_key(mock: RunningMock) -> None:
    client = AsyncOpenAI(base_url=mock.sdk_url("vllm"), api_key="sk-wrong-0000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        await client.models.list()
    assert info.value.status_code == 401 and info.value.body == "Unauthorized"
    await client.close()


@pytest.mark.parametrize(
    ("spec", "error", "type_"),
    [
        ("400", openai.BadRequestError, "BadRequestError"),
        ("401", openai.AuthenticationError, None),
        ("403", openai.PermissionDeniedError, "PermissionDeniedError"),
        ("404", openai.NotFoundError, "NotFoundError"),
        ("429", openai.RateLimitError, "RateLimitError"),
        ("quota", openai.RateLimitError, "insufficient_quota"),
        ("overloaded", openai.InternalServerError, "ServiceUnavailableError"),
        ("500", openai.InternalServerError, "InternalServerError"),
        ("502", openai.InternalServerError, "BadGatewayError"),
        ("503", openai.InternalServerError, "ServiceUnavailableError"),
        ("504", openai.InternalServerError, "GatewayTimeoutError"),
        ("context", openai.BadRequestError, "BadRequestError"),
    ],
)
async def test_faults_are_typed_errors(
    sdk: AsyncOpenAI, spec: str, error: type[openai.APIStatusError], type_: str | None
) -> None:
    for stream in (False, True):
        with pytest.raises(error) as info:
            await sdk.chat.completions.create(
                model="mock-model",
                messages=ASK,
                stream=stream,
                extra_headers={"x-mock-fault": spec},
            )
        assert info.value.type == type_


async def test_429_carries_retry_after(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        await sdk.chat.completions.create(
            model="mock-model", messages=ASK, extra_headers={"x-mock-fault": "429:retry-after=3"}
        )
    assert info.value.response.headers["retry-after"] == "3"


async def test_unknown_model(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.chat.completions.create(model="no-such-model", messages=ASK)
    assert info.value.message.endswith("The model `no-such-model` does not exist.")


async def test_error_inside_a_stream(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="mock-model",
        messages=ASK,
        stream=True,
        extra_headers={"x-mock-fault": "stream-error-after:2"},
    )
    texts: list[str] = []
    with pytest.raises(openai.APIError, match="overloaded"):
        async for chunk in stream:
            texts.extend(c.delta.content or "" for c in chunk.choices)
    assert len([t for t in texts if t]) == 2


async def test_unknown_routes_answer_like_fastapi(mock: RunningMock) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=mock.url("vllm"), headers=headers) as http:
        missing = await http.get("/nothing")
        wrong_method = await http.get("/chat/completions")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    assert (wrong_method.status_code, wrong_method.json()) == (
        405,
        {"detail": "Method Not Allowed"},
    )


async def test_health_needs_no_key(mock: RunningMock) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{mock.root}/vllm/health")
    assert response.status_code == 200


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def reranker(mock: RunningMock, http: httpx.AsyncClient, key: str = KEY) -> cohere.AsyncClientV2:
    # Cohere's SDK adds `/v2/rerank` to the server's root itself.
    return cohere.AsyncClientV2(
        api_key=key, base_url=f"{mock.root}/vllm", max_retries=0, httpx_client=http
    )


async def test_cohere_sdk_reranks(mock: RunningMock, http: httpx.AsyncClient) -> None:
    client = reranker(mock, http)
    ranked = await client.rerank(model="mock-rerank", query=QUERY, documents=DOCUMENTS, top_n=3)
    assert [r.index for r in ranked.results][:2] in ([1, 2], [2, 1])
    assert len(ranked.results) == 3
    scores = [r.relevance_score for r in ranked.results]
    assert scores == sorted(scores, reverse=True)
    every = await client.rerank(model="mock-rerank", query=QUERY, documents=DOCUMENTS)
    assert len(every.results) == len(DOCUMENTS)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("400", cohere.BadRequestError),
        ("404", cohere.NotFoundError),
        ("429", cohere.TooManyRequestsError),
        ("500", cohere.InternalServerError),
    ],
)
async def test_cohere_sdk_rerank_faults(
    mock: RunningMock, http: httpx.AsyncClient, spec: str, error: type[Exception]
) -> None:
    client = reranker(mock, http)
    with pytest.raises(error):
        await client.rerank(
            model="mock-rerank",
            query=QUERY,
            documents=DOCUMENTS,
            request_options={"additional_headers": {"x-mock-fault": spec}},
        )
    wrong = reranker(mock, http, key="wrong-key")
    with pytest.raises(cohere.UnauthorizedError):
        await wrong.rerank(model="mock-rerank", query=QUERY, documents=DOCUMENTS)

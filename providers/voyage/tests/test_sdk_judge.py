"""The official `voyageai` SDK as an independent judge of the Voyage mock.

`voyageai.AsyncClient(base_url=…)` sends what Voyage's SDK sends (base64
embeddings it decodes with numpy, `null` for unset fields, only `Authorization`
and `Content-Type` headers) and raises its own error classes from the status:
400 `InvalidRequestError`, 401 `AuthenticationError`, 422
`MalformedRequestError`, 429 `RateLimitError`, 500 `ServerError`, 502/503/504
`ServiceUnavailableError`, anything else with a `detail` `APIError`. Faults are
queued per model through the admin API (the SDK drops any other header).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import voyageai.error
from voyageai.api_resources.api_requestor import APIRequestor
from voyageai.client_async import AsyncClient

from providers.mock.config import MockConfig
from providers.mock.rerank import rank
from providers.mock.server import RunningMock, start_mock
from providers.mock.text import embedding_floats

DOCUMENTS = ["cats and dogs", "the queue is durable", "a durable queue of jobs", "one queue"]


@pytest.fixture(scope="module")
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig())
    yield running
    await running.close()


def client(mock: RunningMock, key: str = "mock-key") -> AsyncClient:
    return AsyncClient(api_key=key, base_url=mock.sdk_url("voyage"), max_retries=0)


async def fault(mock: RunningMock, spec: str) -> str:
    """A model name of its own with `spec` queued for its next request."""
    model = f"mock-judge-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=mock.root) as admin:
        response = await admin.post("/_mock/faults", json={"spec": spec, "model": model})
        assert response.status_code == 201
    return model


async def test_embed(mock: RunningMock) -> None:
    result = await client(mock).embed(
        ["the first text", "a second"], model="voyage-3.5", input_type="document"
    )
    dims = MockConfig().embed_dims
    assert result.embeddings == [
        embedding_floats("the first text", dims),
        embedding_floats("a second", dims),
    ]
    assert result.total_tokens == 5


async def test_embed_with_an_output_dimension(mock: RunningMock) -> None:
    result = await client(mock).embed(
        ["short"], model="voyage-3-large", input_type="query", output_dimension=256
    )
    assert result.embeddings == [embedding_floats("short", 256)]


async def test_rerank(mock: RunningMock) -> None:
    result = await client(mock).rerank("durable queue", DOCUMENTS, model="rerank-2.5", top_k=3)
    expected = rank("durable queue", DOCUMENTS)[:3]
    assert [(r.index, r.relevance_score) for r in result.results] == expected
    assert [r.document for r in result.results] == [DOCUMENTS[i] for i, _ in expected]
    assert result.total_tokens == 2 * len(DOCUMENTS) + sum(len(d.split()) for d in DOCUMENTS)


async def test_a_wrong_key(mock: RunningMock) -> None:
    with pytest.raises(voyageai.error.AuthenticationError) as info:
        await client(mock, "sk-wrong").embed(["a"], model="voyage-3.5")
    assert info.value.http_status == 401


async def test_an_unknown_model(mock: RunningMock) -> None:
    with pytest.raises(voyageai.error.InvalidRequestError, match="is not supported"):
        await client(mock).embed(["a"], model="voyage-99")


async def test_too_many_inputs(mock: RunningMock) -> None:
    with pytest.raises(voyageai.error.InvalidRequestError, match="batch size limit is 1000"):
        await client(mock).embed(["a"] * 1001, model="voyage-3.5")


async def test_a_malformed_request(mock: RunningMock) -> None:
    with pytest.raises(voyageai.error.MalformedRequestError):
        await client(mock).embed(["a"], model="voyage-3.5", input_type="code")


@pytest.mark.parametrize(
    ("spec", "cls", "status"),
    [
        ("400", voyageai.error.InvalidRequestError, 400),
        ("401", voyageai.error.AuthenticationError, 401),
        ("403", voyageai.error.APIError, 403),
        ("404", voyageai.error.APIError, 404),
        ("429", voyageai.error.RateLimitError, 429),
        ("quota", voyageai.error.APIError, 402),
        ("context", voyageai.error.InvalidRequestError, 400),
        ("overloaded", voyageai.error.ServiceUnavailableError, 503),
        ("500", voyageai.error.ServerError, 500),
        ("502", voyageai.error.ServiceUnavailableError, 502),
        ("503", voyageai.error.ServiceUnavailableError, 503),
        ("504", voyageai.error.ServiceUnavailableError, 504),
        ("stream-error-after:1:429", voyageai.error.RateLimitError, 429),
    ],
)
async def test_faults_raise_the_sdk_errors(
    mock: RunningMock, spec: str, cls: type[voyageai.error.VoyageError], status: int
) -> None:
    model = await fault(mock, spec)
    with pytest.raises(cls) as info:
        await client(mock).embed(["a"], model=model)
    assert type(info.value) is cls
    assert info.value.http_status == status


async def test_rate_limit_says_how_long_to_wait(mock: RunningMock) -> None:
    model = await fault(mock, "429:retry-after=2")
    with pytest.raises(voyageai.error.RateLimitError) as info:
        await client(mock).rerank("q", ["d"], model=model)
    assert info.value.headers["retry-after"] == "2"


async def test_faults_on_rerank(mock: RunningMock) -> None:
    model = await fault(mock, "503")
    with pytest.raises(voyageai.error.ServiceUnavailableError):
        await client(mock).rerank("q", ["d"], model=model)


async def test_unknown_routes_answer_in_voyages_shape(mock: RunningMock) -> None:
    requestor = APIRequestor("mock-key", mock.sdk_url("voyage"))  # type: ignore[no-untyped-call]
    with pytest.raises(voyageai.error.APIError) as info:
        await requestor.arequest("post", "/contextualizedembeddings", params={"inputs": []})
    assert info.value.http_status == 404
    assert info.value.json_body == {"detail": "Not Found"}

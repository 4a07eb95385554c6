"""`huggingface_hub` as an independent judge of the TEI mock.

`AsyncInferenceClient(model=<server URL>)` is how the hub talks to a TEI server
or an Inference Endpoint: `feature_extraction` posts `{inputs, normalize?,
truncate?, prompt_name?, dimensions?}` to the URL itself (TEI's `POST /`) and
reads the bare `[[float]]` into a float32 array; `get_endpoint_info` and
`health_check` read `/info` and `/health`. Errors go through the hub's own
`hf_raise_for_status`: `BadRequestError` for a 400, `HfHubHTTPError` with the
server's message for the rest, and `InferenceTimeoutError` for a timeout.

The client has no rerank (nor `/embed` by name): those are posted through the
hub's own HTTP session and error handling (`get_async_session`,
`build_hf_headers`, `hf_raise_for_status`) and the answer checked against TEI's
OpenAPI shape for `/rerank` (`[{index, score, text?}]`, best first). Faults go
in the `x-mock-fault` header, which the client sends with every request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from huggingface_hub import AsyncInferenceClient, get_async_session, hf_raise_for_status
from huggingface_hub.errors import BadRequestError, HfHubHTTPError, InferenceTimeoutError
from huggingface_hub.utils._headers import build_hf_headers

from providers.mock.config import MockConfig
from providers.mock.rerank import rank
from providers.mock.server import RunningMock, start_mock
from providers.mock.text import embedding_floats
from providers.tei.mock import MAX_CLIENT_BATCH_SIZE, MODEL_ID, PROMPTS

DOCUMENTS = ["cats and dogs", "the queue is durable", "a durable queue of jobs", "one queue"]


class Rank(msgspec.Struct, forbid_unknown_fields=True):
    """TEI's OpenAPI `Rank`."""

    index: int
    score: float
    text: str | None = None


@pytest.fixture(scope="module")
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig())
    yield running
    await running.close()


def client(mock: RunningMock, key: str = "mock-key", **headers: str) -> AsyncInferenceClient:
    # The server's URL, as an Inference Endpoint's is given (the trailing slash is the root).
    return AsyncInferenceClient(
        model=mock.sdk_url("tei") + "/",
        provider="hf-inference",
        token=key,
        headers=headers,
        timeout=1.0,
    )


async def post(mock: RunningMock, path: str, body: Any, key: str = "mock-key") -> Any:
    """A POST through the hub's session and error handling; the decoded answer."""
    async with get_async_session() as session:
        response = await session.post(
            mock.sdk_url("tei") + path, json=body, headers=build_hf_headers(token=key)
        )
        hf_raise_for_status(response)
        return response.json()


async def test_feature_extraction(mock: RunningMock) -> None:
    async with client(mock) as hub:
        vectors = await hub.feature_extraction("the first text")
    assert vectors.dtype.name == "float32"
    assert vectors.tolist() == [embedding_floats("the first text", MockConfig().embed_dims)]


async def test_feature_extraction_with_tei_parameters(mock: RunningMock) -> None:
    async with client(mock) as hub:
        vectors = await hub.feature_extraction(
            ["a", "b"], normalize=True, truncate=True, prompt_name="query", dimensions=64
        )
    prompt = PROMPTS["query"]
    assert vectors.tolist() == [embedding_floats(prompt + t, 64) for t in ("a", "b")]


async def test_endpoint_info_and_health(mock: RunningMock) -> None:
    async with client(mock) as hub:
        info = await hub.get_endpoint_info()
    assert info["model_id"] == MODEL_ID
    assert info["max_client_batch_size"] == MAX_CLIENT_BATCH_SIZE
    async with client(mock, key="no-key-needed") as hub:
        assert await hub.health_check()


async def test_embed_route(mock: RunningMock) -> None:
    answer = await post(mock, "/embed", {"inputs": ["x"], "normalize": True})
    assert msgspec.convert(answer, list[list[float]]) == [
        embedding_floats("x", MockConfig().embed_dims)
    ]


async def test_rerank_route(mock: RunningMock) -> None:
    answer = await post(
        mock, "/rerank", {"query": "durable queue", "texts": DOCUMENTS, "return_text": True}
    )
    ranks = msgspec.convert(answer, list[Rank])
    assert [(r.index, r.score) for r in ranks] == rank("durable queue", DOCUMENTS)
    assert [r.text for r in ranks] == [DOCUMENTS[r.index] for r in ranks]


async def test_a_wrong_key(mock: RunningMock) -> None:
    with pytest.raises(HfHubHTTPError) as info:
        async with client(mock, key="hf_wrong") as hub:
            await hub.feature_extraction("a")
    assert info.value.response.status_code == 401
    assert info.value.response.content == b""


async def test_too_many_inputs(mock: RunningMock) -> None:
    with pytest.raises(HfHubHTTPError, match="maximum allowed batch size 32") as info:
        await post(mock, "/rerank", {"query": "q", "texts": ["d"] * 33})
    assert info.value.response.status_code == 413


async def test_an_empty_batch(mock: RunningMock) -> None:
    with pytest.raises(BadRequestError, match="cannot be empty"):
        async with client(mock) as hub:
            await hub.feature_extraction([])


@pytest.mark.parametrize(
    ("spec", "status", "server_message"),
    [
        ("400", 400, "`inputs` cannot be empty"),
        ("401", 401, None),
        ("403", 403, "This token does not have access to the endpoint."),
        ("404", 404, None),
        ("429", 429, "Model is overloaded"),
        ("quota", 402, "Payment required"),
        ("context", 413, "must have less than 512 tokens"),
        ("overloaded", 503, "unhealthy"),
        ("500", 500, None),
        ("502", 502, "Bad Gateway"),
        ("503", 503, "Service Unavailable"),
        ("504", 504, "Gateway Timeout"),
    ],
)
async def test_faults_raise_the_hub_errors(
    mock: RunningMock, spec: str, status: int, server_message: str | None
) -> None:
    with pytest.raises(HfHubHTTPError) as info:
        async with client(mock, **{"x-mock-fault": spec}) as hub:
            await hub.feature_extraction("a")
    error = info.value
    assert error.response.status_code == status
    assert (type(error) is BadRequestError) is (status == 400)
    if server_message is not None:
        assert server_message in (error.server_message or "")


async def test_a_stall_is_the_hubs_timeout(mock: RunningMock) -> None:
    with pytest.raises(InferenceTimeoutError):
        async with client(mock, **{"x-mock-fault": "stall:3"}) as hub:
            await hub.feature_extraction("a")


async def test_unknown_routes_answer_as_tei_does(mock: RunningMock) -> None:
    with pytest.raises(HfHubHTTPError) as info:
        await post(mock, "/predict", {"inputs": "a"})
    assert (info.value.response.status_code, info.value.response.content) == (404, b"")

"""Embeddings through `:predict`: bodies, batches, order, usage, task types."""

from __future__ import annotations

import asyncio
import json
import struct

import httpx
import pytest

from contracts.errors import BadRequest, InternalError, RateLimited
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.types import EmbedRequest
from providers.vertex.adapter import Vertex
from providers.vertex.embed import MAX_INSTANCES, SINGLES_IN_FLIGHT, task_type
from providers.vertex.tests.fakes import FakeGoogle, build, secret


def _predictions(request: httpx.Request) -> httpx.Response:
    """One 2-dim vector per instance, (its number, its length), and 3 tokens each."""
    instances = json.loads(request.content)["instances"]
    predictions = [
        {
            "embeddings": {
                "values": [float(i["content"].removeprefix("text ")), float(len(i["content"]))],
                "statistics": {"token_count": 3, "truncated": False},
            }
        }
        for i in instances
    ]
    return httpx.Response(200, json={"predictions": predictions})


def _rows(data: bytes, dims: int) -> list[tuple[float, ...]]:
    return [
        struct.unpack_from(f"<{dims}f", data, i * dims * 4) for i in range(len(data) // dims // 4)
    ]


async def test_one_request_for_a_small_batch(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle(_predictions)
    req = EmbedRequest(model="text-embedding-005", inputs=["text 1", "text 2"], dimensions=2)
    result = await build(fake, pools).embed(req, secret())
    assert len(fake.api_requests) == 1
    assert fake.api_requests[0].url.path.endswith("/models/text-embedding-005:predict")
    assert fake.body == {
        "instances": [{"content": "text 1"}, {"content": "text 2"}],
        "parameters": {"outputDimensionality": 2},
    }
    assert (result.count, result.dims) == (2, 2)
    assert _rows(result.data, 2) == [(1.0, 6.0), (2.0, 6.0)]
    assert result.usage.input_tokens == 6 and result.usage.total_tokens == 6
    assert result.usage.output_tokens == 0


async def test_batches_of_250_in_order(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle(_predictions)
    inputs = [f"text {i}" for i in range(MAX_INSTANCES * 2 + 7)]
    result = await build(fake, pools).embed(
        EmbedRequest(model="text-embedding-005", inputs=inputs), secret()
    )
    sizes = sorted(len(json.loads(r.content)["instances"]) for r in fake.api_requests)
    assert sizes == [7, MAX_INSTANCES, MAX_INSTANCES]
    assert [row[0] for row in _rows(result.data, 2)] == [float(i) for i in range(len(inputs))]
    assert result.usage.input_tokens == 3 * len(inputs)
    assert len(fake.token_requests) == 1


async def test_gemini_embedding_001_goes_one_at_a_time(pools: list[HttpClientPool]) -> None:
    # An async transport, so requests really overlap and the bound shows.
    in_flight = peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return _predictions(request)

    calls: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            body = {"access_token": "ya29.t", "expires_in": 3599, "token_type": "Bearer"}
            return httpx.Response(200, json=body)
        calls.append(request)
        return await slow(request)

    pool = HttpClientPool(transport=httpx.MockTransport(handler))
    pools.append(pool)
    adapter = Vertex(ProviderContext("vertex", pool, None))
    inputs = [f"text {i}" for i in range(30)]
    req = EmbedRequest(model="gemini-embedding-001", inputs=inputs, input_type="query")
    result = await adapter.embed(req, secret())
    assert len(calls) == 30
    assert all(len(json.loads(c.content)["instances"]) == 1 for c in calls)
    assert json.loads(calls[0].content)["instances"][0]["task_type"] == "RETRIEVAL_QUERY"
    assert 1 < peak <= SINGLES_IN_FLIGHT
    assert [row[0] for row in _rows(result.data, 2)] == [float(i) for i in range(30)]


async def test_a_failed_batch_is_raised_as_itself(pools: list[HttpClientPool]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["instances"][0]["content"] == "text 3":
            body = {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}
            return httpx.Response(429, json=body)
        return _predictions(request)

    fake = FakeGoogle(answer)
    inputs = [f"text {i}" for i in range(6)]
    with pytest.raises(RateLimited, match="slow down"):
        await build(fake, pools).embed(
            EmbedRequest(model="gemini-embedding-001", inputs=inputs), secret()
        )


async def test_wrong_prediction_count_is_internal(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle(lambda request: httpx.Response(200, json={"predictions": []}))
    with pytest.raises(InternalError, match="expected 1 predictions, got 0"):
        await build(fake, pools).embed(
            EmbedRequest(model="text-embedding-005", inputs=["a"]), secret()
        )


@pytest.mark.parametrize(
    ("input_type", "expected"),
    [
        (None, None),
        ("query", "RETRIEVAL_QUERY"),
        ("document", "RETRIEVAL_DOCUMENT"),
        ("search_query", "RETRIEVAL_QUERY"),
        ("classification", "CLASSIFICATION"),
        ("CLUSTERING", "CLUSTERING"),
        ("semantic_similarity", "SEMANTIC_SIMILARITY"),
        ("CODE_RETRIEVAL_QUERY", "CODE_RETRIEVAL_QUERY"),
    ],
)
def test_task_types(input_type: str | None, expected: str | None) -> None:
    assert task_type("vertex", input_type) == expected


async def test_unknown_input_type_is_refused(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle(_predictions)
    req = EmbedRequest(model="text-embedding-005", inputs=["a"], input_type="image")
    with pytest.raises(BadRequest, match="unsupported input_type 'image'"):
        await build(fake, pools).embed(req, secret())
    assert not fake.api_requests


async def test_document_task_type_on_every_instance(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle(_predictions)
    req = EmbedRequest(
        model="text-embedding-005", inputs=["text 1", "text 2"], input_type="document"
    )
    await build(fake, pools).embed(req, secret())
    assert [i["task_type"] for i in fake.body["instances"]] == ["RETRIEVAL_DOCUMENT"] * 2
    assert "parameters" not in fake.body

"""The vLLM mock's wire details the SDKs do not look at."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from providers.core.testing import Serve
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock

HEADERS = {"Authorization": "Bearer mock-key"}
ASK = [{"role": "user", "content": "Please use tools for this"}]
TOOLS = [{"type": "function", "function": {"name": "run", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig())
    yield running
    await running.close()


def http(mock: RunningMock) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=mock.root + "/vllm", headers=HEADERS)


def events(body: str) -> list[Any]:
    data = [line.removeprefix("data: ") for line in body.split("\n\n") if line]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


async def test_tool_call_stream_in_vllms_layout(mock: RunningMock) -> None:
    body = {"model": "mock-model", "messages": ASK, "tools": TOOLS, "stream": True}
    async with http(mock) as client:
        response = await client.post("/v1/chat/completions", json=body)
    chunks = events(response.text)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    header = deltas[1]["tool_calls"][0]
    assert header["id"].startswith("chatcmpl-tool-") and "arguments" not in header["function"]
    last = chunks[-1]["choices"][0]
    assert last["delta"] == {"content": ""} and last["finish_reason"] == "tool_calls"
    assert "stop_reason" in last
    assert all("usage" not in c for c in chunks)  # no usage unless include_usage


async def test_in_stream_error_then_done(mock: RunningMock) -> None:
    body = {"model": "mock-model", "messages": ASK, "stream": True}
    async with http(mock) as client:
        response = await client.post(
            "/v1/chat/completions", json=body, headers={"x-mock-fault": "stream-error-after:1:500"}
        )
    chunks = events(response.text)
    assert chunks[-1]["error"]["type"] == "InternalServerError"
    assert chunks[-1]["error"]["code"] == 500


async def test_every_rerank_route_ranks_alike(mock: RunningMock) -> None:
    body = {"model": "mock-rerank", "query": "durable queue", "documents": ["a queue", "durable"]}
    async with http(mock) as client:
        answers = [
            (await client.post(p, json=body)).json()
            for p in ("/rerank", "/v1/rerank", "/v2/rerank")
        ]
    assert len({json.dumps(a["results"]) for a in answers}) == 1
    assert answers[0]["usage"]["total_tokens"] > 0
    assert answers[0]["results"][0]["document"]["text"] in body["documents"]


async def test_wrong_key_and_unknown_model(mock: RunningMock) -> None:
    async with http(mock) as client:
        refused = await client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        unknown = await client.post("/v1/chat/completions", json={"model": "nope", "messages": ASK})
    assert (refused.status_code, refused.json()) == (401, {"error": "Unauthorized"})
    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": {
            "message": "The model `nope` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    }


async def test_rate_limit_answers_429_with_retry_after(serve: Serve) -> None:
    running = await serve(requests_per_minute=1)
    body = {"model": "mock-model", "messages": ASK}
    async with http(running) as client:
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        refused = await client.post("/v1/chat/completions", json=body)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60

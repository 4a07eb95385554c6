"""The Ollama mock's own behaviour: NDJSON framing, faults, limits, keys."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from providers.core.testing import Serve
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock

HEADERS = {"Authorization": "Bearer mock-key"}
ASK = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig())
    yield running
    await running.close()


def http(mock: RunningMock, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=mock.url("ollama"), headers={**HEADERS, **headers})


async def test_stream_is_ndjson_one_object_per_line(mock: RunningMock) -> None:
    async with http(mock) as client:
        response = await client.post("/api/chat", json={"model": "mock-model", "messages": ASK})
    assert response.headers["content-type"] == "application/x-ndjson"
    body = response.content
    assert body.endswith(b"\n") and b"\n\n" not in body
    objects = [json.loads(line) for line in body.splitlines()]
    assert all(o["model"] == "mock-model" and o["created_at"].endswith("Z") for o in objects)
    assert [o["done"] for o in objects] == [False] * (len(objects) - 1) + [True]
    assert objects[-1]["eval_count"] == len(objects) - 1


async def test_drop_after_cuts_the_connection(mock: RunningMock) -> None:
    async with http(mock, **{"x-mock-fault": "drop-after:2"}) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/api/chat", json={"model": "mock-model", "messages": ASK})


async def test_filtered_faults_change_nothing(mock: RunningMock) -> None:
    body = {"model": "mock-model", "messages": ASK, "stream": False}
    async with http(mock) as client:
        plain = (await client.post("/api/chat", json=body)).json()
        filtered = (
            await client.post("/api/chat", json=body, headers={"x-mock-fault": "filtered"})
        ).json()
    assert filtered["message"] == plain["message"] and filtered["done_reason"] == "stop"


async def test_bad_requests_in_ollamas_words(mock: RunningMock) -> None:
    async with http(mock) as client:
        missing = await client.post("/api/chat", json={"messages": ASK})
        bad_format = await client.post(
            "/api/chat", json={"model": "mock-model", "messages": ASK, "format": 3}
        )
        not_json = await client.post("/api/chat", content=b"{nope")
    assert (missing.status_code, missing.json()) == (400, {"error": "model is required"})
    assert bad_format.status_code == 400 and "invalid format" in bad_format.json()["error"]
    assert not_json.status_code == 400 and "error" in not_json.json()


async def test_requests_past_the_budget_get_a_429_with_retry_after(serve: Serve) -> None:
    running = await serve(requests_per_minute=1)
    body = {"model": "mock-model", "messages": ASK, "stream": False}
    async with http(running) as client:
        assert (await client.post("/api/chat", json=body)).status_code == 200
        refused = await client.post("/api/chat", json=body)
    assert refused.status_code == 429
    assert refused.json() == {"error": "too many requests, please try again later"}
    assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_accept_any_key(serve: Serve) -> None:
    running = await serve(accept_any_key=True)
    async with httpx.AsyncClient(base_url=running.url("ollama")) as client:
        anyone = await client.get("/api/tags", headers={"Authorization": "Bearer whatever"})
        nobody = await client.get("/api/tags")
    assert anyone.status_code == 200 and nobody.status_code == 401

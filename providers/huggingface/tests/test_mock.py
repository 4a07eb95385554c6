"""The mock Hugging Face router, exercised over real HTTP with httpx."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.testing import Serve
from providers.core.types import Secret
from providers.huggingface.adapter import HuggingFace
from providers.huggingface.mock import PROMPTS
from providers.huggingface.mock_errors import QUOTA_MESSAGE
from providers.mock.server import RunningMock
from providers.mock.text import embedding_floats

HELLO = [{"role": "user", "content": "Say hello to the fleet"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    for name in ("weather", "time")
]


@pytest.fixture
async def mock(serve: Serve) -> RunningMock:
    return await serve()


@pytest.fixture
async def http(mock: RunningMock) -> AsyncIterator[httpx.AsyncClient]:
    root = mock.url("huggingface").removesuffix("/v1")
    headers = {"Authorization": "Bearer mock-key"}
    async with httpx.AsyncClient(base_url=root, headers=headers, timeout=10.0) as client:
        yield client


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "mock-model", "messages": HELLO, **extra}


async def events(
    http: httpx.AsyncClient, body: dict[str, Any], fault: str | None = None
) -> list[Any]:
    headers = {"x-mock-fault": fault} if fault else None
    found: list[Any] = []
    body = {**body, "stream": True}
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/event-stream"
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                found.append(data if data == "[DONE]" else json.loads(data))
    return found


# ---------------------------------------------------------------- chat


async def test_completion_shape_and_provider_suffix(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/chat/completions", json=chat(model="mock-model:together"))
    assert resp.status_code == 200
    assert resp.headers["x-inference-provider"] == "together"
    body = resp.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "mock-model"
    assert body["system_fingerprint"]
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert body["choices"][0]["finish_reason"] == "stop"
    for policy in ("fastest", "cheapest"):
        resp = await http.post("/v1/chat/completions", json=chat(model=f"mock-model:{policy}"))
        assert resp.headers["x-inference-provider"] == "hf-inference"


async def test_stream_layout(http: httpx.AsyncClient) -> None:
    found = await events(http, chat(max_tokens=3, stream_options={"include_usage": True}))
    assert found[-1] == "[DONE]"
    chunks = found[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["choices"][0]["delta"]["role"] == "assistant" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "length"]
    assert [c["usage"] for c in chunks[:-1]] == [None, None, None]
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    without = await events(http, chat(max_tokens=2))
    assert all(c["usage"] is None for c in without[:-1])


async def test_streamed_tool_calls_carry_every_field(http: httpx.AsyncClient) -> None:
    body = chat(tools=TOOLS, tool_choice="required")
    found = await events(http, body)
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in found[:-2]]
    assert all(set(call) == {"index", "id", "type", "function"} for call in calls)
    assert all("arguments" in call["function"] for call in calls)
    heads = [call for call in calls if call["id"]]
    assert [h["function"]["name"] for h in heads] == ["weather", "time"]
    assert found[-2]["choices"][0]["finish_reason"] == "tool_calls"
    mixed = await events(http, body, fault="interleave")
    order = [c["choices"][0]["delta"]["tool_calls"][0]["index"] for c in mixed[:-2]]
    assert order != sorted(order)


@pytest.mark.parametrize(
    ("fault", "event"),
    [
        ("stream-error-after:2", {"error": "Model is overloaded", "error_type": "overloaded"}),
        (
            "stream-error-after:2:500",
            {
                "error": "Request failed during generation: Server error: CUDA out of memory.",
                "error_type": "generation",
            },
        ),
    ],
)
async def test_tgi_errors_inside_a_stream(
    http: httpx.AsyncClient, fault: str, event: dict[str, Any]
) -> None:
    found = await events(http, chat(), fault=fault)
    assert len(found) == 3
    assert found[-1] == event


async def test_upstream_errors_inside_a_stream(http: httpx.AsyncClient) -> None:
    found = await events(http, chat(), fault="stream-error-after:1:429")
    assert found[-1]["error"]["type"] == "rate_limit_error"
    assert found[-1]["error"]["code"] == 429


async def test_filtered_changes_nothing(http: httpx.AsyncClient) -> None:
    plain = (await http.post("/v1/chat/completions", json=chat())).json()
    resp = await http.post(
        "/v1/chat/completions", json=chat(), headers={"x-mock-fault": "filtered-after:2"}
    )
    filtered = resp.json()
    assert filtered["choices"][0]["message"] == plain["choices"][0]["message"]


# ---------------------------------------------------------------- errors


FAULTS: list[tuple[str, int, Any]] = [
    (
        "400",
        400,
        {
            "error": {
                "message": "Invalid request (mock fault).",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    ),
    ("401", 401, {"error": "Invalid credentials in Authorization header"}),
    (
        "403",
        403,
        {
            "error": "This authentication method does not have sufficient permissions to call "
            "Inference Providers on behalf of user mock-user"
        },
    ),
    (
        "404",
        404,
        {
            "error": {
                "message": "The requested model 'mock-model' does not exist.",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        },
    ),
    ("quota", 402, {"error": QUOTA_MESSAGE}),
    ("overloaded", 503, {"error": "Model mock-model is currently loading", "estimated_time": 20.0}),
    (
        "context",
        422,
        {
            "error": "Input validation error: `inputs` tokens + `max_new_tokens` must be "
            "<= 128000. Given: 128001 `inputs` tokens and 0 `max_new_tokens`",
            "error_type": "validation",
        },
    ),
    ("500", 500, {"error": "Internal Server Error"}),
    ("503", 503, {"error": "Service Unavailable"}),
]


@pytest.mark.parametrize(("fault", "status", "body"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_fault_shapes(http: httpx.AsyncClient, fault: str, status: int, body: Any) -> None:
    resp = await http.post("/v1/chat/completions", json=chat(), headers={"x-mock-fault": fault})
    assert resp.status_code == status
    assert resp.json() == body


async def test_rate_limits_and_gateways(http: httpx.AsyncClient) -> None:
    for fault, wait in (
        ("429", None),
        ("429:retry-after=2", "2"),
        ("429:retry-after-ms=1500", "1.5"),
    ):
        resp = await http.post("/v1/chat/completions", json=chat(), headers={"x-mock-fault": fault})
        assert resp.status_code == 429
        assert resp.headers.get("retry-after") == wait
        assert isinstance(resp.json()["error"], str)
    for status, title in ((502, "502 Bad Gateway"), (504, "504 Gateway Time-out")):
        headers = {"x-mock-fault": str(status)}
        resp = await http.post("/v1/chat/completions", json=chat(), headers=headers)
        assert resp.status_code == status
        assert resp.headers["content-type"].startswith("text/html")
        assert f"<title>{title}</title>" in resp.text


async def test_the_budget_answers_429_with_a_wait(serve: Serve) -> None:
    mock = await serve(requests_per_minute=1)
    url = mock.url("huggingface") + "/chat/completions"
    async with httpx.AsyncClient(headers={"Authorization": "Bearer mock-key"}) as client:
        assert (await client.post(url, json=chat())).status_code == 200
        resp = await client.post(url, json=chat())
    assert resp.status_code == 429
    assert 0 < int(resp.headers["retry-after"]) <= 60


async def test_refusals(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/chat/completions", json=chat(model="no-such-model"))
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"
    resp = await http.post("/v1/chat/completions", json=chat(model="mock-model:"))
    assert resp.status_code == 400
    assert resp.json()["error_type"] == "validation"
    resp = await http.post("/v1/chat/completions", json=chat(max_tokens=200_000))
    assert resp.status_code == 422
    resp = await http.post(
        "/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer x"}
    )
    assert resp.status_code == 401
    assert resp.headers["x-error-message"] == "Invalid credentials in Authorization header"
    resp = await http.post("/v1/chat/completions", json=chat(), headers={"Authorization": ""})
    assert resp.status_code == 401
    assert "access token" in resp.json()["error"]


async def test_unknown_routes_answer_in_the_routers_shape(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/completions", json={})
    assert resp.status_code == 404
    assert resp.json() == {"error": "Cannot POST /huggingface/v1/completions"}
    resp = await http.get("/v1/chat/completions")
    assert resp.status_code == 405
    assert resp.json() == {"error": "Cannot GET /huggingface/v1/chat/completions"}


async def test_models(http: httpx.AsyncClient) -> None:
    listed = (await http.get("/v1/models")).json()
    assert listed["object"] == "list"
    first = listed["data"][0]
    assert first["object"] == "model"
    assert first["providers"][0]["provider"] == "hf-inference"


# ---------------------------------------------------------------- embeddings

PIPELINE = "/hf-inference/models/mock-embed/pipeline/feature-extraction"


async def test_feature_extraction(http: httpx.AsyncClient) -> None:
    resp = await http.post(PIPELINE, json={"inputs": ["one two", "three"], "normalize": True})
    assert resp.status_code == 200
    assert resp.json() == [embedding_floats("one two", 1536), embedding_floats("three", 1536)]
    assert resp.headers["x-compute-tokens"] == "3"
    assert resp.headers["x-compute-characters"] == "12"
    single = await http.post(PIPELINE, json={"inputs": "three"})
    assert single.json() == [embedding_floats("three", 1536)]
    assert math.isclose(math.fsum(v * v for v in single.json()[0]), 1.0, rel_tol=1e-5)


async def test_feature_extraction_prompts(http: httpx.AsyncClient) -> None:
    resp = await http.post(PIPELINE, json={"inputs": ["x"], "prompt_name": "query"})
    assert resp.json() == [embedding_floats(PROMPTS["query"] + "x", 1536)]
    resp = await http.post(PIPELINE, json={"inputs": ["x"], "prompt_name": "clustering"})
    assert resp.status_code == 422
    assert resp.json()["error_type"] == "Validation"


async def test_feature_extraction_refusals(http: httpx.AsyncClient) -> None:
    resp = await http.post(PIPELINE, json={"inputs": [f"t{i}" for i in range(33)]})
    assert resp.status_code == 413
    assert resp.json() == {
        "error": "batch size 33 > maximum allowed batch size 32",
        "error_type": "Validation",
    }
    resp = await http.post(PIPELINE, json={"inputs": []})
    assert resp.status_code == 400
    resp = await http.post(PIPELINE, json={"inputs": [1]})
    assert resp.status_code == 422
    path = "/hf-inference/models/org/unknown/pipeline/feature-extraction"
    resp = await http.post(path, json={"inputs": ["x"]})
    assert resp.status_code == 404
    assert resp.json() == {"error": "Model org/unknown does not exist"}
    resp = await http.post(PIPELINE, json={"inputs": ["x"]}, headers={"x-mock-fault": "quota"})
    assert resp.status_code == 402


# ---------------------------------------------------------------- the Hub


async def test_whoami(http: httpx.AsyncClient) -> None:
    me = (await http.get("/api/whoami-v2")).json()
    assert me["name"] == "mock-user"
    assert me["auth"]["accessToken"]["fineGrained"]["global"] == ["inference.serverless.write"]
    limited = (await http.get("/api/whoami-v2", headers={"x-mock-fault": "403"})).json()
    assert limited["auth"]["accessToken"]["fineGrained"]["global"] == ["discussion.write"]
    refused = await http.get("/api/whoami-v2", headers={"Authorization": "Bearer hf_wrong"})
    assert refused.status_code == 401
    down = await http.get("/api/whoami-v2", headers={"x-mock-fault": "500"})
    assert down.status_code == 500


async def test_the_adapter_verifies_against_the_mock(mock: RunningMock) -> None:
    async with HttpClientPool() as pool:
        adapter = HuggingFace(ProviderContext("huggingface", pool, mock.url("huggingface")))
        good = await adapter.verify(Secret({"api_key": "mock-key"}))
        assert (good.ok, good.detail) == (True, "authenticated as mock-user (fineGrained token)")
        async with httpx.AsyncClient(base_url=mock.root) as admin:
            queued = await admin.post("/_mock/faults", json={"spec": "403", "times": 1})
            assert queued.status_code == 201
        limited = await adapter.verify(Secret({"api_key": "mock-key"}))
        assert not limited.ok
        assert "lacks the 'Make calls to Inference Providers' permission" in limited.detail

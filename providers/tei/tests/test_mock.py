"""The TEI mock over HTTP: its routes, request rules, answer shapes and limiter."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from providers.core.testing import Serve
from providers.mock.rerank import rank
from providers.mock.server import RunningMock
from providers.mock.text import embedding_floats

AUTH = {"Authorization": "Bearer mock-key"}


def http(mock: RunningMock, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=mock.url("tei"), headers=AUTH if headers is None else headers)


async def post(serve: Serve, path: str, body: Any) -> httpx.Response:
    async with http(await serve()) as client:
        return await client.post(path, json=body)


async def test_embed_answer_and_headers(serve: Serve) -> None:
    response = await post(serve, "/embed", {"inputs": "hello there", "dimensions": 8})
    assert response.json() == [embedding_floats("hello there", 8)]
    assert response.headers["x-compute-tokens"] == "2"
    assert response.headers["x-compute-characters"] == "11"
    for name in ("x-compute-time", "x-total-time", "x-queue-time", "x-inference-time"):
        assert response.headers[name].isdigit()


async def test_prompts_change_the_vector(serve: Serve) -> None:
    response = await post(serve, "/embed", {"inputs": ["q"], "prompt_name": "document"})
    assert response.json() == [embedding_floats("passage: q", 1536)]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"inputs": []}, 400, {"error": "`inputs` cannot be empty", "error_type": "empty"}),
        (
            {"inputs": ["a"] * 33},
            413,
            {
                "error": "batch size 33 > maximum allowed batch size 32",
                "error_type": "validation",
            },
        ),
        (
            {"inputs": ["word " * 600]},
            413,
            {
                "error": "`inputs` must have less than 512 tokens. Given: 600",
                "error_type": "validation",
            },
        ),
        (
            {"inputs": ["a"], "prompt_name": "code"},
            413,
            {
                "error": "Prompt name `code` was not found in the prompts",
                "error_type": "validation",
            },
        ),
    ],
)
async def test_tei_errors(serve: Serve, body: Any, status: int, error: Any) -> None:
    response = await post(serve, "/embed", body)
    assert (response.status_code, response.json()) == (status, error)


async def test_long_inputs_are_cut_when_asked(serve: Serve) -> None:
    response = await post(serve, "/embed", {"inputs": ["word " * 600], "truncate": True})
    assert response.status_code == 200
    assert response.headers["x-compute-tokens"] == "512"


async def test_axum_rejections(serve: Serve) -> None:
    mock = await serve()
    async with http(mock) as client:
        missing = await client.post("/embed", json={"input": "a"})
        broken = await client.post(
            "/embed", content=b"{", headers={"Content-Type": "application/json"}
        )
        untyped = await client.post("/embed", content=b"{}")
    assert missing.status_code == 422
    assert missing.text == (
        "Failed to deserialize the JSON body into the target type: missing field `inputs`"
    )
    assert broken.status_code == 400 and broken.text.startswith("Failed to parse")
    assert untyped.status_code == 415


async def test_rerank_answer(serve: Serve) -> None:
    texts = ["one queue", "a durable queue"]
    body = {"query": "durable queue", "texts": texts, "raw_scores": True, "return_text": True}
    response = await post(serve, "/rerank", body)
    assert response.json() == [
        {"index": i, "text": texts[i], "score": math.log(s / (1 - s))}
        for i, s in rank("durable queue", texts)
    ]
    assert response.headers["x-compute-tokens"] == str(2 * 2 + 2 + 3)


async def test_keys_and_public_routes(serve: Serve) -> None:
    mock = await serve()
    async with http(mock, headers={}) as client:
        health = await client.get("/health")
        info = await client.get("/info")
        wrong = await client.post("/embed", json={"inputs": "a"}, headers={"Authorization": "x"})
    assert health.status_code == 200
    assert (info.status_code, info.content) == (401, b"")
    assert (wrong.status_code, wrong.content) == (401, b"")


async def test_unknown_routes_are_empty_404s(serve: Serve) -> None:
    mock = await serve()
    async with http(mock) as client:
        response = await client.post("/predict", json={"inputs": "a"})
    assert (response.status_code, response.content) == (404, b"")


async def test_the_limiter_is_teis_overload(serve: Serve) -> None:
    mock = await serve(requests_per_minute=1)
    async with http(mock) as client:
        assert (await client.post("/embed", json={"inputs": "a"})).status_code == 200
        refused = await client.post("/embed", json={"inputs": "a"})
    assert refused.status_code == 429
    assert refused.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
    assert "retry-after" not in refused.headers


async def test_faults_are_scoped_by_the_model_field(serve: Serve) -> None:
    mock = await serve()
    async with httpx.AsyncClient(base_url=mock.root) as admin:
        queued = {"spec": "503", "model": "mock-tei-scoped", "times": 1}
        assert (await admin.post("/_mock/faults", json=queued)).status_code == 201
    async with http(mock) as client:
        other = await client.post("/embed", json={"inputs": "a", "model": "mock-other"})
        unnamed = await client.post("/embed", json={"inputs": "a"})
        scoped = await client.post("/embed", json={"inputs": "a", "model": "mock-tei-scoped"})
    assert (other.status_code, unnamed.status_code) == (200, 200)
    assert (scoped.status_code, scoped.text) == (503, "Service Unavailable")

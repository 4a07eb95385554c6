"""The Voyage mock over HTTP: its request rules, answer shapes and limiter."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from providers.core.testing import Serve
from providers.mock.rerank import rank
from providers.mock.text import embedding_bytes, embedding_floats

AUTH = {"Authorization": "Bearer mock-key"}


async def post(serve: Serve, path: str, body: Any, **config: Any) -> httpx.Response:
    mock = await serve(**config)
    async with httpx.AsyncClient(base_url=mock.url("voyage")) as http:
        return await http.post(path, json=body, headers=AUTH)


async def test_floats_unless_base64_is_asked(serve: Serve) -> None:
    body = {"input": "one text", "model": "voyage-3.5", "output_dimension": 512}
    floats = (await post(serve, "/embeddings", body)).json()
    assert floats["data"] == [
        {"object": "embedding", "embedding": embedding_floats("one text", 512), "index": 0}
    ]
    assert floats["usage"] == {"total_tokens": 2}
    packed = (await post(serve, "/embeddings", {**body, "encoding_format": "base64"})).json()
    assert base64.b64decode(packed["data"][0]["embedding"]) == embedding_bytes("one text", 512)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"model": "voyage-3.5"}, 422, [{"loc": ["body", "input"], "msg": "Field required"}]),
        (
            {"input": ["a"], "model": "voyage-3.5", "input_type": "code"},
            422,
            [{"loc": ["body", "input_type"], "msg": "Input should be 'query' or 'document'"}],
        ),
        ({"input": [], "model": "voyage-3.5"}, 400, "The input list cannot be empty."),
        (
            {"input": ["a"], "model": "voyage-3.5", "output_dimension": 300},
            400,
            "Value '300' supplied for argument 'output_dimension' is not valid. "
            "Supported values are [256, 512, 1024, 2048].",
        ),
        (
            {"input": ["a"] * 1001, "model": "voyage-3.5"},
            400,
            "The batch size limit is 1000. Your batch size is 1001.",
        ),
    ],
)
async def test_request_rules(serve: Serve, body: Any, status: int, detail: Any) -> None:
    response = await post(serve, "/embeddings", body)
    assert response.status_code == status
    got = response.json()["detail"]
    if isinstance(detail, list):
        got = [{k: item[k] for k in ("loc", "msg")} for item in got]
    assert got == detail


async def test_tokens_past_the_model_limit(serve: Serve) -> None:
    body = {"input": ["word " * 60_001] * 2, "model": "voyage-3-large"}
    response = await post(serve, "/embeddings", body)
    assert response.status_code == 400
    assert "max allowed tokens per submitted batch is 120000" in response.json()["detail"]


async def test_rerank_without_documents_in_the_answer(serve: Serve) -> None:
    documents = ["one queue", "a durable queue"]
    body = {"query": "durable queue", "documents": documents, "model": "rerank-2.5-lite"}
    answer = (await post(serve, "/rerank", body)).json()
    assert answer["data"] == [
        {"relevance_score": score, "index": index}
        for index, score in rank("durable queue", documents)
    ]
    assert answer["usage"] == {"total_tokens": 2 * 2 + 2 + 3}


async def test_an_embedding_model_cannot_rerank(serve: Serve) -> None:
    body = {"query": "q", "documents": ["d"], "model": "voyage-3.5"}
    response = await post(serve, "/rerank", body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Model voyage-3.5 is not supported.")


async def test_the_limiter_answers_voyages_429(serve: Serve) -> None:
    body = {"input": ["a"], "model": "voyage-3.5"}
    mock = await serve(requests_per_minute=1)
    async with httpx.AsyncClient(base_url=mock.url("voyage"), headers=AUTH) as http:
        assert (await http.post("/embeddings", json=body)).status_code == 200
        refused = await http.post("/embeddings", json=body)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    assert "rate limit" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "No API key provided."),
        ({"Authorization": "Bearer nope"}, "Provided API key is invalid."),
    ],
)
async def test_keys(serve: Serve, headers: dict[str, str], detail: str) -> None:
    mock = await serve()
    async with httpx.AsyncClient(base_url=mock.url("voyage")) as http:
        response = await http.post("/embeddings", json={}, headers=headers)
    assert (response.status_code, response.json()) == (401, {"detail": detail})


async def test_unknown_methods(serve: Serve) -> None:
    mock = await serve()
    async with httpx.AsyncClient(base_url=mock.url("voyage"), headers=AUTH) as http:
        response = await http.get("/embeddings")
    assert (response.status_code, response.json()) == (405, {"detail": "Method Not Allowed"})

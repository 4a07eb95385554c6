"""The Gemini mock's own rules: auth, Google's 400s, embeddings limits, paging, limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from providers.core.testing import Serve
from providers.mock.server import RunningMock

HELLO: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hi there"}]}]}


@pytest.fixture
async def mock(serve: Serve) -> RunningMock:
    return await serve(requests_per_minute=0)


@pytest.fixture
async def raw(mock: RunningMock) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"x-goog-api-key": "mock-key"}
    async with httpx.AsyncClient(base_url=mock.url("gemini"), headers=headers) as http:
        yield http


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == response.status_code
    return error


async def test_keys(mock: RunningMock) -> None:
    async with httpx.AsyncClient(base_url=mock.url("gemini")) as http:
        missing = await http.post("/models/mock-g:generateContent", json=HELLO)
        assert missing.status_code == 403
        assert error_of(missing)["status"] == "PERMISSION_DENIED"
        wrong = await http.post(
            "/models/mock-g:generateContent", json=HELLO, headers={"x-goog-api-key": "nope"}
        )
        assert wrong.status_code == 400
        details = error_of(wrong)["details"]
        assert details[0]["reason"] == "API_KEY_INVALID"
        by_query = await http.post("/models/mock-g:generateContent?key=mock-key", json=HELLO)
        assert by_query.status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contents": []}, "contents is not specified"),
        ({**HELLO, "temprature": 1}, 'Unknown name "temprature"'),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": [{"role": "user", "parts": []}]}, "must not be empty"),
        (
            {**HELLO, "generationConfig": {"responseJsonSchema": {"type": "object"}}},
            "response_mime_type",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "x"}]},
                    {
                        "role": "user",
                        "parts": [{"functionResponse": {"name": "f", "response": {}}}],
                    },
                ]
            },
            "function response turn comes immediately after a function call turn",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "x"}]},
                    {
                        "role": "model",
                        "parts": [
                            {"functionCall": {"name": "f", "args": {}}},
                            {"functionCall": {"name": "g", "args": {}}},
                        ],
                    },
                    {
                        "role": "user",
                        "parts": [{"functionResponse": {"name": "f", "response": {}}}],
                    },
                ]
            },
            "number of function response parts is equal",
        ),
        (
            {
                **HELLO,
                "tools": [{"functionDeclarations": [{"name": "f"}]}],
                "toolConfig": {
                    "functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["f"]}
                },
            },
            "only allowed when mode is ANY",
        ),
    ],
)
async def test_googles_400s(raw: httpx.AsyncClient, body: dict[str, Any], message: str) -> None:
    response = await raw.post("/models/mock-g:generateContent", json=body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert message in error["message"]


async def test_snake_case_fields_are_accepted(raw: httpx.AsyncClient) -> None:
    body = {**HELLO, "generation_config": {"max_output_tokens": 2, "stop_sequences": ["zz"]}}
    response = await raw.post("/models/mock-g:generateContent", json=body)
    assert response.status_code == 200
    candidate = response.json()["candidates"][0]
    assert candidate["finishReason"] == "MAX_TOKENS"


async def test_stop_sequences_finish_with_stop(raw: httpx.AsyncClient) -> None:
    whole = (await raw.post("/models/mock-g:generateContent", json=HELLO)).json()
    text = whole["candidates"][0]["content"]["parts"][0]["text"]
    stop = text.split()[3]
    body = {**HELLO, "generationConfig": {"stopSequences": [stop]}}
    cut = (await raw.post("/models/mock-g:generateContent", json=body)).json()
    candidate = cut["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    assert stop not in candidate["content"]["parts"][0]["text"]


async def test_embedding_limits(raw: httpx.AsyncClient) -> None:
    def request(model: str = "models/mock-e") -> dict[str, Any]:
        return {"model": model, "content": {"parts": [{"text": "x"}]}}

    too_many = await raw.post(
        "/models/mock-e:batchEmbedContents", json={"requests": [request()] * 101}
    )
    assert too_many.status_code == 400 and "at most 100" in error_of(too_many)["message"]
    mismatch = await raw.post(
        "/models/mock-e:batchEmbedContents", json={"requests": [request("models/other")]}
    )
    assert mismatch.status_code == 400
    title = await raw.post(
        "/models/mock-e:embedContent",
        json={**request(), "title": "t", "taskType": "RETRIEVAL_QUERY"},
    )
    assert title.status_code == 400
    ok = await raw.post(
        "/models/mock-e:batchEmbedContents",
        json={"requests": [{**request(), "outputDimensionality": 4}] * 2},
    )
    body = ok.json()
    assert [len(e["values"]) for e in body["embeddings"]] == [4, 4]
    assert body["usageMetadata"] == {"promptTokenCount": 2}


async def test_models_are_paged(raw: httpx.AsyncClient) -> None:
    first = (await raw.get("/models", params={"pageSize": "2"})).json()
    assert len(first["models"]) == 2
    rest = (await raw.get("/models", params={"pageToken": first["nextPageToken"]})).json()
    assert "nextPageToken" not in rest
    model = first["models"][0]
    assert set(model) >= {"name", "supportedGenerationMethods", "inputTokenLimit"}
    missing = await raw.get("/models/not-a-model")
    assert missing.status_code == 404


async def test_count_tokens(raw: httpx.AsyncClient) -> None:
    direct = await raw.post("/models/mock-g:countTokens", json=HELLO)
    wrapped = await raw.post(
        "/models/mock-g:countTokens", json={"generateContentRequest": {"model": "x", **HELLO}}
    )
    assert direct.json()["totalTokens"] == wrapped.json()["totalTokens"] == 2


async def test_the_rate_limiter_answers_with_retry_info(serve: Serve) -> None:
    mock = await serve(requests_per_minute=1)
    headers = {"x-goog-api-key": "mock-key"}
    async with httpx.AsyncClient(base_url=mock.url("gemini"), headers=headers) as http:
        assert (await http.post("/models/mock-g:generateContent", json=HELLO)).status_code == 200
        refused = await http.post("/models/mock-g:generateContent", json=HELLO)
    assert refused.status_code == 429
    error = error_of(refused)
    kinds = {d["@type"].rsplit(".", 1)[-1]: d for d in error["details"]}
    assert kinds["RetryInfo"]["retryDelay"].endswith("s")
    assert "PerMinute" in kinds["QuotaFailure"]["violations"][0]["quotaId"]

"""The Azure mock on the wire: routes, sign-in, Entra tokens, shapes, faults, headers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from providers.azure import mock_entra
from providers.azure.mock import ENTRA_CREDENTIALS
from providers.azure.mock_entra import MOCK_CLIENT_ID, MOCK_CLIENT_SECRET, MOCK_TENANT
from providers.core.testing import Serve
from providers.mock.server import RunningMock

VERSION = {"api-version": "2024-10-21"}
KEY = {"api-key": "mock-key"}
ASK = [{"role": "user", "content": "Say hello to Azure"}]
ASKING = {"messages": ASK}
CHAT = "/openai/deployments/gpt-4o-mini/chat/completions"
SCOPE = "https://cognitiveservices.azure.com/.default"


@pytest.fixture
async def mock(serve: Serve) -> RunningMock:
    return await serve()


@pytest.fixture
async def http(mock: RunningMock) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=mock.url("azure"), timeout=10) as client:
        yield client


def form(**changes: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": MOCK_CLIENT_ID,
        "client_secret": MOCK_CLIENT_SECRET,
        "scope": SCOPE,
        **changes,
    }


def token_path(tenant: str = MOCK_TENANT) -> str:
    return f"/login/{tenant}/oauth2/v2.0/token"


async def events(http: httpx.AsyncClient, path: str, body: dict[str, Any], **kw: Any) -> list[Any]:
    chunks: list[Any] = []
    async with http.stream("POST", path, json={**body, "stream": True}, **kw) as resp:
        assert resp.status_code == 200, await resp.aread()
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                chunks.append(data if data == "[DONE]" else json.loads(data))
    return chunks


# -- routes and sign-in ---------------------------------------------------------------


async def test_mock_urls(mock: RunningMock) -> None:
    assert mock.url("azure") == mock.sdk_url("azure") == f"{mock.root}/azure"
    assert mock.token_url("azure") == f"{mock.root}/azure/login/{{tenant_id}}/oauth2/v2.0/token"


@pytest.mark.parametrize("query", [{}, {"api-version": "v1"}, {"api-version": "latest"}])
async def test_dated_routes_need_a_dated_api_version(
    http: httpx.AsyncClient, query: dict[str, str]
) -> None:
    for method, path in (("POST", CHAT), ("GET", "/openai/models")):
        resp = await http.request(method, path, params=query, headers=KEY, json={"messages": ASK})
        assert resp.status_code == 404
        assert resp.json() == {"error": {"code": "404", "message": "Resource not found"}}


async def test_unknown_routes_answer_in_azures_shape(http: httpx.AsyncClient) -> None:
    for path in ("/openai/nothing", "/elsewhere"):
        resp = await http.get(path, params=VERSION)
        assert resp.status_code == 404
        assert resp.json() == {"error": {"code": "404", "message": "Resource not found"}}
        assert resp.headers["apim-request-id"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Access denied due to missing subscription key"),
        ({"api-key": "wrong-key"}, "Access denied due to invalid subscription key"),
    ],
)
async def test_keys_are_refused_as_azure_refuses_them(
    http: httpx.AsyncClient, headers: dict[str, str], message: str
) -> None:
    resp = await http.post(CHAT, params=VERSION, headers=headers, json={"messages": ASK})
    assert resp.status_code == 401
    error = resp.json()["error"]
    assert error["code"] == "401" and error["message"].startswith(message)


async def test_tokens_issued_by_the_mock_are_accepted_until_they_expire(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = await http.post(token_path(), data=form())
    assert issued.status_code == 200
    grant = issued.json()
    assert grant["token_type"] == "Bearer" and grant["expires_in"] == 3599
    bearer = {"Authorization": f"Bearer {grant['access_token']}"}
    ok = await http.post(CHAT, params=VERSION, headers=bearer, json={"messages": ASK})
    assert ok.status_code == 200
    unknown = {"Authorization": "Bearer not-issued-here"}
    assert_refused_token(await http.post(CHAT, params=VERSION, headers=unknown, json=ASKING))
    later = mock_entra.now() + 3600
    monkeypatch.setattr(mock_entra, "now", lambda: later)
    assert_refused_token(await http.post(CHAT, params=VERSION, headers=bearer, json=ASKING))


def assert_refused_token(resp: httpx.Response) -> None:
    assert resp.status_code == 401
    assert resp.json()["statusCode"] == 401
    assert "Access token is missing, invalid" in resp.json()["message"]


@pytest.mark.parametrize(
    ("tenant", "changes", "status", "error", "code"),
    [
        (MOCK_TENANT, {"client_secret": "not-the-secret"}, 401, "invalid_client", 7000215),
        (MOCK_TENANT, {"client_secret": ""}, 401, "invalid_client", 7000216),
        ("other-tenant", {}, 400, "invalid_request", 90002),
        (MOCK_TENANT, {"client_id": "someone-else"}, 400, "unauthorized_client", 700016),
        (MOCK_TENANT, {"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
        (MOCK_TENANT, {"scope": "https://other.test"}, 400, "invalid_scope", 1002012),
    ],
)
async def test_token_endpoint_refusals(
    http: httpx.AsyncClient,
    tenant: str,
    changes: dict[str, str],
    status: int,
    error: str,
    code: int,
) -> None:
    resp = await http.post(token_path(tenant), data=form(**changes))
    assert resp.status_code == status
    body = resp.json()
    assert body["error"] == error and body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert "not-the-secret" not in body["error_description"]


def test_entra_credentials_match_the_mock_registration() -> None:
    assert ENTRA_CREDENTIALS == {
        "tenant_id": MOCK_TENANT,
        "client_id": MOCK_CLIENT_ID,
        "client_secret": MOCK_CLIENT_SECRET,
    }


async def test_unknown_deployments_are_deployment_not_found(http: httpx.AsyncClient) -> None:
    resp = await http.post(
        "/openai/deployments/no-such-deployment/chat/completions",
        params=VERSION,
        headers=KEY,
        json={"messages": ASK},
    )
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "DeploymentNotFound"
    v1 = await http.post(
        "/openai/v1/chat/completions", headers=KEY, json={"model": "nope", "messages": ASK}
    )
    assert v1.status_code == 404 and v1.json()["error"]["code"] == "DeploymentNotFound"


# -- answers ---------------------------------------------------------------------------


async def test_a_body_carries_filter_verdicts(http: httpx.AsyncClient) -> None:
    resp = await http.post(CHAT, params=VERSION, headers=KEY, json={"messages": ASK})
    assert resp.status_code == 200
    assert resp.headers["apim-request-id"] == resp.headers["x-request-id"]
    assert int(resp.headers["x-ratelimit-remaining-requests"]) >= 0
    assert int(resp.headers["x-ratelimit-remaining-tokens"]) >= 0
    body = resp.json()
    assert list(body) == sorted(body)  # Azure writes keys in alphabetical order
    assert "service_tier" not in body
    (verdict,) = body["prompt_filter_results"]
    assert verdict["prompt_index"] == 0 and verdict["content_filter_results"]["jailbreak"]
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["content_filter_results"]["violence"] == {"filtered": False, "severity": "safe"}


async def test_a_stream_is_shaped_like_the_recording(http: httpx.AsyncClient) -> None:
    body = {"messages": ASK, "max_tokens": 3, "stream_options": {"include_usage": True}}
    chunks = await events(http, CHAT, body, params=VERSION, headers=KEY)
    first, role, *content, finish, usage, done = chunks
    assert first["choices"] == [] and (first["id"], first["model"], first["created"]) == ("", "", 0)
    assert first["prompt_filter_results"][0]["content_filter_results"]["hate"]["severity"] == "safe"
    assert role["choices"][0]["delta"] == {"content": "", "refusal": None, "role": "assistant"}
    assert role["choices"][0]["content_filter_results"] == {}
    assert len(content) == 3
    for item in content:
        assert list(item) == sorted(item) and "obfuscation" not in item
        (choice,) = item["choices"]
        assert set(choice["content_filter_results"]) == {"hate", "self_harm", "sexual", "violence"}
        assert item["usage"] is None
    assert finish["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3
    assert done == "[DONE]"
    without = await events(
        http, CHAT, {"messages": ASK, "max_tokens": 2}, params=VERSION, headers=KEY
    )
    assert all("usage" not in c for c in without if c != "[DONE]")


async def test_v1_routes_take_the_deployment_as_model(http: httpx.AsyncClient) -> None:
    resp = await http.post(
        "/openai/v1/chat/completions", headers=KEY, json={"model": "gpt-4o-mini", "messages": ASK}
    )
    assert resp.status_code == 200 and resp.json()["model"] == "gpt-4o-mini"
    # OpenAI's SDK sends the key as a bearer token; the v1 API takes it.
    bearer = {"Authorization": "Bearer mock-key"}
    listed = await http.get("/openai/v1/models", headers=bearer)
    assert listed.status_code == 200 and listed.json()["object"] == "list"
    dated = await http.get("/openai/models", params=VERSION, headers=bearer)
    assert dated.status_code == 401
    missing = await http.post("/openai/v1/chat/completions", headers=KEY, json={"messages": ASK})
    assert missing.status_code == 400


async def test_models_are_listed_in_azures_shape(http: httpx.AsyncClient) -> None:
    listed = (await http.get("/openai/models", params=VERSION, headers=KEY)).json()
    by_id = {m["id"]: m for m in listed["data"]}
    assert by_id["text-embedding-3-small"]["capabilities"]["embeddings"] is True
    assert by_id["gpt-4o"]["capabilities"]["chat_completion"] is True
    assert by_id["gpt-4o"]["status"] == "succeeded"


async def test_embeddings(http: httpx.AsyncClient) -> None:
    path = "/openai/deployments/text-embedding-3-small/embeddings"
    body = {"input": ["a b", "c"], "dimensions": 4, "input_type": "query"}
    floats = (await http.post(path, params=VERSION, headers=KEY, json=body)).json()
    assert [len(d["embedding"]) for d in floats["data"]] == [4, 4]
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    b64 = await http.post(
        path, params=VERSION, headers=KEY, json={**body, "encoding_format": "base64"}
    )
    assert isinstance(b64.json()["data"][0]["embedding"], str)
    bad = await http.post(
        path, params=VERSION, headers=KEY, json={**body, "encoding_format": "int8"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "BadRequest"


# -- faults -------------------------------------------------------------------------


async def test_filtered_prompt_is_a_400_with_the_verdict(http: httpx.AsyncClient) -> None:
    headers = {**KEY, "x-mock-fault": "filtered"}
    for stream in (False, True):
        resp = await http.post(
            CHAT, params=VERSION, headers=headers, json={"messages": ASK, "stream": stream}
        )
        assert resp.status_code == 400
        error = resp.json()["error"]
        assert (error["code"], error["param"], error["status"]) == ("content_filter", "prompt", 400)
        verdict = error["innererror"]["content_filter_result"]
        assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
        assert verdict["violence"] == {"filtered": True, "severity": "high"}


async def test_filtered_after_n_stops_the_answer(http: httpx.AsyncClient) -> None:
    headers = {**KEY, "x-mock-fault": "filtered-after:2"}
    chunks = await events(http, CHAT, {"messages": ASK}, params=VERSION, headers=headers)
    texts = [
        c["choices"][0]["delta"].get("content")
        for c in chunks[2:]
        if c != "[DONE]" and c["choices"] and c["choices"][0]["delta"].get("content")
    ]
    assert len(texts) == 2
    finish = chunks[-2]["choices"][0]
    assert finish["finish_reason"] == "content_filter"
    assert finish["content_filter_results"]["violence"]["filtered"] is True
    whole = await http.post(CHAT, params=VERSION, headers=headers, json={"messages": ASK})
    choice = whole.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert len(choice["message"]["content"].split()) == 2


@pytest.mark.parametrize(
    ("spec", "status", "code"),
    [
        ("400", 400, None),
        ("401", 401, "401"),
        ("403", 403, "403"),
        ("404", 404, "DeploymentNotFound"),
        ("429:retry-after=3", 429, "429"),
        ("quota", 429, "insufficient_quota"),
        ("context", 400, "context_length_exceeded"),
        ("overloaded", 503, "ServiceUnavailable"),
        ("500", 500, None),
        ("502", 502, "502"),
        ("503", 503, "503"),
        ("504", 504, "504"),
    ],
)
async def test_error_faults(
    http: httpx.AsyncClient, spec: str, status: int, code: str | None
) -> None:
    headers = {**KEY, "x-mock-fault": spec}
    resp = await http.post(CHAT, params=VERSION, headers=headers, json={"messages": ASK})
    assert resp.status_code == status
    assert resp.json()["error"].get("code") == code
    if spec.startswith("429"):
        assert resp.headers["retry-after"] == "3"
        assert "Please retry after 3 seconds" in resp.json()["error"]["message"]
        assert resp.headers["x-ratelimit-remaining-requests"] == "0"


async def test_in_stream_error(http: httpx.AsyncClient) -> None:
    headers = {**KEY, "x-mock-fault": "stream-error-after:1:429"}
    chunks = await events(http, CHAT, {"messages": ASK}, params=VERSION, headers=headers)
    assert chunks[-1]["error"]["code"] == "429"
    assert "2024-10-21" in chunks[-1]["error"]["message"]


async def test_rate_limiter_answers_azures_429(serve: Serve) -> None:
    mock = await serve(requests_per_minute=1)
    async with httpx.AsyncClient(base_url=mock.url("azure")) as http:
        first = await http.post(CHAT, params=VERSION, headers=KEY, json={"messages": ASK})
        assert first.headers["x-ratelimit-remaining-requests"] == "0"
        second = await http.post(CHAT, params=VERSION, headers=KEY, json={"messages": ASK})
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) >= 1 and int(second.headers["retry-after-ms"]) > 0
    assert "ChatCompletions_Create" in second.json()["error"]["message"]

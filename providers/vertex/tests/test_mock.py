"""The Vertex mock: its token endpoint, its model routes, `:predict` and `:countTokens`."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from contracts.errors import Unauthorized
from contracts.jobs import Message
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.testing import Serve
from providers.core.types import ChatRequest, Secret
from providers.mock.config import DEFAULT_MODELS
from providers.mock.server import RunningMock
from providers.vertex.adapter import VERIFY_MODEL, Vertex
from providers.vertex.auth import JWT_BEARER_GRANT, SCOPE
from providers.vertex.mock import MOCK
from providers.vertex.mock_account import (
    CLIENT_EMAIL,
    GOOD_ACCOUNT,
    PRIVATE_KEY_ID,
    PROJECT_ID,
    WRONG_ACCOUNT,
)
from providers.vertex.mock_token import issue_token

MODEL = "mock-vertex"
ROOT = f"/v1/projects/{PROJECT_ID}/locations/us-central1/publishers/google/models"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(
    claims: dict[str, Any], *, key: str = GOOD_ACCOUNT["private_key"], kid: str = PRIVATE_KEY_ID
) -> str:
    """A compact RS256 JWT, signed with `cryptography` (independently of the adapter)."""
    private = serialization.load_pem_private_key(key.encode(), None)
    assert isinstance(private, rsa.RSAPrivateKey)
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def claims(audience: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": CLIENT_EMAIL, "scope": SCOPE, "aud": audience, "iat": now, "exp": now + 3600}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
async def mock(serve: Serve) -> RunningMock:
    # Google's one-instance embedding model too, for its limit.
    return await serve(models=(*DEFAULT_MODELS, "gemini-embedding-001"))


@pytest.fixture
async def http(mock: RunningMock) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=mock.url("vertex").removesuffix("/v1")) as client:
        yield client


def token_url(mock: RunningMock) -> str:
    url = mock.token_url("vertex")
    assert url is not None
    return url


async def exchange(
    http: httpx.AsyncClient, assertion: str, grant: str = JWT_BEARER_GRANT
) -> httpx.Response:
    return await http.post("/token", data={"grant_type": grant, "assertion": assertion})


async def access_token(mock: RunningMock, http: httpx.AsyncClient) -> str:
    response = await exchange(http, sign(claims(token_url(mock))))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


HELLO = {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}


# -- the token endpoint -------------------------------------------------------------------


@pytest.mark.parametrize("audience", ["own", "google"])
async def test_a_good_assertion_gets_a_token(
    mock: RunningMock, http: httpx.AsyncClient, audience: str
) -> None:
    aud = token_url(mock) if audience == "own" else "https://oauth2.googleapis.com/token"
    response = await exchange(http, sign(claims(aud)))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert body["expires_in"] == 3599 and body["token_type"] == "Bearer"
    assert body["access_token"].startswith("ya29.")


@pytest.mark.parametrize(
    ("case", "error", "description"),
    [
        ("wrong-key", "invalid_grant", "Invalid JWT Signature."),
        ("unknown-kid", "invalid_grant", "Invalid JWT Signature."),
        ("unknown-account", "invalid_grant", "Invalid grant: account not found"),
        ("expired", "invalid_grant", "Invalid JWT: Token must be a short-lived token"),
        ("from-the-future", "invalid_grant", "Invalid JWT: Token must be a short-lived token"),
        ("too-long", "invalid_grant", "Invalid JWT: Token must be a short-lived token"),
        ("audience", "invalid_grant", "Invalid JWT: Failed audience check."),
        ("no-scope", "invalid_scope", "Invalid OAuth scope or ID token audience provided."),
        ("not-a-jwt", "invalid_grant", "Invalid JWT"),
    ],
)
async def test_bad_assertions_are_refused_as_google_does(
    mock: RunningMock, http: httpx.AsyncClient, case: str, error: str, description: str
) -> None:
    aud = token_url(mock)
    now = int(time.time())
    makers: dict[str, Callable[[], str]] = {
        "wrong-key": lambda: sign(claims(aud), key=WRONG_ACCOUNT["private_key"]),
        "unknown-kid": lambda: sign(claims(aud), kid="0" * 40),
        "unknown-account": lambda: sign(
            claims(aud, iss="nobody@mock-project.iam.gserviceaccount.com")
        ),
        "expired": lambda: sign(claims(aud, iat=now - 7200, exp=now - 3600)),
        "from-the-future": lambda: sign(claims(aud, iat=now + 3600, exp=now + 7200)),
        "too-long": lambda: sign(claims(aud, exp=now + 7200)),
        "audience": lambda: sign(claims("https://elsewhere.test/token")),
        "no-scope": lambda: sign(claims(aud, scope=None)),
        "not-a-jwt": lambda: "not.a-jwt",
    }
    assertion = makers[case]()
    response = await exchange(http, assertion)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == error
    assert body["error_description"].startswith(description)


async def test_other_grant_types_are_refused(http: httpx.AsyncClient) -> None:
    response = await exchange(http, "x", grant="client_credentials")
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    response = await http.post("/token", data={"grant_type": JWT_BEARER_GRANT})
    assert response.json()["error"] == "invalid_request"


async def test_tokens_are_good_in_another_mock_process(
    serve: Serve, mock: RunningMock, http: httpx.AsyncClient
) -> None:
    # Stateless: what one process issued, another (here another server) accepts.
    token = await access_token(mock, http)
    other = await serve()
    async with httpx.AsyncClient(base_url=other.url("vertex")) as client:
        response = await client.post(
            f"/projects/{PROJECT_ID}/locations/us-central1/publishers/google/models/{MODEL}:countTokens",
            json=HELLO,
            headers=bearer(token),
        )
    assert response.status_code == 200, response.text


# -- model routes --------------------------------------------------------------------------


def _status(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == response.status_code
    return error


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "CREDENTIALS_MISSING"),
        ({"Authorization": "Bearer ya29.forged.token"}, "ACCESS_TOKEN_TYPE_UNSUPPORTED"),
        (
            {"Authorization": f"Bearer {issue_token(CLIENT_EMAIL, time.time() - 7200)}"},
            "ACCESS_TOKEN_TYPE_UNSUPPORTED",
        ),
        ({"x-goog-api-key": "AIza-mock"}, "CREDENTIALS_MISSING"),
    ],
    ids=["none", "forged", "expired", "api-key"],
)
async def test_model_routes_want_a_token_it_issued(
    http: httpx.AsyncClient, headers: dict[str, str], reason: str
) -> None:
    response = await http.post(f"{ROOT}/{MODEL}:generateContent", json=HELLO, headers=headers)
    assert response.status_code == 401
    error = _status(response)
    assert error["status"] == "UNAUTHENTICATED"
    assert error["message"].startswith("Request had invalid authentication credentials.")
    assert error["details"][0]["reason"] == reason


async def test_other_projects_are_not_found(mock: RunningMock, http: httpx.AsyncClient) -> None:
    token = await access_token(mock, http)
    response = await http.post(
        f"/v1/projects/other-project/locations/us-central1/publishers/google/models/{MODEL}:generateContent",
        json=HELLO,
        headers=bearer(token),
    )
    assert response.status_code == 404
    error = _status(response)
    assert error["status"] == "NOT_FOUND" and "other-project" in error["message"]


@pytest.mark.parametrize("location", ["us-central1", "global", "europe-west4", "us"])
@pytest.mark.parametrize("version", ["v1", "v1beta1"])
async def test_any_location_and_both_versions(
    mock: RunningMock, http: httpx.AsyncClient, location: str, version: str
) -> None:
    token = await access_token(mock, http)
    response = await http.post(
        f"/{version}/projects/{PROJECT_ID}/locations/{location}/publishers/google/models/{MODEL}:generateContent",
        json=HELLO,
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    assert response.json()["candidates"][0]["finishReason"] == "STOP"


async def test_unknown_model_and_routes_in_googles_shape(
    mock: RunningMock, http: httpx.AsyncClient
) -> None:
    token = await access_token(mock, http)
    response = await http.post(
        f"{ROOT}/no-such-model:generateContent", json=HELLO, headers=bearer(token)
    )
    assert response.status_code == 404
    assert _status(response)["message"].startswith("Publisher Model `projects/mock-project/")
    for path in (f"{ROOT}/{MODEL}:rawPredict", "/v1/projects/x", "/v2/anything"):
        response = await http.post(path, json=HELLO, headers=bearer(token))
        assert response.status_code == 404, path
        assert _status(response)["status"] == "NOT_FOUND"


async def test_stream_needs_alt_sse(mock: RunningMock, http: httpx.AsyncClient) -> None:
    token = await access_token(mock, http)
    response = await http.post(
        f"{ROOT}/{MODEL}:streamGenerateContent", json=HELLO, headers=bearer(token)
    )
    assert response.status_code == 400
    response = await http.post(
        f"{ROOT}/{MODEL}:streamGenerateContent?alt=sse", json=HELLO, headers=bearer(token)
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert b"\r\n\r\n" in response.content


# -- predict and countTokens ------------------------------------------------------------------


async def test_predict_shape(mock: RunningMock, http: httpx.AsyncClient) -> None:
    token = await access_token(mock, http)
    body = {
        "instances": [
            {"content": "one two three", "task_type": "RETRIEVAL_DOCUMENT", "title": "t"},
            {"content": "four"},
        ],
        "parameters": {"outputDimensionality": 8, "autoTruncate": True},
    }
    response = await http.post(f"{ROOT}/{MODEL}:predict", json=body, headers=bearer(token))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"predictions", "metadata"}
    first, second = (p["embeddings"] for p in answer["predictions"])
    assert len(first["values"]) == 8
    assert first["statistics"] == {"truncated": False, "token_count": 3}
    assert second["statistics"]["token_count"] == 1
    assert answer["metadata"] == {"billableCharacterCount": len("one two three") + len("four")}


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        (MODEL, {"instances": [{"content": "x"}] * 251}, "exceeds the limit"),
        ("gemini-embedding-001", {"instances": [{"content": "x"}] * 2}, "exceeds the limit"),
        (MODEL, {"instances": []}, "at least one instance"),
        (MODEL, {"instances": [{"text": "x"}]}, 'Unknown name "text"'),
        (MODEL, {"instances": [{"content": "x", "task_type": "QUERY"}]}, "unsupported task type"),
        (
            MODEL,
            {"instances": [{"content": "x"}], "parameters": {"outputDimensionality": 0}},
            "between 1",
        ),
        (
            MODEL,
            {"instances": [{"content": "x"}], "parameters": {"dims": 3}},
            'Unknown name "dims"',
        ),
        (MODEL, {"instances": [{"content": "x"}], "input": "x"}, 'Unknown name "input"'),
    ],
    ids=["too-many", "gemini-one", "none", "field", "task", "dims", "parameter", "top-field"],
)
async def test_predict_refuses_what_google_refuses(
    mock: RunningMock, http: httpx.AsyncClient, model: str, body: dict[str, Any], message: str
) -> None:
    token = await access_token(mock, http)
    response = await http.post(f"{ROOT}/{model}:predict", json=body, headers=bearer(token))
    assert response.status_code == 400, response.text
    error = _status(response)
    assert error["status"] == "INVALID_ARGUMENT" and message in error["message"]


async def test_predict_faults_in_vertex_words(mock: RunningMock, http: httpx.AsyncClient) -> None:
    token = await access_token(mock, http)
    body = {"instances": [{"content": "x"}]}
    headers = {**bearer(token), "x-mock-fault": "429:retry-after=3"}
    response = await http.post(f"{ROOT}/{MODEL}:predict", json=body, headers=headers)
    assert response.status_code == 429
    error = _status(response)
    assert error["message"].startswith("Resource exhausted.")
    retry = [d for d in error["details"] if d["@type"].endswith("RetryInfo")]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]
    headers["x-mock-fault"] = "quota"
    response = await http.post(f"{ROOT}/{MODEL}:predict", json=body, headers=headers)
    assert response.status_code == 429 and "per_day" in _status(response)["message"]


async def test_count_tokens(mock: RunningMock, http: httpx.AsyncClient) -> None:
    token = await access_token(mock, http)
    response = await http.post(
        f"{ROOT}/{VERIFY_MODEL}:countTokens", json=HELLO, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "totalTokens": 2,
        "totalBillableCharacters": len("Sayhello"),
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 2}],
    }
    response = await http.post(
        f"{ROOT}/gemini-9-ultra:countTokens", json=HELLO, headers=bearer(token)
    )
    assert response.status_code == 404


async def test_predict_rate_limit_per_token(serve: Serve) -> None:
    limited = await serve(requests_per_minute=1)
    async with httpx.AsyncClient(base_url=limited.url("vertex").removesuffix("/v1")) as http:
        token = await access_token(limited, http)
        body = {"instances": [{"content": "x"}]}
        first = await http.post(f"{ROOT}/{MODEL}:predict", json=body, headers=bearer(token))
        second = await http.post(f"{ROOT}/{MODEL}:predict", json=body, headers=bearer(token))
    assert first.status_code == 200
    assert second.status_code == 429
    retry = [d for d in _status(second)["details"] if d["@type"].endswith("RetryInfo")]
    assert retry and retry[0]["retryDelay"].endswith("s")


# -- the 401 fault -----------------------------------------------------------------------------


async def test_401_fault_refuses_the_next_grant_once(
    mock: RunningMock, pools: list[HttpClientPool]
) -> None:
    pool = HttpClientPool()
    pools.append(pool)
    adapter = Vertex(ProviderContext("vertex", pool, mock.url("vertex"), token_url(mock)))
    good = Secret(MOCK.credentials.good)
    req = ChatRequest(model=MODEL, messages=[Message(role="user", content="hi")])
    await adapter.chat(req, good)  # a token in the cache
    async with httpx.AsyncClient(base_url=mock.root) as admin:
        queued = await admin.post("/_mock/faults", json={"spec": "401", "model": MODEL})
        assert queued.status_code == 201
    with pytest.raises(Unauthorized, match="invalid_grant"):
        await adapter.chat(req, good)  # 401, then the refresh is refused
    assert (await adapter.chat(req, good)).finish_reason == "stop"  # and then it is over

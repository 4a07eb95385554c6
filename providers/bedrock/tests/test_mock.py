"""The Bedrock mock's own behaviour over real HTTP: its door (SigV4, API keys),
AWS-shaped refusals, request rules, limits and the stream's layout."""

from __future__ import annotations

import datetime
import json
from typing import Any

import httpx
import pytest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer

from providers.bedrock import mock_auth
from providers.bedrock.endpoints import model_path
from providers.bedrock.mock import resolve_model
from providers.bedrock.sigv4 import SigV4Auth
from providers.core.testing import Serve
from providers.mock.server import RunningMock

HELLO: dict[str, Any] = {"messages": [{"role": "user", "content": [{"text": "Say hello"}]}]}
GOOD = Credentials(mock_auth.ACCESS_KEY_ID, mock_auth.SECRET_ACCESS_KEY)


@pytest.fixture
async def mock(serve: Serve) -> RunningMock:
    return await serve()


def signed(
    mock: RunningMock, credentials: Credentials = GOOD, region: str = "us-east-1"
) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=mock.url("bedrock"), auth=SigV4Auth(credentials, region))


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-amzn-RequestId"]
    kind = response.headers["x-amzn-ErrorType"].split(":", 1)[0]
    return response.status_code, kind, response.json()["message"]


async def test_converse_answer_shape(mock: RunningMock) -> None:
    async with signed(mock) as http:
        response = await http.post(
            model_path("mock-model", "converse"),
            json={**HELLO, "inferenceConfig": {"maxTokens": 3}},
        )
    assert response.status_code == 200 and response.headers["x-amzn-RequestId"]
    body = response.json()
    assert set(body) == {"output", "stopReason", "usage", "metrics"}
    assert body["stopReason"] == "max_tokens"
    assert body["usage"] == {"inputTokens": 2, "outputTokens": 3, "totalTokens": 5}


async def test_stream_layout(mock: RunningMock) -> None:
    async with signed(mock) as http:
        response = await http.post(
            model_path("mock-model", "converse-stream"),
            json={**HELLO, "inferenceConfig": {"maxTokens": 3}},
        )
    assert response.headers["content-type"] == "application/vnd.amazon.eventstream"
    buffer = EventStreamBuffer()
    buffer.add_data(response.content)
    kinds = [m.headers[":event-type"] for m in buffer]
    assert kinds == [
        "messageStart",
        *["contentBlockDelta"] * 3,
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]


@pytest.mark.parametrize(
    ("headers", "kind", "message"),
    [
        ({}, "MissingAuthenticationTokenException", "Missing Authentication Token"),
        (
            {"Authorization": "AWS4-HMAC-SHA256 Credential=x"},
            "IncompleteSignatureException",
            "Authorization header requires",
        ),
        (
            {"Authorization": "Bearer not-a-key"},
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
    ],
)
async def test_unsigned_requests_are_refused(
    mock: RunningMock, headers: dict[str, str], kind: str, message: str
) -> None:
    async with httpx.AsyncClient(base_url=mock.url("bedrock"), headers=headers) as http:
        response = await http.post(model_path("mock-model", "converse"), json=HELLO)
    status, got_kind, got_message = error_of(response)
    assert (status, got_kind) == (403, kind) and got_message.startswith(message)


async def test_a_bedrock_api_key_is_accepted(mock: RunningMock) -> None:
    headers = {"Authorization": "Bearer mock-key"}
    async with httpx.AsyncClient(base_url=mock.url("bedrock"), headers=headers) as http:
        response = await http.post(model_path("mock-model", "converse"), json=HELLO)
    assert response.status_code == 200


async def test_signature_refusals(mock: RunningMock, monkeypatch: pytest.MonkeyPatch) -> None:
    async with signed(mock, Credentials("AKIAUNKNOWN", "x")) as http:
        assert (
            error_of(await http.post(model_path("mock-model", "converse"), json=HELLO))[1]
            == "UnrecognizedClientException"
        )
    async with signed(mock, region="xx-nowhere-1") as http:
        _, kind, message = error_of(
            await http.post(model_path("mock-model", "converse"), json=HELLO)
        )
        assert (kind, message) == (
            "InvalidSignatureException",
            "Credential should be scoped to a valid region. ",
        )
    async with signed(mock, Credentials(mock_auth.ACCESS_KEY_ID, mock_auth.WRONG_SECRET)) as http:
        _, kind, message = error_of(
            await http.post(model_path("mock-model", "converse"), json=HELLO)
        )
        assert kind == "InvalidSignatureException" and message.startswith(
            "The request signature we calculated"
        )
    # The session key's signature is not enough without its token.
    session = Credentials(mock_auth.SESSION_ACCESS_KEY_ID, mock_auth.SESSION_SECRET)
    async with signed(mock, session) as http:
        assert (
            error_of(await http.post(model_path("mock-model", "converse"), json=HELLO))[1]
            == "UnrecognizedClientException"
        )
    with_token = Credentials(
        mock_auth.SESSION_ACCESS_KEY_ID, mock_auth.SESSION_SECRET, mock_auth.SESSION_TOKEN
    )
    async with signed(mock, with_token) as http:
        assert (
            await http.post(model_path("mock-model", "converse"), json=HELLO)
        ).status_code == 200
    stale = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(minutes=6)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda *a, **k: stale)
    async with signed(mock) as http:
        _, kind, message = error_of(
            await http.post(model_path("mock-model", "converse"), json=HELLO)
        )
    assert kind == "InvalidSignatureException" and message.startswith("Signature expired: ")


async def test_a_tampered_body_fails_its_signature(mock: RunningMock) -> None:
    async with signed(mock) as http:
        request = http.build_request("POST", model_path("mock-model", "converse"), json=HELLO)
        signed_request = next(SigV4Auth(GOOD, "us-east-1").sync_auth_flow(request))
        tampered = httpx.Request(
            "POST",
            signed_request.url,
            headers=signed_request.headers,
            content=signed_request.content.replace(b"hello", b"HELLO"),
        )
        response = await http.send(tampered, auth=None)
    assert error_of(response)[1] == "InvalidSignatureException"


async def test_unknown_routes_and_models(mock: RunningMock) -> None:
    async with signed(mock) as http:
        status, kind, _ = error_of(await http.post("/guardrail/g/version/1/apply", json={}))
        assert (status, kind) == (404, "UnknownOperationException")
        status, kind, message = error_of(
            await http.post(model_path("anthropic.claude-9", "converse"), json=HELLO)
        )
        assert (status, kind) == (404, "ResourceNotFoundException")
        assert (
            message == "Could not resolve the foundation model from the provided model identifier."
        )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"messages": [{"role": "assistant", "content": [{"text": "x"}]}]},
            "must start with a user message",
        ),
        ({**HELLO, "temperature": 1}, "extraneous key [temperature]"),
        ({"messages": [{"role": "user", "content": [{"text": " "}]}]}, "is blank"),
        ({**HELLO, "inferenceConfig": {"topP": 2}}, "topP"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"text": "q"}]},
                    {
                        "role": "assistant",
                        "content": [{"toolUse": {"toolUseId": "t", "name": "f", "input": {}}}],
                    },
                ]
            },
            "toolConfig field must be defined",
        ),
    ],
)
async def test_converse_request_rules(
    mock: RunningMock, body: dict[str, Any], message: str
) -> None:
    async with signed(mock) as http:
        status, kind, got = error_of(
            await http.post(model_path("mock-model", "converse"), json=body)
        )
    assert (status, kind) == (400, "ValidationException") and message in got


async def test_the_rate_limit_gives_no_retry_hint(serve: Serve) -> None:
    mock = await serve(requests_per_minute=1)
    async with signed(mock) as http:
        assert (
            await http.post(model_path("mock-model", "converse"), json=HELLO)
        ).status_code == 200
        response = await http.post(model_path("mock-model", "converse"), json=HELLO)
    assert error_of(response)[:2] == (429, "ThrottlingException")
    assert "retry-after" not in response.headers


async def test_invoke_and_rerank_refusals(mock: RunningMock) -> None:
    async with signed(mock) as http:
        path = model_path("amazon.titan-embed-text-v2:0", "invoke")
        _, kind, message = error_of(await http.post(path, json={"inputText": "x", "dimensions": 7}))
        assert kind == "ValidationException" and "dimensions" in message
        _, _, message = error_of(await http.post(path, json={"texts": ["x"]}))
        assert "extraneous key [texts]" in message
        response = await http.post(
            model_path("mock-model", "invoke"), json={"inputText": "hi there"}
        )
        assert response.headers["X-Amzn-Bedrock-Input-Token-Count"] == "2"
        assert len(response.json()["embedding"]) == 1536
        rerank = {
            "queries": [{"type": "TEXT", "textQuery": {"text": "q"}}],
            "sources": [
                {
                    "type": "INLINE",
                    "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": "d"}},
                }
            ],
            "rerankingConfiguration": {
                "type": "BEDROCK_RERANKING_MODEL",
                "bedrockRerankingConfiguration": {
                    "modelConfiguration": {
                        "modelArn": "arn:aws:bedrock:us-east-1::foundation-model/nope.rerank"
                    }
                },
            },
        }
        assert error_of(await http.post("/rerank", json=rerank))[:2] == (
            404,
            "ResourceNotFoundException",
        )


def test_model_ids_resolve_like_bedrock() -> None:
    assert (
        resolve_model("us.anthropic.claude-3-haiku-20240307-v1:0")
        == "anthropic.claude-3-haiku-20240307-v1:0"
    )
    assert (
        resolve_model("arn:aws:bedrock:eu-west-1::foundation-model/amazon.rerank-v1:0")
        == "amazon.rerank-v1:0"
    )
    assert (
        resolve_model(
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.amazon.nova-micro-v1:0"
        )
        == "amazon.nova-micro-v1:0"
    )
    assert resolve_model("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc") == ""
    assert json.loads(json.dumps(resolve_model("mock-x"))) == "mock-x"

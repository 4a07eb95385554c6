"""The Vertex adapter against a fake Google: chat, streams, errors, verify."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from contracts.errors import (
    BadRequest,
    ContentFiltered,
    Forbidden,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from contracts.jobs import Message, Tool
from providers.core.http import HttpClientPool
from providers.core.testing import collect, stream_response
from providers.core.types import ChatRequest, StreamEnd, TextDelta, ToolDelta
from providers.vertex.adapter import VERIFY_MODEL
from providers.vertex.mock_account import CANARIES, CLIENT_EMAIL
from providers.vertex.tests.fakes import GENERATE_OK, FakeGoogle, build, secret

HELLO = ChatRequest(model="gemini-2.5-flash", messages=[Message(role="user", content="hi")])
TOOLS = [
    Tool(name="get_weather", description="Weather", parameters={"type": "object"}),
    Tool(name="get_time", description="Time", parameters={"type": "object"}),
]


def sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)


def google_error(code: int, status: str, message: str, *details: dict[str, Any]) -> httpx.Response:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return httpx.Response(code, json={"error": error})


# -- chat and streams ----------------------------------------------------------------------


async def test_chat_sends_gemini_body(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle()
    result = await build(fake, pools).chat(HELLO, secret())
    assert fake.body == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    request = fake.api_requests[-1]
    assert request.method == "POST"
    assert request.url.path.endswith("/models/gemini-2.5-flash:generateContent")
    assert request.headers["Content-Type"] == "application/json"
    assert result.message.text() == "hello"
    assert result.finish_reason == "stop"
    assert result.usage.input_tokens == 3 and result.usage.output_tokens == 1


async def test_parallel_tool_calls(pools: list[HttpClientPool]) -> None:
    answer = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                        {"functionCall": {"name": "get_time", "args": {"tz": "CET"}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 8},
    }
    fake = FakeGoogle(lambda request: httpx.Response(200, json=answer))
    req = ChatRequest(model="gemini-2.5-flash", messages=HELLO.messages, tools=TOOLS)
    result = await build(fake, pools).chat(req, secret())
    declarations = fake.body["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declarations] == ["get_weather", "get_time"]
    assert result.finish_reason == "tool_calls"
    calls = result.message.tool_calls or []
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]


async def test_stream_uses_sse_and_reads_chunks(pools: list[HttpClientPool]) -> None:
    body = sse(
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "hel"}]}}]},
        {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "STOP"}
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
        },
    )
    fake = FakeGoogle(lambda request: stream_response(body))
    events = await collect(build(fake, pools).stream_chat(HELLO, secret()))
    request = fake.api_requests[-1]
    assert request.url.path.endswith("/models/gemini-2.5-flash:streamGenerateContent")
    assert request.url.params["alt"] == "sse"
    assert request.headers["Accept"] == "text/event-stream"
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["hel", "lo"]
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "stop"
    assert end.usage.input_tokens == 3 and end.usage.output_tokens == 2


async def test_stream_tool_calls(pools: list[HttpClientPool]) -> None:
    body = sse(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"functionCall": {"name": "get_weather", "args": {}}}],
                    }
                }
            ]
        },
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"functionCall": {"name": "get_time", "args": {}}}],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
        },
    )
    fake = FakeGoogle(lambda request: stream_response(body))
    req = ChatRequest(model="gemini-2.5-flash", messages=HELLO.messages, tools=TOOLS)
    events = await collect(build(fake, pools).stream_chat(req, secret()))
    deltas = [e.delta for e in events if isinstance(e, ToolDelta)]
    assert [(d.index, d.name) for d in deltas] == [(0, "get_weather"), (1, "get_time")]
    assert len({d.id for d in deltas}) == 2
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "tool_calls"


async def test_stream_error_inside_the_stream(pools: list[HttpClientPool]) -> None:
    body = sse(
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "hel"}]}}]},
        {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
    )
    fake = FakeGoogle(lambda request: stream_response(body))
    with pytest.raises(ProviderUnavailable, match="UNAVAILABLE"):
        await collect(build(fake, pools).stream_chat(HELLO, secret()))


async def test_filtered_prompt_is_content_filtered(pools: list[HttpClientPool]) -> None:
    answer = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {}}
    fake = FakeGoogle(lambda request: httpx.Response(200, json=answer))
    with pytest.raises(ContentFiltered):
        await build(fake, pools).chat(HELLO, secret())


async def test_stream_with_a_bad_credential_fails_where_it_is_read(
    pools: list[HttpClientPool],
) -> None:
    fake = FakeGoogle()
    stream = build(fake, pools).stream_chat(HELLO, secret(client_email=""))
    with pytest.raises(BadRequest, match="not a service account"):
        async with contextlib.aclosing(stream) as events:
            async for _ in events:
                pass
    assert not fake.token_requests and not fake.api_requests


# -- errors -------------------------------------------------------------------------------


async def test_rate_limit_takes_retry_info(pools: list[HttpClientPool]) -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
    fake = FakeGoogle(
        lambda request: google_error(429, "RESOURCE_EXHAUSTED", "Resource exhausted.", retry)
    )
    with pytest.raises(RateLimited) as info:
        await build(fake, pools).chat(HELLO, secret())
    assert info.value.retry_after == 7.0 and info.value.retryable


async def test_daily_quota_is_quota_exceeded(pools: list[HttpClientPool]) -> None:
    quota = {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{"quotaId": "GenerateContentRequestsPerDayPerProjectPerBaseModel"}],
    }
    fake = FakeGoogle(lambda request: google_error(429, "RESOURCE_EXHAUSTED", "Quota.", quota))
    with pytest.raises(QuotaExceeded) as info:
        await build(fake, pools).chat(HELLO, secret())
    assert not info.value.retryable


async def test_error_messages_name_the_project_never_the_key(
    pools: list[HttpClientPool],
) -> None:
    message = (
        "Permission 'aiplatform.endpoints.predict' denied on resource "
        "'//aiplatform.googleapis.com/projects/mock-project/locations/us-central1' "
        f"(or it may not exist). {CANARIES[0]}"
    )
    fake = FakeGoogle(lambda request: google_error(403, "PERMISSION_DENIED", message))
    with pytest.raises(Forbidden) as info:
        await build(fake, pools).chat(HELLO, secret())
    assert "projects/mock-project/locations/us-central1" in info.value.message
    assert CANARIES[0] not in info.value.message


@pytest.mark.parametrize(
    "echo",
    [
        lambda key: key,
        lambda key: key.replace("\n", "\r\n"),
        lambda key: " ".join(key.splitlines()[3:9]),
    ],
    ids=["whole", "crlf", "some-lines"],
)
async def test_an_echoed_key_is_scrubbed(
    pools: list[HttpClientPool], echo: Callable[[str], str]
) -> None:
    key = secret().get("private_key") or ""
    fake = FakeGoogle(lambda request: google_error(400, "INVALID_ARGUMENT", "bad " + echo(key)))
    with pytest.raises(BadRequest) as info:
        await build(fake, pools).chat(HELLO, secret())
    lines = [line for line in key.splitlines() if not line.startswith("-----")]
    for line in lines:
        assert line not in info.value.message
    assert "[redacted]" in info.value.message


# -- verify --------------------------------------------------------------------------------


async def test_verify_counts_tokens(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle(lambda request: httpx.Response(200, json={"totalTokens": 1}))
    result = await build(fake, pools).verify(secret())
    assert result.ok
    assert CLIENT_EMAIL in result.detail and "'mock-project'" in result.detail
    request = fake.api_requests[-1]
    assert request.url.path == (
        "/v1/projects/mock-project/locations/us-central1/publishers/google/models/"
        f"{VERIFY_MODEL}:countTokens"
    )
    assert fake.body == {"contents": [{"role": "user", "parts": [{"text": "ping"}]}]}


async def test_verify_refused_key_is_not_ok(pools: list[HttpClientPool]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        body = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        return httpx.Response(400, json=body)

    fake = FakeGoogle(token=refuse)
    result = await build(fake, pools).verify(secret())
    assert not result.ok
    assert result.detail == "vertex: token endpoint invalid_grant: Invalid JWT Signature."
    assert not fake.api_requests


async def test_verify_token_refused_by_the_api_is_not_ok(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle(
        lambda request: google_error(401, "UNAUTHENTICATED", "Request had invalid credentials.")
    )
    result = await build(fake, pools).verify(secret())
    assert not result.ok and "UNAUTHENTICATED" in result.detail
    assert len(fake.token_requests) == 2  # refreshed once before giving up


@pytest.mark.parametrize(
    ("code", "status", "cls"),
    [(403, "PERMISSION_DENIED", Forbidden), (404, "NOT_FOUND", NotFound)],
)
async def test_verify_wrong_project_or_location_raises(
    pools: list[HttpClientPool], code: int, status: str, cls: type[Exception]
) -> None:
    fake = FakeGoogle(lambda request: google_error(code, status, "Not for you."))
    with pytest.raises(cls) as info:
        await build(fake, pools).verify(secret(project="other-project", location="europe-west4"))
    message = str(info.value)
    assert message.startswith(
        "vertex: Vertex AI in project 'other-project', location 'europe-west4' refused "
        + CLIENT_EMAIL
    )
    assert "Not for you." in message
    for canary in CANARIES:
        assert canary not in message


async def test_verify_unreachable_is_unavailable(pools: list[HttpClientPool]) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route to host", request=request)

    with pytest.raises(ProviderUnavailable, match="connect failed"):
        await build(FakeGoogle(down), pools).verify(secret())


async def test_verify_server_error_is_raised(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle(lambda request: google_error(500, "INTERNAL", "Internal error."))
    with pytest.raises(ProviderUnavailable):
        await build(fake, pools).verify(secret())


def test_generate_ok_is_a_complete_answer() -> None:
    assert GENERATE_OK["candidates"][0]["finishReason"] == "STOP"


async def test_refused_key_on_chat(pools: list[HttpClientPool]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "invalid_grant", "error_description": "Bad."})

    with pytest.raises(Unauthorized):
        await build(FakeGoogle(token=refuse), pools).chat(HELLO, secret())

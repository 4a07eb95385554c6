"""The official `google-genai` SDK, in Vertex AI mode, as an independent judge of the mock.

The SDK signs in with google-auth's own service-account credentials (the mock's
account, its `token_uri` at the mock's token endpoint), so the token endpoint is
judged too: google-auth must get a token from it, and its refusal must be
google-auth's `RefreshError`. Every answer must parse with the SDK, every fault
raise its typed error (`ClientError`/`ServerError` with Google's code and status);
raw bodies are also validated with the SDK's models, which forbid unknown fields.

google-auth refreshes synchronously (with `requests`); the SDK's async client does
that in a thread, so the mock can run in the test's own loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import google.auth.exceptions
import google.auth.transport.requests
import httpx
import pytest
from google import genai
from google.genai import errors, types
from google.oauth2 import service_account

from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from providers.mock.text import answer_rng, answer_tokens, embedding_floats
from providers.vertex.auth import SCOPE
from providers.vertex.mock_account import GOOD_ACCOUNT, LOCATION, PROJECT_ID, WRONG_ACCOUNT

HELLO = "Say hello to the fleet"
WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
TOOLS = [
    types.Tool(
        function_declarations=[
            types.FunctionDeclaration(name="weather", parameters_json_schema=WEATHER),
            types.FunctionDeclaration(name="lookup", description="Look up"),
        ]
    )
]
EMBED_MODEL = "mock-text-embedding"  # no "gemini" in it: the SDK uses :predict


@pytest.fixture
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig(context_window=5000, embed_dims=16), "127.0.0.1", 0)
    yield running
    await running.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def credentials(
    mock: RunningMock, account: dict[str, str] | None = None
) -> service_account.Credentials:
    info = dict(account or GOOD_ACCOUNT)
    del info["location"]  # the fleet's field, not the key file's
    info["token_uri"] = mock.token_url("vertex") or ""
    creds: service_account.Credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        info, scopes=[SCOPE]
    )
    return creds


def sdk_client(
    mock: RunningMock,
    http: httpx.AsyncClient,
    *,
    account: dict[str, str] | None = None,
    project: str = PROJECT_ID,
) -> genai.Client:
    options = types.HttpOptions(
        base_url=mock.sdk_url("vertex"),
        api_version="v1",
        retry_options=types.HttpRetryOptions(attempts=1),  # faults surface once
        httpx_async_client=http,
    )
    return genai.Client(
        vertexai=True,
        project=project,
        location=LOCATION,
        credentials=credentials(mock, account),
        http_options=options,
    )


@pytest.fixture
async def client(mock: RunningMock, http: httpx.AsyncClient) -> AsyncIterator[genai.Client]:
    sdk = sdk_client(mock, http)
    yield sdk
    await sdk.aio.aclose()


async def raw_client(mock: RunningMock) -> httpx.AsyncClient:
    """httpx with a token google-auth got from the mock, at the fleet's base URL."""
    creds = credentials(mock)
    await asyncio.to_thread(creds.refresh, google.auth.transport.requests.Request())
    return httpx.AsyncClient(
        base_url=mock.url("vertex")
        + f"/projects/{PROJECT_ID}/locations/{LOCATION}/publishers/google/models",
        headers={"Authorization": f"Bearer {creds.token}"},
    )


async def fault(mock: RunningMock, spec: str, model: str) -> None:
    async with httpx.AsyncClient(base_url=mock.root) as admin:
        response = await admin.post("/_mock/faults", json={"spec": spec, "model": model})
        assert response.status_code == 201, response.text


def model() -> str:
    return f"mock-vertex-{uuid4().hex[:8]}"


def hello_text(count: int) -> str:
    return "".join(answer_tokens(answer_rng([{"role": "user", "content": HELLO}], None), count))


# -- answers ---------------------------------------------------------------------------------


async def test_generate_content(client: genai.Client, mock: RunningMock) -> None:
    config = types.GenerateContentConfig(max_output_tokens=5)
    response = await client.aio.models.generate_content(
        model=model(), contents=HELLO, config=config
    )
    assert response.text == hello_text(5)
    candidate = (response.candidates or [])[0]
    assert candidate.finish_reason == types.FinishReason.MAX_TOKENS
    usage = response.usage_metadata
    assert usage is not None and usage.candidates_token_count == 5
    async with await raw_client(mock) as raw:
        answer = await raw.post(
            f"/{model()}:generateContent",
            json={"contents": [{"role": "user", "parts": [{"text": HELLO}]}]},
        )
    assert answer.status_code == 200
    types.GenerateContentResponse.model_validate(answer.json())


async def test_generate_content_stream(client: genai.Client, mock: RunningMock) -> None:
    config = types.GenerateContentConfig(max_output_tokens=6)
    chunks = [
        chunk
        async for chunk in await client.aio.models.generate_content_stream(
            model=model(), contents=HELLO, config=config
        )
    ]
    assert "".join(c.text or "" for c in chunks) == hello_text(6)
    last = (chunks[-1].candidates or [])[0]
    assert last.finish_reason == types.FinishReason.MAX_TOKENS
    async with await raw_client(mock) as raw:
        answer = await raw.post(
            f"/{model()}:streamGenerateContent",
            params={"alt": "sse"},
            json={"contents": [{"role": "user", "parts": [{"text": HELLO}]}]},
        )
    events = [e for e in answer.text.split("\r\n\r\n") if e]
    assert events
    for event in events:
        types.GenerateContentResponse.model_validate(json.loads(event.removeprefix("data: ")))


async def test_parallel_function_calls(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        tools=[*TOOLS],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY
            )
        ),
    )
    response = await client.aio.models.generate_content(
        model=model(), contents="Please use tools to look this up", config=config
    )
    calls = response.function_calls or []
    assert sorted(c.name or "" for c in calls) == ["lookup", "weather"]
    weather = next(c for c in calls if c.name == "weather")
    assert isinstance(weather.args, dict) and set(weather.args) >= {"city", "days"}


async def test_embed_content_uses_predict(client: genai.Client, mock: RunningMock) -> None:
    texts: list[types.PartUnion] = ["the first text", "a second text"]
    config = types.EmbedContentConfig(task_type="RETRIEVAL_DOCUMENT", output_dimensionality=8)
    response = await client.aio.models.embed_content(
        model=EMBED_MODEL, contents=texts, config=config
    )
    embeddings = response.embeddings or []
    assert [e.values for e in embeddings] == [embedding_floats(str(t), 8) for t in texts]
    statistics = [e.statistics for e in embeddings]
    assert [s.token_count if s else None for s in statistics] == [3.0, 3.0]
    assert all(s is not None and s.truncated is False for s in statistics)
    stats = await _stats(mock)
    assert any(route.endswith(":{method}") for route in stats["requests"])


async def _stats(mock: RunningMock) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=mock.root) as admin:
        body: dict[str, Any] = (await admin.get("/_mock/stats")).json()
        return body


async def test_count_tokens(client: genai.Client) -> None:
    response = await client.aio.models.count_tokens(model="gemini-2.5-flash", contents=HELLO)
    assert response.total_tokens == len(HELLO.split())


# -- credentials ---------------------------------------------------------------------------------


async def test_wrong_key_is_a_refresh_error(mock: RunningMock, http: httpx.AsyncClient) -> None:
    sdk = sdk_client(mock, http, account=dict(WRONG_ACCOUNT))
    with pytest.raises(google.auth.exceptions.RefreshError) as info:
        await sdk.aio.models.generate_content(model=model(), contents=HELLO)
    assert "invalid_grant" in str(info.value) and "Invalid JWT Signature." in str(info.value)
    for line in WRONG_ACCOUNT["private_key"].splitlines()[1:-1]:
        assert line not in str(info.value)


async def test_wrong_project_is_not_found(mock: RunningMock, http: httpx.AsyncClient) -> None:
    sdk = sdk_client(mock, http, project="other-project")
    with pytest.raises(errors.ClientError) as info:
        await sdk.aio.models.generate_content(model=model(), contents=HELLO)
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")
    assert "other-project" in (info.value.message or "")


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "cls", "code", "status"),
    [
        ("400", errors.ClientError, 400, "INVALID_ARGUMENT"),
        ("401", errors.ClientError, 401, "UNAUTHENTICATED"),
        ("403", errors.ClientError, 403, "PERMISSION_DENIED"),
        ("404", errors.ClientError, 404, "NOT_FOUND"),
        ("429:retry-after=3", errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
        ("quota", errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
        ("overloaded", errors.ServerError, 503, "UNAVAILABLE"),
        ("500", errors.ServerError, 500, "INTERNAL"),
        ("503", errors.ServerError, 503, "UNAVAILABLE"),
        ("504", errors.ServerError, 504, "DEADLINE_EXCEEDED"),
        ("context", errors.ClientError, 400, "INVALID_ARGUMENT"),
    ],
)
@pytest.mark.parametrize("call", ["generate", "embed"])
async def test_faults_raise_typed_errors(
    mock: RunningMock,
    client: genai.Client,
    spec: str,
    cls: type[errors.APIError],
    code: int,
    status: str,
    call: str,
) -> None:
    name = model()
    await fault(mock, spec, name)
    with pytest.raises(errors.APIError) as info:
        if call == "generate":
            await client.aio.models.generate_content(model=name, contents=HELLO)
        else:
            await client.aio.models.embed_content(model=name, contents=HELLO)
    assert type(info.value) is cls
    assert (info.value.code, info.value.status) == (code, status)
    details = {
        d["@type"].rsplit(".", 1)[-1]: d for d in info.value.details["error"].get("details", [])
    }
    if spec.startswith("429"):
        assert details["RetryInfo"]["retryDelay"] == "3s"
        assert "PerMinute" in details["QuotaFailure"]["violations"][0]["quotaId"]
        assert (info.value.message or "").startswith("Resource exhausted.")
    if spec == "quota":
        assert "PerDay" in details["QuotaFailure"]["violations"][0]["quotaId"]
    if spec == "401":
        assert details["ErrorInfo"]["reason"] == "ACCESS_TOKEN_TYPE_UNSUPPORTED"


async def test_errors_inside_a_stream(mock: RunningMock, client: genai.Client) -> None:
    name = model()
    await fault(mock, "stream-error-after:2:429", name)
    texts: list[str] = []
    with pytest.raises(errors.ClientError) as info:
        async for chunk in await client.aio.models.generate_content_stream(
            model=name, contents=HELLO
        ):
            texts.append(chunk.text or "")
    assert len(texts) == 2
    assert (info.value.code, info.value.status) == (429, "RESOURCE_EXHAUSTED")


async def test_filters(mock: RunningMock, client: genai.Client) -> None:
    name = model()
    await fault(mock, "filtered", name)
    blocked = await client.aio.models.generate_content(model=name, contents=HELLO)
    assert not blocked.candidates
    feedback = blocked.prompt_feedback
    assert feedback is not None and feedback.block_reason == types.BlockedReason.SAFETY
    await fault(mock, "filtered-after:2", name)
    chunks = [
        c async for c in await client.aio.models.generate_content_stream(model=name, contents=HELLO)
    ]
    last = (chunks[-1].candidates or [])[0]
    assert last.finish_reason == types.FinishReason.SAFETY
    assert "".join(c.text or "" for c in chunks[:-1]) == hello_text(2)


async def test_unknown_routes_and_models_answer_in_googles_shape(
    client: genai.Client, mock: RunningMock
) -> None:
    with pytest.raises(errors.ClientError) as info:
        await client.aio.models.generate_content(model="no-such-model", contents=HELLO)
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")
    assert (info.value.message or "").startswith("Publisher Model `projects/mock-project/")
    async with await raw_client(mock) as raw:
        for response in (
            await raw.post("/mock-v:explode", json={}),
            await raw.get("/mock-v"),
            await raw.post("/../../../v9/x", json={}),
        ):
            assert response.status_code == 404
            error = response.json()["error"]
            assert (error["code"], error["status"]) == (404, "NOT_FOUND")

"""The official `google-genai` SDK as an independent judge of the Gemini mock.

The SDK must parse every body and stream the mock sends and raise its own typed
error (`ClientError`/`ServerError` with Google's `code` and `status`) for every
fault. Raw bodies are also validated with the SDK's own models, which forbid
fields they do not know, so the mock cannot invent any.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import httpx
import pytest
from google import genai
from google.genai import errors, types

from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from providers.mock.text import answer_rng, answer_tokens

HELLO = "Say hello to the fleet"
WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
    },
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


@pytest.fixture
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig(context_window=5000), "127.0.0.1", 0)
    yield running
    await running.close()


def _client(mock: RunningMock, http: httpx.AsyncClient, key: str = "mock-key") -> genai.Client:
    options = types.HttpOptions(
        base_url=mock.sdk_url("gemini"),
        retry_options=types.HttpRetryOptions(attempts=1),  # faults surface once
        # httpx rather than the SDK's aiohttp session, whose subclassing of
        # ClientSession aiohttp warns about.
        httpx_async_client=http,
    )
    return genai.Client(api_key=key, http_options=options)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def client(mock: RunningMock, http: httpx.AsyncClient) -> AsyncIterator[genai.Client]:
    sdk = _client(mock, http)
    yield sdk
    await sdk.aio.aclose()


@pytest.fixture
async def raw(mock: RunningMock) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"x-goog-api-key": "mock-key"}
    async with httpx.AsyncClient(base_url=mock.url("gemini"), headers=headers) as http:
        yield http


async def fault(mock: RunningMock, spec: str, model: str) -> None:
    async with httpx.AsyncClient(base_url=mock.root) as admin:
        response = await admin.post("/_mock/faults", json={"spec": spec, "model": model})
        assert response.status_code == 201, response.text


def model() -> str:
    return f"mock-gemini-{uuid4().hex[:8]}"


def hello_text(count: int) -> str:
    return "".join(answer_tokens(answer_rng([{"role": "user", "content": HELLO}], None), count))


# -- answers ---------------------------------------------------------------------------------


async def test_generate_content(client: genai.Client, raw: httpx.AsyncClient) -> None:
    config = types.GenerateContentConfig(max_output_tokens=5)
    answer = await client.aio.models.generate_content(model="mock-g", contents=HELLO, config=config)
    assert answer.text == hello_text(5)
    candidate = (answer.candidates or [])[0]
    assert candidate.finish_reason == types.FinishReason.MAX_TOKENS
    usage = answer.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count) == (5, 5)
    body = {"contents": [{"parts": [{"text": HELLO}]}]}
    response = await raw.post("/models/mock-g:generateContent", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    types.GenerateContentResponse.model_validate(response.json())


async def test_generate_content_stream(client: genai.Client, raw: httpx.AsyncClient) -> None:
    chunks = [
        chunk
        async for chunk in await client.aio.models.generate_content_stream(
            model="mock-g", contents=HELLO
        )
    ]
    assert len(chunks) > 1
    assert "".join(c.text or "" for c in chunks) == hello_text(64)
    last = chunks[-1]
    assert (last.candidates or [])[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None and last.usage_metadata.candidates_token_count == 64
    body = {"contents": [{"parts": [{"text": HELLO}]}]}
    response = await raw.post("/models/mock-g:streamGenerateContent?alt=sse", json=body)
    text = response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert text.endswith("\r\n\r\n") and "[DONE]" not in text
    events = [e for e in text.split("\r\n\r\n") if e]
    for event in events:
        assert event.startswith("data: ")
        types.GenerateContentResponse.model_validate(json.loads(event.removeprefix("data: ")))


async def test_parallel_function_calls(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        tools=list(TOOLS),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    answer = await client.aio.models.generate_content(
        model="mock-g", contents="Please use tools", config=config
    )
    calls = answer.function_calls or []
    assert [c.name for c in calls] == ["weather", "lookup"]
    args = calls[0].args or {}
    assert set(args) == {"city", "days"} and args["days"]
    streamed = [
        call
        async for chunk in await client.aio.models.generate_content_stream(
            model="mock-g", contents="Please use tools", config=config
        )
        for call in chunk.function_calls or []
    ]
    assert [c.name for c in streamed] == ["weather", "lookup"]
    # The answer to the calls is accepted and answered with text.
    history = [
        types.Content(role="user", parts=[types.Part(text="Please use tools")]),
        (answer.candidates or [])[0].content or types.Content(),
        types.Content(
            role="user",
            parts=[
                types.Part.from_function_response(name=c.name or "", response={"ok": True})
                for c in calls
            ],
        ),
    ]
    final = await client.aio.models.generate_content(
        model="mock-g", contents=history, config=config
    )
    assert final.text and not final.function_calls
    forced = types.GenerateContentConfig(
        tools=list(TOOLS),
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["lookup"]
            )
        ),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    single = await client.aio.models.generate_content(model="mock-g", contents=HELLO, config=forced)
    assert [c.name for c in single.function_calls or []] == ["lookup"]


async def test_json_answers(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        response_mime_type="application/json", response_json_schema=WEATHER
    )
    answer = await client.aio.models.generate_content(model="mock-g", contents=HELLO, config=config)
    value = json.loads(answer.text or "")
    assert set(value) == {"city", "days"}


async def test_embed_content(client: genai.Client, raw: httpx.AsyncClient) -> None:
    result = await client.aio.models.embed_content(
        model="mock-embedding",
        contents=[types.Content(parts=[types.Part(text=t)]) for t in ("first", "second", "first")],
        config=types.EmbedContentConfig(task_type="RETRIEVAL_DOCUMENT", output_dimensionality=8),
    )
    vectors = [e.values for e in result.embeddings or []]
    assert len(vectors) == 3 and all(v is not None and len(v) == 8 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    one = await raw.post(
        "/models/mock-embedding:embedContent", json={"content": {"parts": [{"text": "x"}]}}
    )
    assert one.status_code == 200 and len(one.json()["embedding"]["values"]) == 1536


async def test_models_list_and_get(client: genai.Client) -> None:
    pager = await client.aio.models.list(config={"page_size": 3})
    names = [m.name async for m in pager]
    assert names == [f"models/{m}" for m in MockConfig().models]
    info = await client.aio.models.get(model="mock-model")
    assert info.name == "models/mock-model"
    assert info.supported_actions == ["generateContent", "countTokens"]
    tokens = await client.aio.models.count_tokens(model="mock-model", contents=HELLO)
    assert tokens.total_tokens == 5


# -- errors ------------------------------------------------------------------------------------


async def test_bad_key_is_api_key_invalid(mock: RunningMock, http: httpx.AsyncClient) -> None:
    sdk = _client(mock, http, key="not-a-key")
    with pytest.raises(errors.ClientError) as info:
        await sdk.aio.models.generate_content(model="mock-g", contents=HELLO)
    await sdk.aio.aclose()
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    details = info.value.details["error"]["details"]
    assert details[0]["reason"] == "API_KEY_INVALID"


@pytest.mark.parametrize(
    ("spec", "cls", "code", "status"),
    [
        ("400", errors.ClientError, 400, "INVALID_ARGUMENT"),
        ("401", errors.ClientError, 400, "INVALID_ARGUMENT"),
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
async def test_faults_raise_typed_errors(
    mock: RunningMock,
    client: genai.Client,
    spec: str,
    cls: type[errors.APIError],
    code: int,
    status: str,
) -> None:
    name = model()
    await fault(mock, spec, name)
    with pytest.raises(errors.APIError) as info:
        await client.aio.models.generate_content(model=name, contents=HELLO)
    assert type(info.value) is cls
    assert (info.value.code, info.value.status) == (code, status)
    details = {
        d["@type"].rsplit(".", 1)[-1]: d for d in info.value.details["error"].get("details", [])
    }
    if spec.startswith("429"):
        assert details["RetryInfo"]["retryDelay"] == "3s"
        assert "PerMinute" in details["QuotaFailure"]["violations"][0]["quotaId"]
    if spec == "quota":
        assert "PerDay" in details["QuotaFailure"]["violations"][0]["quotaId"]
    if spec == "context":
        assert "exceeds the maximum number of tokens allowed" in (info.value.message or "")


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
    assert any(r.blocked for r in last.safety_ratings or [])
    assert "".join(c.text or "" for c in chunks[:-1]) == hello_text(2)


async def test_unknown_routes_and_models_answer_in_googles_shape(
    client: genai.Client, raw: httpx.AsyncClient
) -> None:
    with pytest.raises(errors.ClientError) as info:
        await client.aio.models.generate_content(model="no-such-model", contents=HELLO)
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")
    for response in (
        await raw.post("/models/mock-g:explode", json={}),
        await raw.get("/tunedModels"),
    ):
        assert response.status_code == 404
        error = response.json()["error"]
        assert (error["code"], error["status"]) == (404, "NOT_FOUND")

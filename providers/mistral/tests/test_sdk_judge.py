"""The official `mistralai` SDK judges the mock: every body and stream must parse, every
fault must become the SDK's own typed error.

Two judges: the SDK client itself (what an application sees), and the SDK's
pydantic models validating the raw bytes strictly (exact literals, no coercion)
with no field the models do not declare.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import httpx
import pydantic
import pytest
from mistralai.client import Mistral, errors, models

from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock

KEY = "mock-key"
MODEL = "mistral-small-latest"
M = TypeVar("M", bound=pydantic.BaseModel)
ASK: list[models.ChatCompletionRequestMessageTypedDict] = [
    {"role": "user", "content": "Say hello to the fleet"}
]
TOOL_ASK: list[models.ChatCompletionRequestMessageTypedDict] = [
    {"role": "user", "content": "Please use tools"}
]


@pytest.fixture(scope="module")
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig())
    yield running
    await running.close()


@pytest.fixture
async def sdk(mock: RunningMock) -> AsyncIterator[Mistral]:
    async with Mistral(api_key=KEY, server_url=mock.sdk_url("mistral")) as client:
        yield client


@pytest.fixture
async def raw(mock: RunningMock) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=mock.url("mistral"), headers=headers) as client:
        yield client


def tool(name: str) -> models.ToolTypedDict:
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    }
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


# ---------------------------------------------------------------- strict validation


def undeclared(model: pydantic.BaseModel, payload: Any, path: str = "") -> Iterator[str]:
    """Paths of payload fields the parsed model did not declare (the SDK's models
    ignore unknown fields, so a misspelt field would otherwise pass unseen)."""
    if not isinstance(payload, dict):
        return
    fields = type(model).model_fields
    names = {f.alias or n: n for n, f in fields.items()}
    extra = set(model.model_extra or {})
    for key, value in payload.items():
        if key not in names and key not in extra:
            yield f"{path}.{key}"
            continue
        if key in extra:
            continue  # the model keeps unknown keys on purpose (UsageInfo)
        yield from _undeclared_in(getattr(model, names[key]), value, f"{path}.{key}")


def _undeclared_in(value: Any, payload: Any, path: str) -> Iterator[str]:
    if isinstance(value, pydantic.BaseModel):
        yield from undeclared(value, payload, path)
    elif isinstance(value, list) and isinstance(payload, list):
        for i, (item, raw_item) in enumerate(zip(value, payload, strict=True)):
            yield from _undeclared_in(item, raw_item, f"{path}[{i}]")


def strictly(model: type[M], payload: Any) -> M:
    parsed = model.model_validate(payload, strict=True)
    assert list(undeclared(parsed, payload)) == []
    return parsed


async def raw_chunks(http: httpx.AsyncClient, body: dict[str, Any]) -> list[models.CompletionChunk]:
    chunks: list[models.CompletionChunk] = []
    async with http.stream("POST", "/chat/completions", json={**body, "stream": True}) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            data = line.removeprefix("data: ")
            if line.startswith("data: ") and data != "[DONE]":
                chunks.append(strictly(models.CompletionChunk, json.loads(data)))
    return chunks


STRICT_BODIES: list[dict[str, Any]] = [
    {},
    {"max_tokens": 3, "random_seed": 7, "safe_prompt": True},
    {"n": 2, "max_tokens": 4},
    {"stop": ["queue"]},
    {"tools": [tool("weather"), tool("time")], "tool_choice": "any"},
    {"tools": [tool("weather"), tool("time")], "tool_choice": "required"},
    {"tools": [tool("weather")], "tool_choice": "any", "parallel_tool_calls": False},
    {"response_format": {"type": "json_object"}},
]


@pytest.mark.parametrize("extra", STRICT_BODIES)
async def test_bodies_and_chunks_validate_strictly(
    raw: httpx.AsyncClient, extra: dict[str, Any]
) -> None:
    body = {"model": MODEL, "messages": ASK, **extra}
    resp = await raw.post("/chat/completions", json=body)
    assert resp.status_code == 200
    completion = strictly(models.ChatCompletionResponse, resp.json())
    assert completion.usage.total_tokens
    chunks = await raw_chunks(raw, body)
    # Usage comes unasked, on the last chunk only: the one with the finish reason.
    assert chunks[-1].usage is not None and chunks[-1].choices[0].finish_reason is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].usage.total_tokens == completion.usage.total_tokens


async def test_embeddings_and_models_validate_strictly(raw: httpx.AsyncClient) -> None:
    body = {"model": "mistral-embed", "input": ["a", "b"], "output_dtype": "float"}
    embedded = strictly(models.EmbeddingResponse, (await raw.post("/embeddings", json=body)).json())
    assert [len(d.embedding or []) for d in embedded.data] == [1024, 1024]
    listed = strictly(models.ModelList, (await raw.get("/models")).json())
    assert listed.data and all(isinstance(m, models.BaseModelCard) for m in listed.data)
    card = strictly(models.BaseModelCard, (await raw.get(f"/models/{MODEL}")).json())
    assert card.capabilities.completion_chat


# ---------------------------------------------------------------- the SDK client


async def test_plain_chat(sdk: Mistral) -> None:
    completion = await sdk.chat.complete_async(model=MODEL, messages=ASK, random_seed=3)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message is not None and choice.message.content
    assert completion.usage.total_tokens == (
        (completion.usage.prompt_tokens or 0) + (completion.usage.completion_tokens or 0)
    )


async def test_stream(sdk: Mistral) -> None:
    stream = await sdk.chat.stream_async(model=MODEL, messages=ASK, max_tokens=5)
    text, finish, usage = "", None, None
    async for event in stream:
        for choice in event.data.choices:
            content = choice.delta.content
            text += content if isinstance(content, str) else ""
            finish = choice.finish_reason or finish
        usage = event.data.usage or usage
    assert len(text.split()) == 5 and finish == "length"
    assert usage is not None and usage.completion_tokens == 5


@pytest.mark.parametrize("stream", [False, True])
async def test_parallel_tool_calls(sdk: Mistral, stream: bool) -> None:
    tools = [tool("weather"), tool("time")]
    calls: list[models.ToolCall] = []
    if stream:
        events = await sdk.chat.stream_async(
            model=MODEL, messages=TOOL_ASK, tools=tools, tool_choice="any"
        )
        async for event in events:
            calls += event.data.choices[0].delta.tool_calls or []
    else:
        completion = await sdk.chat.complete_async(
            model=MODEL, messages=TOOL_ASK, tools=tools, tool_choice="any"
        )
        message = completion.choices[0].message
        assert message is not None
        calls = list(message.tool_calls or [])
    assert [c.function.name for c in calls] == ["weather", "time"]
    for call in calls:
        assert call.id and len(call.id) == 9 and call.id.isalnum()
        arguments = call.function.arguments
        assert isinstance(arguments, str) and set(json.loads(arguments)) == {"city", "days"}


async def test_a_tool_turn_round_trips(sdk: Mistral) -> None:
    tools = [tool("weather")]
    first = await sdk.chat.complete_async(
        model=MODEL, messages=TOOL_ASK, tools=tools, tool_choice="any"
    )
    message = first.choices[0].message
    assert message is not None and message.tool_calls
    call = message.tool_calls[0]
    user = models.UserMessage(content="Please use tools")
    turn: list[models.ChatCompletionRequestMessage] = [
        user,
        models.AssistantMessage(content="", tool_calls=[call]),
        models.ToolMessage(content='{"ok":true}', tool_call_id=call.id, name="weather"),
    ]
    second = await sdk.chat.complete_async(model=MODEL, tools=tools, messages=turn)
    assert second.choices[0].finish_reason == "stop"
    # An id Mistral did not make (another provider's) is refused, as Mistral does.
    foreign: list[models.ChatCompletionRequestMessage] = [
        user,
        models.ToolMessage(content="{}", tool_call_id="call_abc123"),
    ]
    with pytest.raises(errors.SDKError) as info:
        await sdk.chat.complete_async(model=MODEL, messages=foreign)
    assert info.value.status_code == 400
    assert json.loads(info.value.body)["code"] == "3280"


async def test_embeddings(sdk: Mistral) -> None:
    plain = await sdk.embeddings.create_async(model="mistral-embed", inputs=["a", "b"])
    assert [len(d.embedding or []) for d in plain.data] == [1024, 1024]
    smaller = await sdk.embeddings.create_async(
        model="codestral-embed", inputs=["a"], output_dimension=256, output_dtype="float"
    )
    assert len(smaller.data[0].embedding or []) == 256
    assert plain.usage.prompt_tokens == 2


async def test_models(sdk: Mistral) -> None:
    listed = await sdk.models.list_async()
    ids = [m.id for m in listed.data or [] if isinstance(m, models.BaseModelCard)]
    assert MODEL in ids and "mistral-embed" in ids
    card = await sdk.models.retrieve_async(model_id=MODEL)
    assert isinstance(card, models.BaseModelCard) and card.id == MODEL


async def test_wrong_key_is_a_401(mock: RunningMock) -> None:
    async with Mistral(api_key="not-the-key-1234", server_url=mock.sdk_url("mistral")) as sdk:
        with pytest.raises(errors.SDKError) as info:
            await sdk.models.list_async()
    assert info.value.status_code == 401
    assert json.loads(info.value.body)["message"] == "Unauthorized"
    assert "not-the-key" not in info.value.body


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("spec", "status", "code"),
    [
        ("400", 400, None),
        ("401", 401, None),
        ("403", 403, "1910"),
        ("404", 404, "1500"),
        ("429:retry-after=1", 429, "1300"),
        ("quota", 429, "1300"),
        ("context", 400, None),
        ("overloaded", 429, "3505"),
        ("500", 500, None),
        ("502", 502, None),
        ("503", 503, None),
        ("504", 504, None),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_every_fault_is_the_sdks_typed_error(
    sdk: Mistral, spec: str, status: int, code: str | None, stream: bool
) -> None:
    headers = {"x-mock-fault": spec}
    with pytest.raises(errors.SDKError) as info:
        if stream:
            await sdk.chat.stream_async(model=MODEL, messages=ASK, http_headers=headers)
        else:
            await sdk.chat.complete_async(model=MODEL, messages=ASK, http_headers=headers)
    error = info.value
    assert type(error) is errors.SDKError
    assert error.status_code == status
    assert error.headers["mistral-correlation-id"]
    if status in (502, 503, 504):
        assert error.headers["content-type"].startswith("text/plain")
    elif status == 401:
        assert json.loads(error.body) == {"detail": "Unauthorized"}
    else:
        body = json.loads(error.body)
        assert body["object"] == "error" and body["code"] == code
        assert body["raw_status_code"] == status
    if spec.startswith("429"):
        assert error.headers["retry-after"] == "1"
    if spec == "quota":
        assert error.headers["x-ratelimit-remaining-tokens-month"] == "0"


async def test_validation_errors_are_the_sdks_422(sdk: Mistral, raw: httpx.AsyncClient) -> None:
    with pytest.raises(errors.HTTPValidationError) as info:
        await sdk.chat.complete_async(model=MODEL, messages=ASK, n=0)
    assert info.value.data.detail and info.value.data.detail[0].loc == ["body", "n"]
    # OpenAI's spellings are fields Mistral does not know.
    resp = await raw.post(
        "/chat/completions",
        json={"model": MODEL, "messages": ASK, "seed": 1, "stream_options": {}},
    )
    assert resp.status_code == 422
    assert [d["loc"][-1] for d in resp.json()["detail"]] == ["seed", "stream_options"]


async def test_unknown_model_is_a_400_invalid_model(sdk: Mistral) -> None:
    with pytest.raises(errors.SDKError) as info:
        await sdk.chat.complete_async(model="no-such-model", messages=ASK)
    assert info.value.status_code == 400
    assert json.loads(info.value.body)["type"] == "invalid_model"


@pytest.mark.parametrize(
    ("spec", "code", "words"),
    [("stream-error-after:3", "3505", 3), ("stream-error-after:0:429", "1300", 0)],
)
async def test_in_stream_error_fails_the_sdks_stream(
    sdk: Mistral, spec: str, code: str, words: int
) -> None:
    stream = await sdk.chat.stream_async(
        model=MODEL, messages=ASK, http_headers={"x-mock-fault": spec}
    )
    text = ""
    with pytest.raises(errors.ResponseValidationError) as info:
        async for event in stream:
            content = event.data.choices[0].delta.content
            text += content if isinstance(content, str) else ""
    # A 200 that failed midway: the SDK cannot read Mistral's error object as a chunk
    # (the body it quotes is the event, the error object under its `data`).
    assert json.loads(info.value.body)["data"]["code"] == code
    assert len(text.split()) == words


async def test_unknown_routes_answer_in_mistrals_shape(raw: httpx.AsyncClient) -> None:
    missing = await raw.get("/no/such/route")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    wrong_method = await raw.get("/chat/completions")
    assert (wrong_method.status_code, wrong_method.json()) == (
        405,
        {"detail": "Method Not Allowed"},
    )


async def test_rate_limiter_is_a_429_with_retry_after() -> None:
    mock = await start_mock(MockConfig(requests_per_minute=1))
    try:
        async with Mistral(api_key=KEY, server_url=mock.sdk_url("mistral")) as sdk:
            first = await sdk.chat.complete_async(model=MODEL, messages=ASK)
            assert first.choices
            with pytest.raises(errors.SDKError) as info:
                await sdk.chat.complete_async(model=MODEL, messages=ASK)
    finally:
        await mock.close()
    assert info.value.status_code == 429
    assert json.loads(info.value.body)["type"] == "rate_limited"
    assert int(info.value.headers["retry-after"]) >= 1
    assert info.value.headers["x-ratelimit-remaining-req-minute"] == "0"

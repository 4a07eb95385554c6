"""The official `ollama` SDK judges the mock: every answer must parse into the SDK's
own models (`ChatResponse`, `EmbedResponse`, `ListResponse`, `ShowResponse`), and every
fault must become the SDK's `ResponseError` with the status Ollama would send."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from ollama import AsyncClient, ChatResponse, ResponseError

from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock

KEY = "mock-key"
ASK = [{"role": "user", "content": "Say hello to the fleet"}]


def tool(name: str) -> dict[str, Any]:
    parameters = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    }
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


@pytest.fixture(scope="module")
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig())
    yield running
    await running.close()


@pytest.fixture
async def sdk(mock: RunningMock) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(
        host=mock.sdk_url("ollama"), headers={"Authorization": f"Bearer {KEY}"}
    ) as client:
        yield client


def faulted(mock: RunningMock, spec: str) -> AsyncClient:
    headers = {"Authorization": f"Bearer {KEY}", "x-mock-fault": spec}
    return AsyncClient(host=mock.sdk_url("ollama"), headers=headers)


async def test_plain_chat(sdk: AsyncClient) -> None:
    response = await sdk.chat(model="mock-model", messages=ASK, options={"num_predict": 5})
    assert response.done and response.done_reason == "length"
    assert response.message.role == "assistant" and response.message.content
    assert response.prompt_eval_count and response.eval_count == 5
    assert response.message.thinking is None


async def test_stream(sdk: AsyncClient) -> None:
    parts: list[ChatResponse] = []
    async for part in await sdk.chat(model="mock-model", messages=ASK, stream=True):
        parts.append(part)
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert parts[-1].done_reason == "stop"
    text = "".join(p.message.content or "" for p in parts)
    whole = await sdk.chat(model="mock-model", messages=ASK)
    assert text == whole.message.content
    assert parts[-1].eval_count == whole.eval_count == len(parts) - 1


async def test_thinking_is_apart_from_the_answer(sdk: AsyncClient) -> None:
    whole = await sdk.chat(model="mock-model", messages=ASK, think=True)
    assert whole.message.thinking and whole.message.content
    parts = [
        p async for p in await sdk.chat(model="mock-model", messages=ASK, think=True, stream=True)
    ]
    thinking = "".join(p.message.thinking or "" for p in parts)
    assert thinking == whole.message.thinking
    assert "".join(p.message.content or "" for p in parts) == whole.message.content


@pytest.mark.parametrize("stream", [False, True])
async def test_parallel_tool_calls(sdk: AsyncClient, stream: bool) -> None:
    ask = [{"role": "user", "content": "Please use tools for this"}]
    tools = [tool("weather"), tool("time")]
    if stream:
        parts = [
            p
            async for p in await sdk.chat(
                model="mock-model", messages=ask, tools=tools, stream=True
            )
        ]
        # Each call comes whole, in an object of its own.
        calls = [c for p in parts for c in p.message.tool_calls or ()]
        assert all(len(p.message.tool_calls or ()) <= 1 for p in parts)
        final = parts[-1]
    else:
        final = await sdk.chat(model="mock-model", messages=ask, tools=tools)
        calls = list(final.message.tool_calls or ())
    assert [c.function.name for c in calls] == ["weather", "time"]
    for call in calls:
        assert isinstance(call.function.arguments["city"], str)
        assert isinstance(call.function.arguments["days"], int)
    assert final.done_reason == "stop"
    # The tool results go back by name, and the model answers with text.
    follow: list[Any] = [
        *ask,
        {"role": "assistant", "content": "", "tool_calls": calls},
        *({"role": "tool", "content": "{}", "tool_name": c.function.name} for c in calls),
    ]
    answer = await sdk.chat(model="mock-model", messages=follow, tools=tools)
    assert answer.message.content and not answer.message.tool_calls


async def test_structured_outputs(sdk: AsyncClient) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    answer = await sdk.chat(model="mock-model", messages=ASK, format=schema)
    assert isinstance(json.loads(answer.message.content or "")["age"], int)
    loose = await sdk.chat(model="mock-model", messages=ASK, format="json")
    assert isinstance(json.loads(loose.message.content or ""), dict)


async def test_embed(sdk: AsyncClient) -> None:
    response = await sdk.embed(model="mock-embed", input=["a b", "c"], dimensions=8)
    assert len(response.embeddings) == 2 and all(len(v) == 8 for v in response.embeddings)
    assert response.prompt_eval_count == 3
    single = await sdk.embed(model="mock-embed", input="a b", dimensions=8)
    assert list(single.embeddings[0]) == list(response.embeddings[0])
    legacy = await sdk.embeddings(model="mock-embed", prompt="a b")
    assert len(legacy.embedding) == 1536


async def test_list_show_and_ps(sdk: AsyncClient) -> None:
    listed = await sdk.list()
    assert "mock-model" in {m.model for m in listed.models}
    assert all(m.modified_at is not None and m.details is not None for m in listed.models)
    shown = await sdk.show("mock-model")
    assert shown.capabilities and "tools" in shown.capabilities
    assert (await sdk.ps()).models == []


async def test_credentials(mock: RunningMock) -> None:
    for headers in ({}, {"Authorization": "Bearer sk-wrong-key-0000"}):
        async with AsyncClient(host=mock.sdk_url("ollama"), headers=headers) as client:
            with pytest.raises(ResponseError) as info:
                await client.list()
        assert info.value.status_code == 401 and info.value.error == "unauthorized"
    # The version answers without a key: a reachability check.
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{mock.sdk_url('ollama')}/api/version")
    assert response.status_code == 200 and response.json()["version"]


@pytest.mark.parametrize(
    ("spec", "status", "words"),
    [
        ("400", 400, "invalid request"),
        ("401", 401, "unauthorized"),
        ("403", 403, "subscription"),
        ("404", 404, "try pulling it first"),
        ("429", 429, "too many requests"),
        ("quota", 429, "weekly usage limit"),
        ("overloaded", 503, "server busy"),
        ("500", 500, "llama runner"),
        ("502", 502, "bad gateway"),
        ("503", 503, "Service Temporarily Unavailable"),
        ("504", 504, "gateway timeout"),
        ("context", 400, "context length"),
    ],
)
async def test_faults_are_response_errors(
    mock: RunningMock, spec: str, status: int, words: str
) -> None:
    async with faulted(mock, spec) as client:
        for stream in (False, True):
            with pytest.raises(ResponseError) as info:
                if stream:
                    async for _ in await client.chat(model="mock-model", messages=ASK, stream=True):
                        pass
                else:
                    await client.chat(model="mock-model", messages=ASK)
            assert info.value.status_code == status
            assert words in info.value.error


async def test_429_says_when_to_retry(mock: RunningMock) -> None:
    async with httpx.AsyncClient(base_url=mock.sdk_url("ollama")) as http:
        headers = {"Authorization": f"Bearer {KEY}", "x-mock-fault": "429:retry-after=7"}
        response = await http.post(
            "/api/chat", json={"model": "mock-model", "messages": ASK}, headers=headers
        )
    assert response.status_code == 429 and response.headers["retry-after"] == "7"


async def test_unknown_model(sdk: AsyncClient) -> None:
    with pytest.raises(ResponseError) as info:
        await sdk.chat(model="no-such-model", messages=ASK)
    assert info.value.status_code == 404
    assert info.value.error == 'model "no-such-model" not found, try pulling it first'


async def test_error_inside_a_stream(mock: RunningMock) -> None:
    got: list[str] = []
    async with faulted(mock, "stream-error-after:2:429") as client:
        with pytest.raises(ResponseError) as info:
            async for part in await client.chat(model="mock-model", messages=ASK, stream=True):
                got.append(part.message.content or "")
    # The SDK raises an in-stream error without a status, as Ollama sends none.
    assert len(got) == 2 and info.value.status_code == -1
    assert "too many requests" in info.value.error


async def test_unknown_routes_answer_like_ollamas_router(mock: RunningMock) -> None:
    async with httpx.AsyncClient(base_url=mock.sdk_url("ollama")) as http:
        headers = {"Authorization": f"Bearer {KEY}"}
        for method, path in (("GET", "/api/nothing"), ("GET", "/api/chat")):
            response = await http.request(method, path, headers=headers)
            assert response.status_code == 404
            assert response.headers["content-type"].startswith("text/plain")
            assert response.text == "404 page not found"

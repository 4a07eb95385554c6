"""The Mistral mock's own behaviour, and the adapter against it end to end."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from contracts.errors import BadRequest, ProviderUnavailable, QuotaExceeded
from contracts.jobs import Message, Tool, ToolCall
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.testing import Serve, collect
from providers.core.types import ChatRequest, EmbedRequest, Secret, StreamEnd, TextDelta
from providers.mistral.adapter import Mistral
from providers.mock.server import RunningMock
from providers.options import ModelOptions

KEY = Secret({"api_key": "mock-key"})
MODEL = "mistral-small-latest"


@pytest.fixture
async def running(serve: Serve) -> RunningMock:
    return await serve()


@pytest.fixture
async def adapter(running: RunningMock) -> AsyncIterator[Mistral]:
    async with HttpClientPool() as pool:
        yield Mistral(ProviderContext("mistral", pool, running.url("mistral")))


@pytest.fixture
async def raw(running: RunningMock) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": "Bearer mock-key"}
    async with httpx.AsyncClient(base_url=running.url("mistral"), headers=headers) as client:
        yield client


async def requests_to(running: RunningMock, route: str) -> int:
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"{running.root}/_mock/stats")).json()
    return int(stats["requests"].get(route, 0))


async def test_embeddings_past_the_input_limit_go_in_batches(
    adapter: Mistral, running: RunningMock
) -> None:
    texts = [f"text number {i}" for i in range(700)]
    result = await adapter.embed(EmbedRequest(model="mistral-embed", inputs=texts), KEY)
    assert (result.count, result.dims) == (700, 1024)
    assert result.usage.input_tokens == 3 * 700
    assert await requests_to(running, "/mistral/v1/embeddings") == 2
    alone = await adapter.embed(EmbedRequest(model="mistral-embed", inputs=[texts[600]]), KEY)
    assert result.data[600 * 1024 * 4 : 601 * 1024 * 4] == alone.data


async def test_the_mock_refuses_batches_past_mistrals_limits(raw: httpx.AsyncClient) -> None:
    many = await raw.post("/embeddings", json={"model": "mistral-embed", "input": ["a"] * 513})
    assert many.status_code == 400 and many.json()["code"] == "3210"
    long = ["word " * 9000, "word " * 9000]
    heavy = await raw.post("/embeddings", json={"model": "mistral-embed", "input": long})
    assert heavy.status_code == 400 and "Too many tokens" in heavy.json()["message"]


async def test_output_dimension_only_where_the_model_takes_it(adapter: Mistral) -> None:
    small = await adapter.embed(
        EmbedRequest(model="codestral-embed", inputs=["a"], dimensions=256), KEY
    )
    assert small.dims == 256
    with pytest.raises(BadRequest, match="output_dimension"):
        await adapter.embed(EmbedRequest(model="mistral-embed", inputs=["a"], dimensions=256), KEY)


async def test_a_conversation_from_another_provider_is_accepted(adapter: Mistral) -> None:
    """OpenAI-style call ids would be refused (400, code 3280); the adapter maps them."""
    messages = [
        Message(role="user", content="Please use tools"),
        Message(
            role="assistant",
            tool_calls=[ToolCall(id="call_Xy12_openai", name="lookup", arguments="{}")],
        ),
        Message(role="tool", content='{"ok": true}', tool_call_id="call_Xy12_openai"),
    ]
    req = ChatRequest(model=MODEL, messages=messages, tools=[Tool(name="lookup")])
    result = await adapter.chat(req, KEY)
    assert result.finish_reason == "stop" and result.message.text()


async def test_every_option_the_adapter_sends_is_one_mistral_knows(adapter: Mistral) -> None:
    options = ModelOptions(
        temperature=0.1,
        top_p=0.5,
        max_tokens=6,
        stop=("zzz",),
        seed=9,
        frequency_penalty=0.2,
        presence_penalty=0.2,
        response_format={"type": "text"},
        reasoning_effort="low",
        metadata={"a": "b"},
        top_logprobs=1,
        user="u",
        service_tier="standard_only",
        tool_choice="auto",
    )
    req = ChatRequest(
        model=MODEL,
        messages=[Message(role="developer", content="hi"), Message(role="user", content="yo")],
        tools=[Tool(name="f")],
        options=options,
    )
    key = Secret({"api_key": "mock-key", "safe_prompt": "yes"})
    result = await adapter.chat(req, key)
    assert result.finish_reason == "length" and result.usage.output_tokens == 6
    events = await collect(adapter.stream_chat(req, key))
    assert isinstance(events[-1], StreamEnd) and events[-1].usage == result.usage


async def test_same_seed_same_answer(adapter: Mistral) -> None:
    def req(seed: int) -> ChatRequest:
        return ChatRequest(
            model=MODEL,
            messages=[Message(role="user", content="tell me")],
            options=ModelOptions(seed=seed, max_tokens=8),
        )

    first, again, other = [(await adapter.chat(req(s), KEY)).message.text() for s in (1, 1, 2)]
    assert first == again and first != other


async def test_quota_and_capacity_faults(adapter: Mistral, running: RunningMock) -> None:
    headers = {"x-mock-fault": "quota"}
    async with httpx.AsyncClient() as client:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
        resp = await client.post(
            f"{running.url('mistral')}/chat/completions",
            json=body,
            headers={"Authorization": "Bearer mock-key", **headers},
        )
    assert resp.status_code == 429 and resp.headers["x-ratelimit-remaining-tokens-month"] == "0"
    async with httpx.AsyncClient() as admin:
        await admin.post(f"{running.root}/_mock/faults", json={"spec": "quota", "model": "mock-q"})
        await admin.post(
            f"{running.root}/_mock/faults", json={"spec": "overloaded", "model": "mock-o"}
        )
    with pytest.raises(QuotaExceeded):
        await adapter.chat(ChatRequest(model="mock-q", messages=[Message(role="user")]), KEY)
    with pytest.raises(ProviderUnavailable) as info:
        await adapter.chat(ChatRequest(model="mock-o", messages=[Message(role="user")]), KEY)
    assert info.value.provider_status == 429 and info.value.retryable


async def test_rate_limit_headers_on_answers(raw: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "two words"}]}
    resp = await raw.post("/chat/completions", json=body)
    assert resp.status_code == 200
    for name in (
        "x-ratelimit-limit-req-minute",
        "x-ratelimit-remaining-req-minute",
        "x-ratelimit-limit-tokens-minute",
        "x-ratelimit-remaining-tokens-minute",
        "x-ratelimit-remaining-tokens-month",
        "x-ratelimit-tokens-query-cost",
        "mistral-correlation-id",
    ):
        assert resp.headers[name], name
    assert resp.headers["x-kong-request-id"] == resp.headers["mistral-correlation-id"]


async def test_n_choices_take_turns_in_a_stream(raw: httpx.AsyncClient) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "n": 2,
        "max_tokens": 3,
        "stream": True,
    }
    order: list[int] = []
    async with raw.stream("POST", "/chat/completions", json=body) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk["choices"][0]["delta"].get("content"):
                    order.append(chunk["choices"][0]["index"])
    assert order == [0, 1, 0, 1, 0, 1]


async def test_stop_sequences_cut_the_answer(adapter: Mistral) -> None:
    plain = await adapter.chat(
        ChatRequest(model=MODEL, messages=[Message(role="user", content="stop test")]), KEY
    )
    word = plain.message.text().split()[3]
    req = ChatRequest(
        model=MODEL,
        messages=[Message(role="user", content="stop test")],
        options=ModelOptions(stop=(word,)),
    )
    cut = await adapter.chat(req, KEY)
    assert cut.finish_reason == "stop" and word not in cut.message.text()
    streamed = await collect(adapter.stream_chat(req, KEY))
    assert "".join(e.text for e in streamed if isinstance(e, TextDelta)) == cut.message.text()

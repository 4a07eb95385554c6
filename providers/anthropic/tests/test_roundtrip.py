"""The adapter against the running mock, whose request rules are the real API's: what
the fleet's conversations turn into must be accepted (the conformance suite in
tests/conformance covers the provider-neutral scenarios)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from contracts.frames import Usage
from contracts.jobs import ContentPart, Message, Tool, ToolCall
from providers.anthropic.adapter import Anthropic
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.types import ChatRequest, Secret, StreamEnd, TextDelta, ToolDelta
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from providers.options import ModelOptions

SECRET = Secret({"api_key": "mock-key"})
TOOLS = [Tool(name="lookup", parameters={"type": "object"}), Tool(name="weather")]


@pytest.fixture
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig(), "127.0.0.1", 0)
    yield running
    await running.close()


@pytest.fixture
async def adapter(mock: RunningMock) -> AsyncIterator[Anthropic]:
    async with HttpClientPool() as pool:
        yield Anthropic(ProviderContext("anthropic", pool, mock.url("anthropic")))


def conversation() -> list[Message]:
    """System prompts, consecutive user turns, parallel tool calls and their results."""
    calls = [
        ToolCall(id="toolu_a", name="lookup", arguments='{"query":"x"}'),
        ToolCall(id="toolu_b", name="weather", arguments=""),
    ]
    return [
        Message(role="system", content="be brief"),
        Message(role="user", content="please use tools"),
        Message(
            role="user",
            content=[
                ContentPart(type="text", text="and look at this"),
                ContentPart(type="image_url", image_url="data:image/png;base64,iVBORw0K"),
            ],
        ),
        Message(role="assistant", content="Checking.", tool_calls=calls),
        Message(role="tool", tool_call_id="toolu_a", content="found it"),
        Message(role="tool", tool_call_id="toolu_b", content="sunny"),
        Message(role="developer", content="answer in one line"),
        Message(role="user", content="so?"),
    ]


async def test_a_whole_tool_conversation_is_accepted(adapter: Anthropic) -> None:
    req = ChatRequest(
        model="mock-claude",
        messages=conversation(),
        tools=TOOLS,
        options=ModelOptions(max_tokens=8, stop=("never",), temperature=0.5, seed=3),
    )
    result = await adapter.chat(req, SECRET)
    assert result.finish_reason == "length"
    assert result.message.content and not result.message.tool_calls
    assert result.usage.output_tokens == 8
    assert result.usage.cached_input_tokens == 0 and result.usage.cache_write_tokens == 0


async def test_tool_calls_then_their_results(adapter: Anthropic) -> None:
    ask = [Message(role="user", content="please use tools")]
    req = ChatRequest(model="mock-claude", messages=ask, tools=TOOLS)
    first = await adapter.chat(req, SECRET)
    assert first.finish_reason == "tool_calls"
    calls = first.message.tool_calls or []
    assert [c.name for c in calls] == ["lookup", "weather"]
    results = [Message(role="tool", tool_call_id=c.id, content="ok") for c in calls]
    follow = ChatRequest(model="mock-claude", messages=[*ask, first.message, *results], tools=TOOLS)
    events = []
    async with contextlib.aclosing(adapter.stream_chat(follow, SECRET)) as stream:
        async for event in stream:
            events.append(event)
    assert not any(isinstance(e, ToolDelta) for e in events)
    assert any(isinstance(e, TextDelta) for e in events)
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "stop"
    assert end.usage == Usage(
        input_tokens=5,
        output_tokens=64,
        total_tokens=69,
        cached_input_tokens=0,
        cache_write_tokens=0,
    )


async def test_verify(adapter: Anthropic) -> None:
    good = await adapter.verify(SECRET)
    assert good.ok and good.detail == f"{len(MockConfig().models)} models visible"
    bad = await adapter.verify(Secret({"api_key": "sk-ant-not-a-key-0123456789"}))
    assert not bad.ok
    assert bad.detail == "anthropic: HTTP 401 authentication_error: invalid x-api-key"

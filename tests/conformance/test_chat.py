"""Answers: plain text, usage, parallel tool calls, max tokens; streamed and not."""

from __future__ import annotations

import json

import pytest

from contracts.jobs import Message
from providers.core.spec import Capability
from providers.core.types import ChatRequest
from providers.registry import Provider
from tests.conformance.support import (
    TOOL_PROMPT,
    TOOLS,
    MockAdmin,
    assemble,
    chat_request,
    check_tool_calls,
    collect,
    require,
    secret,
)


async def test_plain_text(provider: Provider, model: str, path: str, admin: MockAdmin) -> None:
    req = chat_request(model)
    if path == "chat":
        result = await provider.chat().chat(req, secret(provider))
        assert result.message.role == "assistant"
        assert result.message.text(), "empty answer"
        assert not result.message.tool_calls
        assert result.finish_reason == "stop"
        return
    got = await collect(provider, req)
    end = got.end()
    assert got.text, "no text streamed"
    assert not got.tool_deltas
    assert end.finish_reason == "stop"
    await admin.assert_no_open_streams()


async def test_streamed_text_equals_chat_text(
    provider: Provider, model: str, admin: MockAdmin
) -> None:
    require(provider, Capability.CHAT | Capability.STREAM)
    req = chat_request(model)
    result = await provider.chat().chat(req, secret(provider))
    got = await collect(provider, req)
    got.end()
    # The mocks' text engine depends on the prompt only.
    assert got.text == result.message.text()
    assert len(got.texts) > 1, "the answer came in one delta: not token by token"
    await admin.assert_no_open_streams()


async def test_usage(provider: Provider, model: str, path: str, admin: MockAdmin) -> None:
    req = chat_request(model)
    if path == "chat":
        usage = (await provider.chat().chat(req, secret(provider))).usage
    else:
        usage = (await collect(provider, req)).end().usage
        await admin.assert_no_open_streams()
    assert usage.input_tokens > 0
    assert usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


async def test_streamed_usage_equals_chat_usage(
    provider: Provider, model: str, admin: MockAdmin
) -> None:
    require(provider, Capability.CHAT | Capability.STREAM)
    req = chat_request(model)
    result = await provider.chat().chat(req, secret(provider))
    assert (await collect(provider, req)).end().usage == result.usage
    await admin.assert_no_open_streams()


async def test_max_tokens_cuts_with_length(
    provider: Provider, model: str, path: str, admin: MockAdmin
) -> None:
    req = chat_request(model, max_tokens=3)
    if path == "chat":
        result = await provider.chat().chat(req, secret(provider))
        finish, usage, text = result.finish_reason, result.usage, result.message.text()
    else:
        got = await collect(provider, req)
        end = got.end()
        finish, usage, text = end.finish_reason, end.usage, got.text
        assert 0 < len(got.texts) <= 3
        await admin.assert_no_open_streams()
    assert finish == "length"
    assert 0 < usage.output_tokens <= 3
    assert text


async def test_parallel_tool_calls(
    provider: Provider, model: str, path: str, admin: MockAdmin
) -> None:
    require(provider, Capability.TOOLS)
    req = chat_request(model, TOOL_PROMPT, tools=TOOLS)
    if path == "chat":
        result = await provider.chat().chat(req, secret(provider))
        check_tool_calls(result.message.tool_calls)
        assert result.finish_reason == "tool_calls"
        return
    got = await collect(provider, req)
    end = got.end()
    check_tool_calls(assemble(got.tool_deltas))
    assert end.finish_reason == "tool_calls"
    await admin.assert_no_open_streams()


@pytest.mark.parametrize("layout", ["usual", "interleave"])
async def test_streamed_tool_calls_equal_chat_calls(
    provider: Provider, model: str, layout: str, admin: MockAdmin
) -> None:
    require(provider, Capability.CHAT | Capability.STREAM | Capability.TOOLS)
    req = chat_request(model, TOOL_PROMPT, tools=TOOLS)
    result = await provider.chat().chat(req, secret(provider))
    if layout != "usual":
        await admin.fault(layout, model)
    got = await collect(provider, req)
    got.end()
    streamed = assemble(got.tool_deltas)
    chat_calls = result.message.tool_calls or []
    # Ids are minted per answer, and argument JSON may be spaced differently; what was
    # called, in which order, with which arguments, must agree.
    assert [(c.name, json.loads(c.arguments)) for c in streamed] == [
        (c.name, json.loads(c.arguments)) for c in chat_calls
    ]
    await admin.assert_no_open_streams()


async def test_a_tool_turn_round_trips(provider: Provider, model: str) -> None:
    """A conversation carrying a tool call and its result is accepted (no 400)."""
    require(provider, Capability.CHAT | Capability.TOOLS)
    first = await provider.chat().chat(
        chat_request(model, TOOL_PROMPT, tools=TOOLS), secret(provider)
    )
    calls = first.message.tool_calls or []
    assert calls, "no tool call to answer"
    messages = [
        Message(role="user", content=TOOL_PROMPT),
        first.message,
        *(
            Message(role="tool", content='{"ok": true}', tool_call_id=call.id, name=call.name)
            for call in calls
        ),
    ]
    req = ChatRequest(model=model, messages=messages, tools=list(TOOLS))
    second = await provider.chat().chat(req, secret(provider))
    assert second.finish_reason in ("stop", "tool_calls")

"""The Mistral adapter against `httpx.MockTransport` fakes (no network)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from contracts.errors import (
    BadRequest,
    FleetError,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from contracts.frames import ToolCallDelta, Usage
from contracts.jobs import ContentPart, Message, Tool, ToolCall
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.testing import Handler, Recorder, collect, stream_response
from providers.core.types import (
    ChatRequest,
    EmbedRequest,
    Secret,
    StreamEnd,
    TextDelta,
    ToolDelta,
)
from providers.mistral.adapter import Mistral
from providers.mistral.embed import MAX_INPUTS, TOKEN_BUDGET, batches, estimate_tokens
from providers.mistral.mapping import tool_call_id
from providers.options import ModelOptions

CANARY = "mistral-canary-0123456789abcdefCANARY"
SECRET = Secret({"api_key": CANARY})
BASE = "https://mistral.test/v1"
MODEL = "mistral-small-latest"

Make = Callable[[Handler], Mistral]


@pytest.fixture
def adapter(pools: list[HttpClientPool]) -> Make:
    def make(handler: Handler) -> Mistral:
        pool = HttpClientPool(transport=httpx.MockTransport(handler))
        pools.append(pool)
        return Mistral(ProviderContext("mistral", pool, BASE))

    return make


def completion(
    message: dict[str, Any], finish: str = "stop", usage: tuple[int, int] = (5, 3)
) -> dict[str, Any]:
    prompt, done = usage
    return {
        "id": "0123456789abcdef0123456789abcdef",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": done,
            "total_tokens": prompt + done,
        },
    }


def answer(payload: dict[str, Any], status: int = 200) -> Recorder:
    return Recorder(lambda request: httpx.Response(status, json=payload))


def ask(text: str = "hello", **options: Any) -> ChatRequest:
    return ChatRequest(
        model=MODEL, messages=[Message(role="user", content=text)], options=ModelOptions(**options)
    )


def sse(*events: dict[str, Any] | str) -> bytes:
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(lines).encode()


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def streaming(body: bytes) -> Recorder:
    return Recorder(lambda request: stream_response(body))


# ---------------------------------------------------------------- request mapping


async def test_options_in_mistrals_words(adapter: Make) -> None:
    recorder = answer(completion({"role": "assistant", "content": "hi"}))
    options: dict[str, Any] = {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 7,
        "stop": ("END",),
        "seed": 42,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "response_format": {"type": "json_object"},
        "reasoning_effort": "high",
        "metadata": {"team": "a"},
        "top_logprobs": 2,
        "user": "someone",
        "service_tier": "priority",
    }
    await adapter(recorder).chat(ask(**options), SECRET)
    body = recorder.body
    assert body == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 7,
        "stop": ["END"],
        "random_seed": 42,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.3,
        "response_format": {"type": "json_object"},
        "reasoning_effort": "high",
        "metadata": {"team": "a"},
        "logprobs": True,
        "top_logprobs": 2,
    }
    request = recorder.requests[-1]
    assert str(request.url) == f"{BASE}/chat/completions"
    assert request.headers["authorization"] == f"Bearer {CANARY}"


async def test_stream_body_asks_for_nothing_mistral_does_not_know(adapter: Make) -> None:
    recorder = streaming(sse(chunk({"content": "hi"}, "stop"), "[DONE]"))
    await collect(adapter(recorder).stream_chat(ask(service_tier="auto"), SECRET))
    assert recorder.body["stream"] is True
    assert recorder.body["service_tier"] == "auto"
    assert "stream_options" not in recorder.body


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("any", "any"),
        ("required", "required"),
        ("none", "none"),
        (
            {"type": "function", "function": {"name": "f"}},
            {"type": "function", "function": {"name": "f"}},
        ),
        ({"name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ],
)
async def test_tool_choice(adapter: Make, choice: Any, sent: Any) -> None:
    recorder = answer(completion({"role": "assistant", "content": "hi"}))
    req = ChatRequest(
        model=MODEL,
        messages=[Message(role="user", content="x")],
        tools=[Tool(name="f", description="does f", strict=True)],
        options=ModelOptions(tool_choice=choice),
    )
    await adapter(recorder).chat(req, SECRET)
    assert recorder.body["tool_choice"] == sent
    assert recorder.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {"type": "object", "properties": {}},
                "description": "does f",
                "strict": True,
            },
        }
    ]


@pytest.mark.parametrize(
    "options",
    [
        {"tool_choice": "validated"},
        {"tool_choice": {"name": "f"}},  # names a tool, but none are given
        {"response_format": {"type": "grammar"}},
    ],
)
async def test_what_mistral_cannot_express_is_refused(adapter: Make, options: Any) -> None:
    recorder = answer(completion({"role": "assistant", "content": "hi"}))
    with pytest.raises(BadRequest):
        await adapter(recorder).chat(ask(**options), SECRET)
    assert not recorder.requests


async def test_foreign_tool_call_ids_become_mistral_ids(adapter: Make) -> None:
    recorder = answer(completion({"role": "assistant", "content": "done"}))
    messages = [
        Message(role="developer", content="be brief"),
        Message(role="user", content=[ContentPart(type="text", text="look")]),
        Message(
            role="assistant",
            tool_calls=[
                ToolCall(id="call_abc123", name="lookup", arguments='{"q":"a"}'),
                ToolCall(id="D681PevKs", name="other", arguments="{}"),
            ],
        ),
        Message(role="tool", content="A", tool_call_id="call_abc123"),
        Message(role="tool", content="B", tool_call_id="D681PevKs", name="other"),
    ]
    await adapter(recorder).chat(ChatRequest(model=MODEL, messages=messages), SECRET)
    sent = recorder.body["messages"]
    mapped = tool_call_id("call_abc123")
    assert len(mapped) == 9 and mapped.isalnum() and mapped == tool_call_id("call_abc123")
    assert sent[0] == {"role": "system", "content": "be brief"}
    assert sent[1] == {"role": "user", "content": [{"type": "text", "text": "look"}]}
    assert "content" not in sent[2]
    assert [c["id"] for c in sent[2]["tool_calls"]] == [mapped, "D681PevKs"]
    # The result answers the same (mapped) id, and is named after its call.
    assert sent[3] == {"role": "tool", "content": "A", "tool_call_id": mapped, "name": "lookup"}
    assert sent[4]["tool_call_id"] == "D681PevKs"


async def test_safe_prompt_comes_from_the_credential(adapter: Make) -> None:
    recorder = answer(completion({"role": "assistant", "content": "hi"}))
    key = Secret({"api_key": CANARY, "safe_prompt": "true"})
    await adapter(recorder).chat(ask(), key)
    assert recorder.body["safe_prompt"] is True
    await adapter(recorder).chat(ask(), Secret({"api_key": CANARY, "safe_prompt": "false"}))
    assert "safe_prompt" not in recorder.body
    with pytest.raises(BadRequest, match="safe_prompt"):
        await adapter(recorder).chat(ask(), Secret({"api_key": CANARY, "safe_prompt": "maybe"}))
    got = await collect_error(adapter(recorder), Secret({"api_key": CANARY, "safe_prompt": "?"}))
    assert isinstance(got, BadRequest)


async def collect_error(mistral: Mistral, key: Secret) -> FleetError | None:
    try:
        await collect(mistral.stream_chat(ask(), key))
    except FleetError as exc:
        return exc
    return None


async def test_safe_prompt_value_is_not_scrubbed_as_a_secret(adapter: Make) -> None:
    body = {
        "object": "error",
        "message": "temperature true is odd",
        "type": "invalid_request_error",
    }
    key = Secret({"api_key": CANARY, "safe_prompt": "true"})
    with pytest.raises(BadRequest) as info:
        await adapter(answer(body, 400)).chat(ask(), key)
    assert "temperature true is odd" in info.value.message


async def test_credential_base_url_wins(adapter: Make) -> None:
    recorder = answer(completion({"role": "assistant", "content": "hi"}))
    key = Secret({"api_key": CANARY, "base_url": "https://eu.mistral.test/v1/"})
    await adapter(recorder).chat(ask(), key)
    assert str(recorder.requests[-1].url) == "https://eu.mistral.test/v1/chat/completions"


# ---------------------------------------------------------------- answers


async def test_chat_answer_and_usage(adapter: Make) -> None:
    result = await adapter(answer(completion({"role": "assistant", "content": "hi"}))).chat(
        ask(), SECRET
    )
    assert result.message.content == "hi"
    assert result.finish_reason == "stop"
    assert result.usage == Usage(input_tokens=5, output_tokens=3, total_tokens=8)


async def test_model_length_is_length(adapter: Make) -> None:
    payload = completion({"role": "assistant", "content": "cut"}, "model_length")
    result = await adapter(answer(payload)).chat(ask(), SECRET)
    assert result.finish_reason == "length"
    body = sse(chunk({"content": "cut"}), chunk({"content": ""}, "model_length"), "[DONE]")
    events = await collect(adapter(streaming(body)).stream_chat(ask(), SECRET))
    assert isinstance(events[-1], StreamEnd) and events[-1].finish_reason == "length"


async def test_finish_reason_error_is_raised(adapter: Make) -> None:
    payload = completion({"role": "assistant", "content": "par"}, "error")
    with pytest.raises(ProviderUnavailable) as info:
        await adapter(answer(payload)).chat(ask(), SECRET)
    assert info.value.retryable
    body = sse(chunk({"content": "par"}), chunk({"content": ""}, "error"), "[DONE]")
    got: list[Any] = []
    with pytest.raises(ProviderUnavailable):
        async for event in adapter(streaming(body)).stream_chat(ask(), SECRET):
            got.append(event)
    assert got == [TextDelta("par")]


async def test_thinking_is_left_out_of_the_answer(adapter: Make) -> None:
    content = [
        {"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
        {"type": "text", "text": "42"},
    ]
    result = await adapter(answer(completion({"role": "assistant", "content": content}))).chat(
        ask(), SECRET
    )
    assert result.message.content == "42"
    body = sse(chunk({"content": content[:1]}), chunk({"content": content[1:]}, "stop"), "[DONE]")
    events = await collect(adapter(streaming(body)).stream_chat(ask(), SECRET))
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("42")]


async def test_whole_tool_calls_and_usage_on_the_last_chunk(adapter: Make) -> None:
    calls = [
        {"id": "AAAAAAAA1", "function": {"name": "a", "arguments": '{"x":1}'}, "index": 0},
        {"id": "BBBBBBBB2", "function": {"name": "b", "arguments": {"y": 2}}, "index": 0},
    ]
    usage = {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    body = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "", "tool_calls": calls}, "tool_calls", usage=usage),
        "[DONE]",
    )
    events = await collect(adapter(streaming(body)).stream_chat(ask(), SECRET))
    # Both calls said index 0: the second gets its own.
    assert events == [
        ToolDelta(ToolCallDelta(index=0, id="AAAAAAAA1", name="a", arguments='{"x":1}')),
        ToolDelta(ToolCallDelta(index=1, id="BBBBBBBB2", name="b", arguments='{"y":2}')),
        StreamEnd("tool_calls", Usage(input_tokens=4, output_tokens=6, total_tokens=10)),
    ]


async def test_fragmented_tool_calls_with_placeholder_ids(adapter: Make) -> None:
    body = sse(
        chunk({"tool_calls": [{"id": "CCCCCCCC3", "function": {"name": "c", "arguments": ""}}]}),
        chunk({"tool_calls": [{"id": "null", "function": {"name": "", "arguments": '{"z"'}}]}),
        chunk({"tool_calls": [{"id": "null", "function": {"name": "", "arguments": ":3}"}}]}),
        chunk({"content": ""}, "tool_calls"),
        "[DONE]",
    )
    events = await collect(adapter(streaming(body)).stream_chat(ask(), SECRET))
    deltas = [e.delta for e in events if isinstance(e, ToolDelta)]
    assert {d.index for d in deltas} == {0}
    assert [d.id for d in deltas] == ["CCCCCCCC3", None, None]
    assert "".join(d.arguments for d in deltas) == '{"z":3}'


async def test_call_without_an_id_gets_one(adapter: Make) -> None:
    message = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "null", "function": {"name": "a", "arguments": "{}"}}],
    }
    result = await adapter(answer(completion(message, "tool_calls"))).chat(ask(), SECRET)
    calls = result.message.tool_calls or []
    assert [c.name for c in calls] == ["a"] and calls[0].id != "null"


# ---------------------------------------------------------------- errors


def error(status: int, payload: Any, headers: dict[str, str] | None = None) -> Recorder:
    return Recorder(lambda request: httpx.Response(status, json=payload, headers=headers))


async def test_monthly_budget_is_quota_not_throttling(adapter: Make) -> None:
    body = {
        "object": "error",
        "message": "Rate limit exceeded",
        "type": "rate_limited",
        "code": "1300",
    }
    month = {"x-ratelimit-remaining-tokens-month": "0", "retry-after": "3"}
    with pytest.raises(QuotaExceeded) as info:
        await adapter(error(429, body, month)).chat(ask(), SECRET)
    assert not info.value.retryable and info.value.retry_after is None
    older = {"x-ratelimitbysize-remaining-month": "0"}
    with pytest.raises(QuotaExceeded):
        await adapter(error(429, body, older)).chat(ask(), SECRET)
    minute = {"x-ratelimit-remaining-tokens-month": "99", "retry-after": "3"}
    with pytest.raises(RateLimited) as limited:
        await adapter(error(429, body, minute)).chat(ask(), SECRET)
    assert limited.value.retryable and limited.value.retry_after == 3.0
    # The older gateway said when the window resets instead.
    with pytest.raises(RateLimited) as reset:
        await adapter(error(429, body, {"ratelimitbysize-reset": "7"})).chat(ask(), SECRET)
    assert reset.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("status", "payload", "cls"),
    [
        (
            429,
            {
                "object": "error",
                "message": "Service tier capacity exceeded for this model.",
                "type": "service_tier_capacity_exceeded",
                "code": "3505",
            },
            ProviderUnavailable,
        ),
        (
            400,
            {
                "object": "error",
                "message": "Invalid model: x",
                "type": "invalid_model",
                "code": "1500",
            },
            NotFound,
        ),
        (401, {"detail": "Unauthorized"}, Unauthorized),
        (401, {"message": "Unauthorized", "request_id": "abc"}, Unauthorized),
        (422, {"detail": [{"type": "extra_forbidden", "loc": ["body", "x"]}]}, BadRequest),
        (429, {"message": "Requests rate limit exceeded"}, RateLimited),
    ],
)
async def test_error_shapes(
    adapter: Make, status: int, payload: Any, cls: type[FleetError]
) -> None:
    headers = {"mistral-correlation-id": "corr-1"}
    with pytest.raises(cls) as info:
        await adapter(error(status, payload, headers)).chat(ask(), SECRET)
    assert info.value.message.startswith("mistral: ")
    assert info.value.provider_status == status
    assert info.value.provider_request_id in ("corr-1", "abc")


async def test_keys_never_reach_messages(adapter: Make) -> None:
    body = {"detail": f"Bad key {CANARY}"}
    with pytest.raises(Unauthorized) as info:
        await adapter(error(401, body)).chat(ask(), SECRET)
    assert CANARY not in info.value.message


async def test_error_object_inside_a_stream(adapter: Make) -> None:
    failure = {
        "object": "error",
        "message": "Rate limit exceeded",
        "type": "rate_limited",
        "param": None,
        "code": "1300",
        "raw_status_code": 429,
    }
    body = sse(chunk({"content": "a"}), failure)
    got: list[Any] = []
    with pytest.raises(RateLimited) as info:
        async for event in adapter(streaming(body)).stream_chat(ask(), SECRET):
            got.append(event)
    assert got == [TextDelta("a")]
    assert info.value.provider_status == 429 and "stream error" in info.value.message


# ---------------------------------------------------------------- embeddings


def embedder(dims: int = 4) -> Recorder:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        data = [
            {"object": "embedding", "embedding": [float(len(t))] * dims, "index": i}
            for i, t in enumerate(body["input"])
        ]
        tokens = len(body["input"])
        usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
        return httpx.Response(
            200,
            json={
                "id": "e",
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": usage,
            },
        )

    return Recorder(handle)


async def test_embeddings_in_batches_in_order(adapter: Make) -> None:
    recorder = embedder()
    inputs = [f"text {'x' * (i % 7)}" for i in range(MAX_INPUTS + 10)]
    req = EmbedRequest(model="codestral-embed", inputs=inputs, input_type="query", dimensions=4)
    result = await adapter(recorder).embed(req, SECRET)
    assert result.count == len(inputs) and result.dims == 4
    assert result.usage == Usage(input_tokens=len(inputs), total_tokens=len(inputs))
    sizes = [len(json.loads(r.content)["input"]) for r in recorder.requests]
    assert sizes == [MAX_INPUTS, 10]
    assert recorder.body == {
        "model": "codestral-embed",
        "input": inputs[MAX_INPUTS:],
        "output_dtype": "float",
        "output_dimension": 4,
    }
    first = [json.loads(r.content)["input"] for r in recorder.requests]
    assert first[0] + first[1] == inputs


def test_batches_respect_the_token_budget() -> None:
    long = "word " * 3000  # about 5,000 estimated tokens
    inputs = [long, long, "short", long, "x" * 100_000]
    assert estimate_tokens(long) > 4000
    plan = list(batches(inputs))
    # Two long texts and a short one fit; a third long one does not; the huge one goes alone.
    assert plan == [(0, 3), (3, 4), (4, 5)]
    for start, end in plan:
        if end - start > 1:
            assert sum(estimate_tokens(t) for t in inputs[start:end]) <= TOKEN_BUDGET


async def test_a_batch_mistral_finds_too_large_is_halved(adapter: Make) -> None:
    calls: list[int] = []
    inner = embedder()

    def handle(request: httpx.Request) -> httpx.Response:
        size = len(json.loads(request.content)["input"])
        calls.append(size)
        if size > 2:
            return httpx.Response(
                400,
                json={
                    "object": "error",
                    "message": "Too many tokens overall, split into more batches.",
                    "type": "invalid_request_prompt",
                    "code": "3210",
                },
            )
        return inner(request)

    result = await adapter(Recorder(handle)).embed(
        EmbedRequest(model="mistral-embed", inputs=["a", "bb", "ccc", "dddd", "eeeee"]), SECRET
    )
    assert calls == [5, 2, 3, 1, 2]
    firsts = [struct.unpack_from("<f", result.data, row * result.dims * 4)[0] for row in range(5)]
    assert firsts == [1.0, 2.0, 3.0, 4.0, 5.0]  # each row is its own input's, in order


async def test_verify(adapter: Make) -> None:
    listed = {"object": "list", "data": [{"id": MODEL}, {"id": "mistral-embed"}]}
    ok = await adapter(answer(listed)).verify(SECRET)
    assert ok.ok and ok.detail == "2 models visible"
    refused = await adapter(error(401, {"detail": "Unauthorized"})).verify(SECRET)
    assert not refused.ok and "Unauthorized" in refused.detail

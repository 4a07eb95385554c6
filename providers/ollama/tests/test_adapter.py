"""The Ollama adapter against `httpx.MockTransport` fakes (no network)."""

from __future__ import annotations

import json
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
from contracts.frames import Usage
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
from providers.ollama import SPECS
from providers.ollama.adapter import Ollama
from providers.ollama.errors import ERRORS, code_of
from providers.ollama.mapping import tool_call_id
from providers.options import ModelOptions

CANARY = "ollama-canary-key-0123456789abcdef"
SECRET = Secret({"api_key": CANARY})
BASE = "http://ollama.test:11434"
ASK = [Message(role="user", content="hello")]

Make = Callable[..., Ollama]


@pytest.fixture
def adapter(pools: list[HttpClientPool]) -> Make:
    def make(handler: Handler, *, base: str | None = BASE) -> Ollama:
        pool = HttpClientPool(transport=httpx.MockTransport(handler))
        pools.append(pool)
        return Ollama(ProviderContext("ollama", pool, base))

    return make


def final(**fields: Any) -> dict[str, Any]:
    return {
        "model": "llama3.2",
        "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 7,
        "eval_count": 3,
        **fields,
    }


def lines(*objects: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


def piece(text: str = "", **message: Any) -> dict[str, Any]:
    return {
        "model": "llama3.2",
        "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": text, **message},
        "done": False,
    }


WEATHER = {"function": {"index": 0, "name": "weather", "arguments": {"city": "Oslo"}}}
TIME = {"function": {"index": 0, "name": "time", "arguments": {}}}


# ---------------------------------------------------------------- request mapping


async def test_chat_request_mapping(adapter: Make) -> None:
    rec = Recorder(lambda _: httpx.Response(200, json=final(message={"content": "hi"})))
    messages = [
        Message(role="developer", content="be brief"),
        Message(
            role="user",
            content=[
                ContentPart(type="text", text="what is"),
                ContentPart(type="text", text="this?"),
                ContentPart(type="image_url", image_url="data:image/png;base64,QUJD"),
            ],
        ),
        Message(
            role="assistant",
            tool_calls=[ToolCall(id="c1", name="weather", arguments='{"city":"Oslo"}')],
        ),
        Message(role="tool", content='{"t": 3}', tool_call_id="c1"),
    ]
    options = ModelOptions(
        temperature=0.2,
        top_p=0.9,
        max_tokens=50,
        stop=("END",),
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        reasoning_effort="high",
        user="u-1",
        metadata={"a": "b"},
        service_tier="flex",
    )
    tools = [Tool(name="weather", description="Weather", parameters={"type": "object"})]
    req = ChatRequest(model="llama3.2", messages=messages, tools=tools, options=options)
    await adapter(rec).chat(req, SECRET)
    sent = rec.requests[-1]
    assert sent.url == f"{BASE}/api/chat"
    assert sent.headers["authorization"] == f"Bearer {CANARY}"
    assert rec.body == {
        "model": "llama3.2",
        "stream": False,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "what is\nthis?", "images": ["QUJD"]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Oslo"}}}],
            },
            {"role": "tool", "content": '{"t": 3}', "tool_name": "weather"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "parameters": {"type": "object"},
                    "description": "Weather",
                },
            }
        ],
        "options": {
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": 0.25,
            "num_predict": 50,
            "stop": ["END"],
        },
        "think": "high",
    }


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, "json"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            {"type": "object"},
        ),
    ],
)
async def test_response_format_becomes_format(
    adapter: Make, response_format: dict[str, Any], expected: Any
) -> None:
    rec = Recorder(lambda _: httpx.Response(200, json=final()))
    req = ChatRequest(
        model="m", messages=ASK, options=ModelOptions(response_format=response_format)
    )
    await adapter(rec).chat(req, SECRET)
    assert rec.body.get("format") == expected


@pytest.mark.parametrize(
    "options",
    [
        ModelOptions(tool_choice="required"),
        ModelOptions(tool_choice="none"),
        ModelOptions(tool_choice={"type": "function", "function": {"name": "weather"}}),
        ModelOptions(reasoning_effort="minimal"),
        ModelOptions(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
    ],
)
async def test_what_ollama_cannot_do_is_refused_before_sending(
    adapter: Make, options: ModelOptions
) -> None:
    rec = Recorder(lambda _: httpx.Response(200, json=final()))
    with pytest.raises(BadRequest, match=r"^ollama: "):
        await adapter(rec).chat(ChatRequest(model="m", messages=ASK, options=options), SECRET)
    assert not rec.requests


@pytest.mark.parametrize(
    "content",
    [
        [ContentPart(type="image_url", image_url="https://example.com/cat.png")],
        [ContentPart(type="image_url", image_url="data:image/png,not-base64")],
        [ContentPart(type="image_url")],
    ],
)
async def test_images_must_be_base64_data(adapter: Make, content: list[ContentPart]) -> None:
    rec = Recorder(lambda _: httpx.Response(200, json=final()))
    req = ChatRequest(model="m", messages=[Message(role="user", content=content)])
    with pytest.raises(BadRequest):
        await adapter(rec).chat(req, SECRET)
    assert not rec.requests


async def test_tool_arguments_must_be_an_object(adapter: Make) -> None:
    rec = Recorder(lambda _: httpx.Response(200, json=final()))
    call = ToolCall(id="c1", name="f", arguments="[1]")
    req = ChatRequest(model="m", messages=[*ASK, Message(role="assistant", tool_calls=[call])])
    with pytest.raises(BadRequest, match="not a JSON object"):
        await adapter(rec).chat(req, SECRET)


async def test_reasoning_none_and_logprobs(adapter: Make) -> None:
    rec = Recorder(lambda _: httpx.Response(200, json=final()))
    options = ModelOptions(reasoning_effort="none", top_logprobs=2)
    await adapter(rec).chat(ChatRequest(model="m", messages=ASK, options=options), SECRET)
    assert rec.body["think"] is False
    assert rec.body["logprobs"] is True and rec.body["top_logprobs"] == 2
    assert "options" not in rec.body


async def test_no_key_no_auth_header_and_base_url_from_secret(adapter: Make) -> None:
    rec = Recorder(lambda _: httpx.Response(200, json=final()))
    await adapter(rec, base=None).chat(
        ChatRequest(model="m", messages=ASK), Secret({"base_url": "http://gpu-box:11434/"})
    )
    assert str(rec.requests[-1].url) == "http://gpu-box:11434/api/chat"
    assert "authorization" not in rec.requests[-1].headers


# ---------------------------------------------------------------- answers


async def test_chat_answer_with_tool_calls(adapter: Make) -> None:
    message = {"role": "assistant", "content": "", "tool_calls": [WEATHER, TIME]}
    ok = adapter(lambda _: httpx.Response(200, json=final(message=message)))
    result = await ok.chat(ChatRequest(model="m", messages=ASK), SECRET)
    calls = result.message.tool_calls or []
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("weather", {"city": "Oslo"}),
        ("time", {}),
    ]
    assert calls[0].id == tool_call_id(0, "weather", '{"city":"Oslo"}')
    assert len({c.id for c in calls}) == 2
    assert result.message.content is None
    assert result.finish_reason == "tool_calls"
    assert result.usage == Usage(input_tokens=7, output_tokens=3, total_tokens=10)


async def test_ids_a_server_sends_are_kept(adapter: Make) -> None:
    call = {"id": "call_abc", **WEATHER}
    message = {"role": "assistant", "content": "", "tool_calls": [call]}
    ok = adapter(lambda _: httpx.Response(200, json=final(message=message)))
    result = await ok.chat(ChatRequest(model="m", messages=ASK), SECRET)
    assert [c.id for c in result.message.tool_calls or []] == ["call_abc"]


@pytest.mark.parametrize(
    ("reason", "expected"), [("stop", "stop"), ("length", "length"), ("LOAD", "load")]
)
async def test_text_answer_and_finish_reasons(adapter: Make, reason: str, expected: str) -> None:
    message = {"role": "assistant", "content": "Hi!", "thinking": "hmm"}
    ok = adapter(lambda _: httpx.Response(200, json=final(message=message, done_reason=reason)))
    result = await ok.chat(ChatRequest(model="m", messages=ASK), SECRET)
    assert result.message.content == "Hi!"  # the thinking is not the answer
    assert result.finish_reason == expected


async def test_malformed_answers(adapter: Make) -> None:
    for body in ({"done": True}, final(message={"tool_calls": [{"function": 3}]})):
        bad = adapter(lambda _, body=body: httpx.Response(200, json=body))
        with pytest.raises(FleetError):
            await bad.chat(ChatRequest(model="m", messages=ASK), SECRET)


# ---------------------------------------------------------------- streams


async def test_stream_text_thinking_tools_and_usage(adapter: Make) -> None:
    body = lines(
        piece(thinking="Let me see"),
        piece("Hel"),
        piece("lo"),
        piece(tool_calls=[WEATHER]),
        piece(tool_calls=[TIME]),
        final(eval_count=5),
    )
    rec = Recorder(lambda _: stream_response(body, pieces=11))
    events = await collect(adapter(rec).stream_chat(ChatRequest(model="m", messages=ASK), SECRET))
    assert rec.body["stream"] is True
    assert rec.requests[-1].headers["accept"] == "application/x-ndjson"
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo"]
    deltas = [e.delta for e in events if isinstance(e, ToolDelta)]
    assert [(d.index, d.name, d.arguments) for d in deltas] == [
        (0, "weather", '{"city":"Oslo"}'),
        (1, "time", "{}"),
    ]
    assert deltas[0].id == tool_call_id(0, "weather", '{"city":"Oslo"}')
    assert events[-1] == StreamEnd(
        "tool_calls", Usage(input_tokens=7, output_tokens=5, total_tokens=12)
    )


async def test_stream_ending_without_done_is_unavailable(adapter: Make) -> None:
    body = lines(piece("Hel"), piece("lo"))
    broken = adapter(lambda _: stream_response(body))
    with pytest.raises(ProviderUnavailable, match="before its final object"):
        await collect(broken.stream_chat(ChatRequest(model="m", messages=ASK), SECRET))


async def test_stream_with_a_malformed_line_is_unavailable(adapter: Make) -> None:
    broken = adapter(lambda _: stream_response(lines(piece("Hel")) + b"{oops\n"))
    with pytest.raises(ProviderUnavailable, match="malformed"):
        await collect(broken.stream_chat(ChatRequest(model="m", messages=ASK), SECRET))


@pytest.mark.parametrize(
    ("error", "cls", "status"),
    [
        ("too many requests, please try again later", RateLimited, 429),
        (
            "you (me) have reached your weekly usage limit, upgrade for higher limits",
            QuotaExceeded,
            429,
        ),
        (
            "server busy, please try again.  maximum pending requests exceeded",
            ProviderUnavailable,
            503,
        ),
        ("llama runner process has terminated: exit status 2", ProviderUnavailable, 500),
    ],
)
async def test_error_lines_in_a_stream(
    adapter: Make, error: str, cls: type[FleetError], status: int
) -> None:
    body = lines(piece("Hel"), {"error": error})
    broken = adapter(lambda _: stream_response(body))
    events: list[object] = []
    with pytest.raises(cls) as info:
        async for event in broken.stream_chat(ChatRequest(model="m", messages=ASK), SECRET):
            events.append(event)
    assert events == [TextDelta("Hel")]
    assert info.value.provider_status == status
    assert info.value.message.startswith("ollama: stream error")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "error", "cls", "retryable"),
    [
        (400, "invalid options", BadRequest, False),
        (401, "unauthorized", Unauthorized, False),
        (404, 'model "llama9" not found, try pulling it first', NotFound, False),
        (429, "too many requests", RateLimited, True),
        (
            429,
            "you (me) have reached your session usage limit, upgrade for higher limits",
            QuotaExceeded,
            False,
        ),
        (500, "llama runner process has terminated", ProviderUnavailable, True),
        (502, "error reaching the cloud model", ProviderUnavailable, True),
    ],
)
async def test_http_errors(
    adapter: Make, status: int, error: str, cls: type[FleetError], retryable: bool
) -> None:
    headers = {"retry-after": "3"} if status == 429 else {}
    failing = adapter(lambda _: httpx.Response(status, json={"error": error}, headers=headers))
    with pytest.raises(FleetError) as info:
        await failing.chat(ChatRequest(model="m", messages=ASK), SECRET)
    exc = info.value
    assert type(exc) is cls and exc.retryable is retryable
    assert exc.provider_status == status
    assert exc.message.startswith(f"ollama: HTTP {status}")
    assert error.split()[0] in exc.message
    assert exc.retry_after == (3.0 if retryable and status == 429 else None)
    with pytest.raises(cls):
        await collect(failing.stream_chat(ChatRequest(model="m", messages=ASK), SECRET))


async def test_plain_text_404_of_an_unknown_route(adapter: Make) -> None:
    failing = adapter(lambda _: httpx.Response(404, text="404 page not found"))
    with pytest.raises(NotFound, match="404 page not found"):
        await failing.chat(ChatRequest(model="m", messages=ASK), SECRET)


async def test_the_key_never_reaches_an_error_message(adapter: Make) -> None:
    failing = adapter(lambda _: httpx.Response(401, json={"error": f"bad key {CANARY}"}))
    with pytest.raises(Unauthorized) as info:
        await failing.chat(ChatRequest(model="m", messages=ASK), SECRET)
    assert CANARY not in info.value.message
    stream_fail = adapter(lambda _: stream_response(lines({"error": f"key {CANARY} refused"})))
    with pytest.raises(FleetError) as streamed:
        await collect(stream_fail.stream_chat(ChatRequest(model="m", messages=ASK), SECRET))
    assert CANARY not in streamed.value.message


def test_wording_codes() -> None:
    assert code_of('model "x" not found, try pulling it first') == "model_not_found"
    assert code_of("You have reached your hourly usage limit") == "usage_limit"
    assert code_of("something else") is None
    error = ERRORS.from_payload("ollama", {"error": "unauthorized"}, SECRET)
    assert type(error) is Unauthorized


# ---------------------------------------------------------------- embeddings and verify


async def test_embed(adapter: Make) -> None:
    payload = {"model": "e", "embeddings": [[0.5, -1.0], [0.25, 2.0]], "prompt_eval_count": 4}
    rec = Recorder(lambda _: httpx.Response(200, json=payload))
    req = EmbedRequest(model="e", inputs=["a", "b"], input_type="query", dimensions=2)
    result = await adapter(rec).embed(req, SECRET)
    assert str(rec.requests[-1].url) == f"{BASE}/api/embed"
    assert rec.body == {"model": "e", "input": ["a", "b"], "dimensions": 2}
    assert (result.count, result.dims) == (2, 2)
    assert result.usage == Usage(input_tokens=4, total_tokens=4)


async def test_embed_count_must_match(adapter: Make) -> None:
    short = adapter(lambda _: httpx.Response(200, json={"embeddings": [[0.5]]}))
    with pytest.raises(FleetError, match="expected 2 embeddings"):
        await short.embed(EmbedRequest(model="e", inputs=["a", "b"]), SECRET)


async def test_verify_with_and_without_a_key(adapter: Make) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/version":
            return httpx.Response(200, json={"version": "0.12.6"})
        if request.headers.get("authorization") == f"Bearer {CANARY}":
            return httpx.Response(200, json={"models": [{"name": "a"}, {"name": "b"}]})
        return httpx.Response(401, json={"error": "unauthorized"})

    rec = Recorder(handler)
    local = await adapter(rec).verify(Secret({}))
    assert local.ok and local.detail == "Ollama 0.12.6"
    good = await adapter(rec).verify(SECRET)
    assert good.ok and good.detail == "2 models available"
    bad = await adapter(rec).verify(Secret({"api_key": "wrong"}))
    assert not bad.ok and "unauthorized" in bad.detail
    assert [r.url.path for r in rec.requests] == ["/api/version", "/api/tags", "/api/tags"]


def test_specs() -> None:
    assert [s.name for s in SPECS] == ["ollama", "ollama-openai", "ollama-mock"]
    assert SPECS[0].default_base_url == "http://localhost:11434"
    assert SPECS[1].default_base_url == "http://localhost:11434/v1"

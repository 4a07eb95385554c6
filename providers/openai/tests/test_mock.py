"""The mock OpenAI-compatible provider, exercised over real HTTP with httpx."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from providers.mock.config import PROFILES, MockConfig
from providers.mock.faults import FaultSpecError, mask_key, parse_fault
from providers.mock.server import RunningMock, start_mock
from providers.mock.text import answer_rng, answer_tokens

Serve = Callable[..., Awaitable[RunningMock]]
HELLO = [{"role": "user", "content": "Say hello to the fleet"}]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    started: list[RunningMock] = []

    async def start(**overrides: Any) -> RunningMock:
        mock = await start_mock(MockConfig(**overrides), "127.0.0.1", 0)
        started.append(mock)
        return mock

    yield start
    for mock in started:
        await mock.close()


@pytest.fixture
async def mock(serve: Serve) -> RunningMock:
    return await serve()


def client(mock: RunningMock, key: str = "mock-key") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=mock.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10.0
    )


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": HELLO, **extra}


async def stream_events(
    http: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None
) -> list[Any]:
    """Parsed `data:` payloads of one stream; `[DONE]` is kept as the string."""
    events: list[Any] = []
    async with http.stream("POST", "/chat/completions", json=body, headers=headers) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def content_of(events: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e["choices"]
    )


# ---------------------------------------------------------------- stream shape


def expected_stream(tokens: list[str], finish: str, usage: dict[str, int] | None) -> bytes:
    head = '{"id":"ID","object":"chat.completion.chunk","created":1,"model":"m","choices":'
    events = [
        head + '[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
    ]
    events += [
        head + '[{"index":0,"delta":{"content":' + json.dumps(t) + '},"finish_reason":null}]}'
        for t in tokens
    ]
    events.append(head + '[{"index":0,"delta":{},"finish_reason":"' + finish + '"}]}')
    if usage is not None:
        events.append(head + '[],"usage":' + json.dumps(usage, separators=(",", ":")) + "}")
    events.append("[DONE]")
    return "".join(f"data: {e}\n\n" for e in events).encode()


def normalise(raw: bytes) -> bytes:
    raw = re.sub(rb'"id":"chatcmpl-[0-9a-f]+"', b'"id":"ID"', raw)
    return re.sub(rb'"created":\d+', b'"created":1', raw)


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_bytes_match_the_reference_shape(
    mock: RunningMock, include_usage: bool
) -> None:
    body = chat_body(stream=True, max_tokens=2)
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    async with client(mock) as http:
        resp = await http.post("/chat/completions", json=body)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["x-request-id"]
    tokens = answer_tokens(answer_rng(HELLO, None), 2)
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    expected = expected_stream(tokens, "length", usage if include_usage else None)
    assert normalise(resp.content) == expected


async def test_same_prompt_gives_same_text_and_other_prompts_differ(mock: RunningMock) -> None:
    other = [{"role": "user", "content": "Something else entirely"}]
    async with client(mock) as http:
        first = (await http.post("/chat/completions", json=chat_body())).json()
        second = (await http.post("/chat/completions", json=chat_body())).json()
        third = (await http.post("/chat/completions", json=chat_body(messages=other))).json()
        streamed = content_of(await stream_events(http, chat_body(stream=True)))
    text = first["choices"][0]["message"]["content"]
    assert text == second["choices"][0]["message"]["content"] == streamed
    assert text != third["choices"][0]["message"]["content"]
    assert first["object"] == "chat.completion"
    assert first["choices"][0]["finish_reason"] == "stop"
    assert first["usage"] == {"prompt_tokens": 5, "completion_tokens": 64, "total_tokens": 69}


async def test_max_tokens_cuts_the_answer_with_length(mock: RunningMock) -> None:
    async with client(mock) as http:
        short = (await http.post("/chat/completions", json=chat_body(max_tokens=5))).json()
        newer = (
            await http.post("/chat/completions", json=chat_body(max_completion_tokens=3))
        ).json()
        roomy = (await http.post("/chat/completions", json=chat_body(max_tokens=500))).json()
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 5
    assert len(short["choices"][0]["message"]["content"].split()) == 5
    assert newer["usage"]["completion_tokens"] == 3
    assert roomy["choices"][0]["finish_reason"] == "stop"
    assert roomy["usage"]["completion_tokens"] == 64


# ---------------------------------------------------------------- auth and validation


async def test_bad_key_is_401_in_openai_shape_without_leaking_the_key(mock: RunningMock) -> None:
    secret = "sk-proj-supersecretvalue1234abcd"
    async with client(mock, key=secret) as http:
        resp = await http.post("/chat/completions", json=chat_body())
    assert resp.status_code == 401
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_api_key",
        None,
    )
    assert "abcd" in error["message"]
    assert "supersecret" not in resp.text
    assert resp.headers["x-request-id"]


async def test_missing_key_and_accept_any_key(serve: Serve) -> None:
    strict, lenient = await serve(), await serve(accept_any_key=True)
    async with httpx.AsyncClient(base_url=strict.base_url) as http:
        assert (await http.get("/models")).status_code == 401
    async with client(lenient, key="whatever") as http:
        assert (await http.get("/models")).status_code == 200


def test_mask_key_shows_at_most_the_last_four_characters() -> None:
    assert mask_key("sk-proj-abcdefgh1234") == "****1234"
    assert mask_key("short") == "****"


async def test_missing_model_or_messages_is_400(mock: RunningMock) -> None:
    async with client(mock) as http:
        no_model = await http.post("/chat/completions", json={"messages": HELLO})
        no_messages = await http.post("/chat/completions", json={"model": "m"})
        not_json = await http.post("/chat/completions", content=b"{nope")
    for resp in (no_model, no_messages, not_json):
        assert resp.status_code == 400
        assert resp.json()["error"]["type"] == "invalid_request_error"
    assert no_messages.json()["error"]["param"] == "messages"


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("spec", "status", "type_", "code"),
    [
        ("400", 400, "invalid_request_error", None),
        ("401", 401, "invalid_request_error", "invalid_api_key"),
        ("404", 404, "invalid_request_error", "model_not_found"),
        ("429", 429, "requests", "rate_limit_exceeded"),
        ("quota", 429, "insufficient_quota", "insufficient_quota"),
        ("500", 500, "server_error", None),
        ("503", 503, "server_error", None),
    ],
)
async def test_error_faults_use_openai_shapes(
    mock: RunningMock, spec: str, status: int, type_: str, code: str | None
) -> None:
    async with client(mock) as http:
        resp = await http.post(
            "/chat/completions", json=chat_body(stream=True), headers={"x-mock-fault": spec}
        )
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (type_, code, None)
    assert error["message"]


async def test_429_carries_retry_headers(mock: RunningMock) -> None:
    async with client(mock) as http:
        seconds = await http.get("/models", headers={"x-mock-fault": "429:retry-after=1.5"})
        millis = await http.get("/models", headers={"x-mock-fault": "429:retry-after-ms=200"})
        bare = await http.get("/models", headers={"x-mock-fault": "429"})
    assert seconds.headers["retry-after"] == "1.5"
    assert "retry-after-ms" not in seconds.headers
    assert millis.headers["retry-after-ms"] == "200"
    assert "retry-after" not in bare.headers and "retry-after-ms" not in bare.headers


async def test_404_fault_names_the_model(mock: RunningMock) -> None:
    async with client(mock) as http:
        resp = await http.post(
            "/chat/completions",
            json=chat_body(model="gpt-nope"),
            headers={"x-mock-fault": "404"},
        )
    assert resp.status_code == 404
    assert "gpt-nope" in resp.json()["error"]["message"]


async def test_bad_fault_spec_is_rejected(mock: RunningMock) -> None:
    with pytest.raises(FaultSpecError):
        parse_fault("explode")
    with pytest.raises(FaultSpecError):
        parse_fault("429:retry-after=soon")
    async with client(mock) as http:
        resp = await http.get("/models", headers={"x-mock-fault": "stall:forever"})
    assert resp.status_code == 400


async def test_drop_after_breaks_the_stream(mock: RunningMock) -> None:
    tokens: list[str] = []
    async with client(mock) as http:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            async with http.stream(
                "POST",
                "/chat/completions",
                json=chat_body(stream=True),
                headers={"x-mock-fault": "drop-after:3"},
            ) as resp:
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    assert line != "data: [DONE]"
                    if line.startswith("data: "):
                        delta = json.loads(line[6:])["choices"][0]["delta"]
                        if delta.get("content"):
                            tokens.append(delta["content"])
        assert len(tokens) == 3
        stats = (await http.get(mock.root + "/_mock/stats")).json()
    assert stats["streams_dropped"] == 1
    assert stats["faults_by_kind"] == {"drop-after": 1}


async def test_drop_after_on_a_non_streaming_call(mock: RunningMock) -> None:
    async with client(mock) as http:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await http.post(
                "/chat/completions", json=chat_body(), headers={"x-mock-fault": "drop-after:0"}
            )


async def first_content_delay(http: httpx.AsyncClient, body: dict[str, Any], fault: str) -> float:
    started = time.monotonic()
    async with http.stream(
        "POST", "/chat/completions", json=body, headers={"x-mock-fault": fault}
    ) as resp:
        assert resp.status_code == 200
        headers_at = time.monotonic() - started
        async for line in resp.aiter_lines():
            if '"content":"' in line and '"content":""' not in line:
                assert headers_at < 0.15  # headers go out before the stall
                return time.monotonic() - started
    raise AssertionError("no content token")


async def test_stall_faults_delay_the_stream(mock: RunningMock) -> None:
    async with client(mock) as http:
        assert await first_content_delay(http, chat_body(stream=True), "stall:0.3") >= 0.25
        events: list[tuple[float, str]] = []
        started = time.monotonic()
        async with http.stream(
            "POST",
            "/chat/completions",
            json=chat_body(stream=True, max_tokens=4),
            headers={"x-mock-fault": "stall-after:2:0.3"},
        ) as resp:
            async for line in resp.aiter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    events.append((time.monotonic() - started, line))
    assert len(events) == 4
    assert events[1][0] < 0.2
    assert events[2][0] - events[1][0] >= 0.25


async def test_client_leaving_a_stalled_stream_frees_the_handler(mock: RunningMock) -> None:
    admin = mock.root + "/_mock/stats"
    async with (
        client(mock) as http,
        http.stream(
            "POST",
            "/chat/completions",
            json=chat_body(stream=True),
            headers={"x-mock-fault": "stall-after:1:30"},
        ) as resp,
    ):
        async for line in resp.aiter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break
    async with client(mock) as http:
        for _ in range(100):
            stats = (await http.get(admin)).json()
            if stats["streams_abandoned"]:
                break
            await asyncio.sleep(0.02)
    assert stats["streams_abandoned"] == 1
    assert stats["streams_completed"] == 0


async def test_stats_show_what_is_open_right_now(mock: RunningMock) -> None:
    admin = httpx.AsyncClient(base_url=mock.root + "/_mock")

    async def gauges() -> tuple[int, int]:
        stats = (await admin.get("/stats")).json()
        return stats["open_streams"], stats["open_connections"]

    try:
        assert await gauges() == (0, 0)  # the admin request's own connection is not counted
        async with client(mock) as http:
            async with http.stream(
                "POST",
                "/chat/completions",
                json=chat_body(stream=True),
                headers={"x-mock-fault": "stall-after:1:30"},
            ) as resp:
                async for line in resp.aiter_lines():
                    if '"content":"' in line and '"content":""' not in line:
                        break
                assert await gauges() == (1, 1)
            # The response was closed unfinished, so the client dropped its connection too.
            for _ in range(100):
                if await gauges() == (0, 0):
                    break
                await asyncio.sleep(0.01)
            assert await gauges() == (0, 0)
            # A finished answer leaves its connection open for reuse (keep-alive).
            await stream_events(http, chat_body(stream=True))
            assert await gauges() == (0, 1)
        for _ in range(100):
            if await gauges() == (0, 0):
                break
            await asyncio.sleep(0.01)
        assert await gauges() == (0, 0)
    finally:
        await admin.aclose()


async def test_admin_faults_are_scoped_by_model_and_counted(mock: RunningMock) -> None:
    admin = mock.root + "/_mock"
    async with client(mock) as http:
        queued = await http.post(
            f"{admin}/faults", json={"spec": "503", "times": 2, "model": "model-a"}
        )
        assert queued.status_code == 201
        other = await http.post("/chat/completions", json=chat_body(model="model-b"))
        hits = [
            (await http.post("/chat/completions", json=chat_body(model="model-a"))).status_code
            for _ in range(3)
        ]
        stats = (await http.get(f"{admin}/stats")).json()
        await http.post(f"{admin}/faults", json={"spec": "500", "times": 5, "model": None})
        cleared = (await http.delete(f"{admin}/faults")).json()
        after_clear = await http.post("/chat/completions", json=chat_body(model="model-a"))
        bad = await http.post(f"{admin}/faults", json={"spec": "nonsense"})
    assert other.status_code == 200
    assert hits == [503, 503, 200]
    assert stats["faults_injected"] == 2
    assert stats["requests"]["/openai/v1/chat/completions"] == 4
    assert stats["queued_faults"] == []
    assert cleared == {"cleared": 1}
    assert after_clear.status_code == 200
    assert bad.status_code == 400


async def test_random_faults_follow_fault_rate(serve: Serve) -> None:
    always = await serve(fault_rate=1.0, fault_kind="quota")
    async with client(always) as http:
        resp = await http.post("/chat/completions", json=chat_body())
    assert resp.status_code == 429
    assert resp.json()["error"]["code"] == "insufficient_quota"


# ---------------------------------------------------------------- tools


def tool(name: str) -> dict[str, Any]:
    params = {"type": "object", "properties": {"query": {"type": "string"}}}
    return {"type": "function", "function": {"name": name, "parameters": params}}


async def test_streamed_tool_calls_reassemble_by_index(mock: RunningMock) -> None:
    body = chat_body(stream=True, tools=[tool("search"), tool("lookup")], tool_choice="required")
    async with client(mock) as http:
        events = await stream_events(http, body)
        whole = (await http.post("/chat/completions", json={**body, "stream": False})).json()
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    calls: dict[int, dict[str, str]] = {}
    order: list[int] = []
    for chunk in chunks:
        for delta in chunk["choices"][0]["delta"].get("tool_calls", []):
            index = delta["index"]
            order.append(index)
            if "id" in delta:
                assert index not in calls
                calls[index] = {"id": delta["id"], "name": delta["function"]["name"], "args": ""}
            calls[index]["args"] += delta["function"]["arguments"]
    assert order != sorted(order)  # fragments of the two calls are interleaved
    assert [c["name"] for c in calls.values()] == ["search", "lookup"]
    for index, call in calls.items():
        assert call["id"] == f"call_{index}"
        assert set(json.loads(call["args"])) == {"query"}
    message = whole["choices"][0]["message"]
    assert whole["choices"][0]["finish_reason"] == "tool_calls"
    assert [json.loads(c["function"]["arguments"]) for c in message["tool_calls"]] == [
        json.loads(c["args"]) for c in calls.values()
    ]


async def test_tool_calls_only_when_asked(mock: RunningMock) -> None:
    tools = [tool("search"), tool("lookup")]
    please = [{"role": "user", "content": "Please use tools for this"}]
    async with client(mock) as http:
        auto = (await http.post("/chat/completions", json=chat_body(tools=tools))).json()
        asked = (
            await http.post("/chat/completions", json=chat_body(tools=tools, messages=please))
        ).json()
        named = (
            await http.post(
                "/chat/completions",
                json=chat_body(
                    tools=tools, tool_choice={"type": "function", "function": {"name": "lookup"}}
                ),
            )
        ).json()
    assert auto["choices"][0]["finish_reason"] == "stop"
    assert len(asked["choices"][0]["message"]["tool_calls"]) == 2
    assert [c["function"]["name"] for c in named["choices"][0]["message"]["tool_calls"]] == [
        "lookup"
    ]


# ---------------------------------------------------------------- embeddings and models


async def test_embeddings_float_and_base64_agree(mock: RunningMock) -> None:
    texts = ["alpha", "beta", "alpha"]
    async with client(mock) as http:
        floats = (
            await http.post("/embeddings", json={"model": "e", "input": texts, "dimensions": 8})
        ).json()
        encoded = (
            await http.post(
                "/embeddings",
                json={"model": "e", "input": texts, "dimensions": 8, "encoding_format": "base64"},
            )
        ).json()
        default = (await http.post("/embeddings", json={"model": "e", "input": "alpha"})).json()
    assert floats["object"] == "list" and floats["model"] == "e"
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert [d["index"] for d in floats["data"]] == [0, 1, 2]
    for as_float, as_b64 in zip(floats["data"], encoded["data"], strict=True):
        assert as_float["object"] == "embedding"
        raw = base64.b64decode(as_b64["embedding"])
        unpacked = list(struct.unpack("<8f", raw))
        repacked = list(struct.unpack("<8f", struct.pack("<8f", *as_float["embedding"])))
        assert unpacked == repacked == as_float["embedding"]
        assert abs(sum(v * v for v in unpacked) - 1.0) < 1e-5
    assert floats["data"][0]["embedding"] == floats["data"][2]["embedding"]
    assert floats["data"][0]["embedding"] != floats["data"][1]["embedding"]
    assert len(default["data"][0]["embedding"]) == 1536


async def test_embedding_dims_default_comes_from_config(serve: Serve) -> None:
    small = await serve(embed_dims=32)
    async with client(small) as http:
        resp = await http.post("/embeddings", json={"model": "e", "input": ["x", "y"]})
        bad = await http.post("/embeddings", json={"model": "e", "input": []})
    assert [len(d["embedding"]) for d in resp.json()["data"]] == [32, 32]
    assert bad.status_code == 400


async def test_models_lists_configured_models(serve: Serve) -> None:
    mock = await serve(models=("a", "b"))
    async with client(mock) as http:
        resp = await http.get("/models")
    assert resp.json() == {
        "object": "list",
        "data": [
            {"id": "a", "object": "model", "created": 1_700_000_000, "owned_by": "llm-fleet-mock"},
            {"id": "b", "object": "model", "created": 1_700_000_000, "owned_by": "llm-fleet-mock"},
        ],
    }


# ---------------------------------------------------------------- timing and stamps


async def test_ttft_and_token_rate_are_roughly_honoured(serve: Serve) -> None:
    slow = await serve(ttft_ms=200, tokens_per_sec=50)
    async with client(slow) as http:
        started = time.monotonic()
        arrivals: list[float] = []
        async with http.stream(
            "POST", "/chat/completions", json=chat_body(stream=True, max_tokens=11)
        ) as resp:
            async for line in resp.aiter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 11
    assert arrivals[0] >= 0.15
    assert arrivals[-1] - arrivals[0] >= 0.15  # ten gaps of 20 ms


async def test_stamp_tokens_carry_write_time(serve: Serve) -> None:
    stamped = await serve(stamp_tokens=True)
    before = time.time_ns()
    async with client(stamped) as http:
        events = await stream_events(http, chat_body(stream=True, max_tokens=3))
    stamps = [int(t) for t in re.findall(r" t(\d+)", content_of(events))]
    assert len(stamps) == 3
    assert before <= stamps[0] <= stamps[1] <= stamps[2] <= time.time_ns()


def test_profiles() -> None:
    realistic = PROFILES["realistic"]
    assert (realistic.ttft_ms, realistic.tokens_per_sec, realistic.max_tokens_default) == (
        300.0,
        50.0,
        200,
    )
    assert PROFILES["instant"] == MockConfig()

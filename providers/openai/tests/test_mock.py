"""The mock OpenAI-compatible provider, exercised over real HTTP with httpx."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import time
from typing import Any

import httpx
import pytest

from providers.core.testing import Serve
from providers.mock.config import PROFILES, MockConfig
from providers.mock.faults import FaultSpecError, mask_key, parse_fault
from providers.mock.server import RunningMock
from providers.mock.text import answer_rng, answer_tokens
from providers.openai.mock_errors import duration

HELLO = [{"role": "user", "content": "Say hello to the fleet"}]


@pytest.fixture
async def mock(serve: Serve) -> RunningMock:
    return await serve()


def client(mock: RunningMock, key: str = "mock-key") -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=mock.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10.0
    )


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "mock-model", "messages": HELLO, **extra}


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


def expected_stream(tokens: list[str], finish: str, usage: dict[str, Any] | None) -> bytes:
    """The 2025 shape OpenAI streams (see the recorded transcripts), ids normalised."""
    head = (
        '{"id":"ID","object":"chat.completion.chunk","created":1,"model":"mock-model",'
        '"service_tier":"default","system_fingerprint":"FP","choices":'
    )
    tail = ',"usage":null,"obfuscation":"PAD"}' if usage is not None else ',"obfuscation":"PAD"}'

    def choice(delta: str, finish: str | None = None) -> str:
        reason = "null" if finish is None else f'"{finish}"'
        return f'[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{reason}}}]'

    events = [head + choice('{"role":"assistant","content":"","refusal":null}') + tail]
    events += [head + choice('{"content":' + json.dumps(t) + "}") + tail for t in tokens]
    events.append(head + choice("{}", finish) + tail)
    if usage is not None:
        body = json.dumps(usage, separators=(",", ":"))
        events.append(head + '[],"usage":' + body + ',"obfuscation":"PAD"}')
    events.append("[DONE]")
    return "".join(f"data: {e}\n\n" for e in events).encode()


def normalise(raw: bytes) -> bytes:
    raw = re.sub(rb'"id":"chatcmpl-[0-9A-Za-z]{29}"', b'"id":"ID"', raw)
    raw = re.sub(rb'"system_fingerprint":"fp_[0-9a-f]{10}"', b'"system_fingerprint":"FP"', raw)
    raw = re.sub(rb'"obfuscation":"[0-9A-Za-z]+"', b'"obfuscation":"PAD"', raw)
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
    assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert re.fullmatch(r"req_[0-9a-f]{32}", resp.headers["x-request-id"])
    tokens = answer_tokens(answer_rng(HELLO, None), 2)
    usage = {
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
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
    usage = first["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        5,
        64,
        69,
    )
    assert first["choices"][0]["message"]["refusal"] is None


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
        no_messages = await http.post("/chat/completions", json={"model": "mock-model"})
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
        ("403", 403, "request_forbidden", "unsupported_country_region_territory"),
        ("context", 400, "invalid_request_error", "context_length_exceeded"),
        ("overloaded", 503, "server_error", None),
        ("500", 500, "server_error", None),
        # What the gateway in front of OpenAI answers: a numeric code, a cf_ type.
        ("502", 502, "cf_bad_gateway", 502),
        ("503", 503, "cf_service_unavailable", 503),
        ("504", 504, "cf_gateway_timeout", 504),
    ],
)
async def test_error_faults_use_openai_shapes(
    mock: RunningMock, spec: str, status: int, type_: str, code: str | int | None
) -> None:
    async with client(mock) as http:
        resp = await http.post(
            "/chat/completions", json=chat_body(stream=True), headers={"x-mock-fault": spec}
        )
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert (error["type"], error["code"]) == (type_, code)
    assert error["param"] == ("messages" if spec == "context" else None)
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
            f"{admin}/faults", json={"spec": "503", "times": 2, "model": "mock-a"}
        )
        assert queued.status_code == 201
        other = await http.post("/chat/completions", json=chat_body(model="mock-b"))
        hits = [
            (await http.post("/chat/completions", json=chat_body(model="mock-a"))).status_code
            for _ in range(3)
        ]
        stats = (await http.get(f"{admin}/stats")).json()
        await http.post(f"{admin}/faults", json={"spec": "500", "times": 5, "model": None})
        cleared = (await http.delete(f"{admin}/faults")).json()
        after_clear = await http.post("/chat/completions", json=chat_body(model="mock-a"))
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


def assemble_calls(events: list[Any]) -> tuple[dict[int, dict[str, str]], list[int]]:
    """Tool calls rebuilt from chunks by index, and the index of every fragment in order."""
    calls: dict[int, dict[str, str]] = {}
    order: list[int] = []
    for event in events:
        if not isinstance(event, dict) or not event["choices"]:
            continue
        for delta in event["choices"][0]["delta"].get("tool_calls", []):
            index = delta["index"]
            order.append(index)
            if "id" in delta:
                assert index not in calls
                calls[index] = {"id": delta["id"], "name": delta["function"]["name"], "args": ""}
            calls[index]["args"] += delta["function"]["arguments"]
    return calls, order


async def test_streamed_tool_calls_come_one_after_the_other(mock: RunningMock) -> None:
    body = chat_body(stream=True, tools=[tool("search"), tool("lookup")], tool_choice="required")
    async with client(mock) as http:
        events = await stream_events(http, body)
        again = await stream_events(http, body)
        whole = (await http.post("/chat/completions", json={**body, "stream": False})).json()
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    # As recorded: the role and the first call's header share the first delta.
    first = chunks[0]["choices"][0]["delta"]
    assert (first["role"], first["content"], first["refusal"]) == ("assistant", None, None)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    calls, order = assemble_calls(events)
    assert order == sorted(order) and set(order) == {0, 1}
    assert [c["name"] for c in calls.values()] == ["search", "lookup"]
    for call in calls.values():
        assert re.fullmatch(r"call_[0-9A-Za-z]{24}", call["id"])
        assert set(json.loads(call["args"])) == {"query"}
    # Ids are random, as OpenAI's are; the arguments follow the prompt.
    again_calls, _ = assemble_calls(again)
    assert {c["id"] for c in calls.values()}.isdisjoint(c["id"] for c in again_calls.values())
    assert [c["args"] for c in again_calls.values()] == [c["args"] for c in calls.values()]
    message = whole["choices"][0]["message"]
    assert whole["choices"][0]["finish_reason"] == "tool_calls"
    assert [json.loads(c["function"]["arguments"]) for c in message["tool_calls"]] == [
        json.loads(c["args"]) for c in calls.values()
    ]


async def test_interleave_fault_mixes_the_calls(mock: RunningMock) -> None:
    body = chat_body(stream=True, tools=[tool("search"), tool("lookup")], tool_choice="required")
    async with client(mock) as http:
        events = await stream_events(http, body, headers={"x-mock-fault": "interleave"})
    calls, order = assemble_calls(events)
    assert order != sorted(order)
    assert all(set(json.loads(c["args"])) == {"query"} for c in calls.values())


async def test_parallel_tool_calls_false_gives_one_call(mock: RunningMock) -> None:
    body = chat_body(
        tools=[tool("search"), tool("lookup")], tool_choice="required", parallel_tool_calls=False
    )
    async with client(mock) as http:
        answer = (await http.post("/chat/completions", json=body)).json()
    assert [c["function"]["name"] for c in answer["choices"][0]["message"]["tool_calls"]] == [
        "search"
    ]


async def test_tool_arguments_follow_the_schema(mock: RunningMock) -> None:
    params = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "units": {"type": "string", "enum": ["c", "f"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "exact": {"type": ["boolean", "null"]},
        },
        "required": ["city", "days", "units", "tags", "exact"],
    }
    weather = {"type": "function", "function": {"name": "weather", "parameters": params}}
    async with client(mock) as http:
        answer = (
            await http.post(
                "/chat/completions", json=chat_body(tools=[weather], tool_choice="required")
            )
        ).json()
    (call,) = answer["choices"][0]["message"]["tool_calls"]
    args = json.loads(call["function"]["arguments"])
    assert set(args) == set(params["properties"])
    assert isinstance(args["city"], str) and isinstance(args["days"], int)
    assert args["units"] in ("c", "f") and isinstance(args["exact"], bool)
    assert all(isinstance(t, str) for t in args["tags"])


async def test_a_tool_result_is_answered_with_text(mock: RunningMock) -> None:
    messages = [
        {"role": "user", "content": "Please use tools for this"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "search", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "found it"},
    ]
    async with client(mock) as http:
        answer = (
            await http.post(
                "/chat/completions", json=chat_body(messages=messages, tools=[tool("search")])
            )
        ).json()
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["choices"][0]["message"]["content"]


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
            await http.post(
                "/embeddings", json={"model": "mock-embed", "input": texts, "dimensions": 8}
            )
        ).json()
        encoded = (
            await http.post(
                "/embeddings",
                json={
                    "model": "mock-embed",
                    "input": texts,
                    "dimensions": 8,
                    "encoding_format": "base64",
                },
            )
        ).json()
        default = (
            await http.post("/embeddings", json={"model": "mock-embed", "input": "alpha"})
        ).json()
    assert floats["object"] == "list" and floats["model"] == "mock-embed"
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
        resp = await http.post("/embeddings", json={"model": "mock-embed", "input": ["x", "y"]})
        bad = await http.post("/embeddings", json={"model": "mock-embed", "input": []})
    assert [len(d["embedding"]) for d in resp.json()["data"]] == [32, 32]
    assert bad.status_code == 400


async def test_models_lists_configured_models(serve: Serve) -> None:
    mock = await serve(models=("a", "b"))
    async with client(mock) as http:
        resp = await http.get("/models")
    assert resp.json() == {
        "object": "list",
        "data": [
            {"id": "a", "object": "model", "created": 1_700_000_000, "owned_by": "system"},
            {"id": "b", "object": "model", "created": 1_700_000_000, "owned_by": "system"},
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


# ---------------------------------------------------------------- what OpenAI does


async def test_n_choices_take_turns_one_choice_per_chunk(mock: RunningMock) -> None:
    async with client(mock) as http:
        events = await stream_events(http, chat_body(stream=True, n=3, max_tokens=4))
        whole = (await http.post("/chat/completions", json=chat_body(n=3, max_tokens=4))).json()
        single = (await http.post("/chat/completions", json=chat_body(max_tokens=4))).json()
    chunks = [e for e in events if isinstance(e, dict) and e["choices"]]
    assert all(len(e["choices"]) == 1 for e in chunks)
    order = [e["choices"][0]["index"] for e in chunks]
    # As recorded: role and first token of 0, of 1, of 2, then one token each in turn.
    assert order[:6] == [0, 0, 1, 1, 2, 2] and order[6:9] == [0, 1, 2]
    texts = {
        i: "".join(
            e["choices"][0]["delta"].get("content") or ""
            for e in chunks
            if e["choices"][0]["index"] == i
        )
        for i in range(3)
    }
    assert [c["message"]["content"] for c in whole["choices"]] == [texts[0], texts[1], texts[2]]
    assert texts[0] == single["choices"][0]["message"]["content"]
    assert len(set(texts.values())) == 3
    assert whole["usage"]["completion_tokens"] == 12


async def test_stop_sequence_cuts_the_text(mock: RunningMock) -> None:
    async with client(mock) as http:
        full = (await http.post("/chat/completions", json=chat_body())).json()
        text = full["choices"][0]["message"]["content"]
        stop = text.split()[3]
        cut = (await http.post("/chat/completions", json=chat_body(stop=[stop, "zzz"]))).json()
        streamed = content_of(await stream_events(http, chat_body(stream=True, stop=stop)))
        too_many = await http.post("/chat/completions", json=chat_body(stop=list("abcde")))
    choice = cut["choices"][0]
    assert choice["message"]["content"] == text[: text.index(stop)] == streamed
    assert choice["finish_reason"] == "stop"
    assert too_many.status_code == 400
    assert too_many.json()["error"]["param"] == "stop"


async def test_json_object_mode_answers_json(mock: RunningMock) -> None:
    ask = [{"role": "user", "content": "Answer in JSON please"}]
    fmt = {"type": "json_object"}
    async with client(mock) as http:
        whole = await http.post(
            "/chat/completions", json=chat_body(messages=ask, response_format=fmt)
        )
        streamed = content_of(
            await stream_events(http, chat_body(messages=ask, response_format=fmt, stream=True))
        )
        short = await http.post(
            "/chat/completions", json=chat_body(messages=ask, response_format=fmt, max_tokens=1)
        )
        no_word = await http.post("/chat/completions", json=chat_body(response_format=fmt))
        # The word counts in text parts only, not in the structure around them.
        parts: list[dict[str, Any]] = [
            {"type": "text", "text": "Describe this"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.json"}},
        ]
        in_url = await http.post(
            "/chat/completions",
            json=chat_body(messages=[{"role": "user", "content": parts}], response_format=fmt),
        )
        parts[0]["text"] = "Describe this as JSON"
        in_text = await http.post(
            "/chat/completions",
            json=chat_body(messages=[{"role": "user", "content": parts}], response_format=fmt),
        )
        bad = await http.post("/chat/completions", json=chat_body(response_format={"type": "xml"}))
    content = whole.json()["choices"][0]["message"]["content"]
    assert isinstance(json.loads(content), dict) and json.loads(streamed) == json.loads(content)
    # As recorded: a limit hit mid-object leaves the JSON cut, finish `length`.
    assert short.json()["choices"][0] | {"message": None} == {
        "index": 0,
        "message": None,
        "logprobs": None,
        "finish_reason": "length",
    }
    assert short.json()["choices"][0]["message"]["content"] == '{"'
    assert no_word.status_code == 400 and "json" in no_word.json()["error"]["message"]
    assert (in_url.status_code, in_text.status_code) == (400, 200)
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "response_format.type"


async def test_json_schema_mode_answers_an_instance(mock: RunningMock) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "temperature": {"type": "number"},
            "units": {"type": "string", "enum": ["c", "f"]},
            "when": {"$ref": "#/$defs/When"},
        },
        "required": ["city", "temperature", "units", "when"],
        "additionalProperties": False,
        "$defs": {
            "When": {
                "type": "object",
                "properties": {
                    "day": {"type": "integer"},
                    "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
                "required": ["day", "note"],
                "additionalProperties": False,
            }
        },
    }
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": schema, "strict": True},
    }
    async with client(mock) as http:
        resp = await http.post("/chat/completions", json=chat_body(response_format=fmt))
        nameless = await http.post(
            "/chat/completions",
            json=chat_body(response_format={"type": "json_schema", "json_schema": {}}),
        )
    value = json.loads(resp.json()["choices"][0]["message"]["content"])
    assert set(value) == {"city", "temperature", "units", "when"}
    assert isinstance(value["city"], str) and isinstance(value["temperature"], float)
    assert value["units"] in ("c", "f")
    assert isinstance(value["when"]["day"], int) and isinstance(value["when"]["note"], str)
    assert nameless.status_code == 400
    assert nameless.json()["error"]["code"] == "missing_required_parameter"


async def test_reasoning_models_want_max_completion_tokens(mock: RunningMock) -> None:
    async with client(mock) as http:
        old = await http.post("/chat/completions", json=chat_body(model="o3-mini", max_tokens=5))
        new = await http.post(
            "/chat/completions", json=chat_body(model="o3-mini", max_completion_tokens=5)
        )
        plain = await http.post("/chat/completions", json=chat_body(max_completion_tokens=5))
    assert old.status_code == 400
    assert old.json()["error"] == {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "unsupported_parameter",
    }
    usage = new.json()["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning > 0 and usage["completion_tokens"] == 5 + reasoning
    assert plain.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0


async def test_unknown_models_are_404(mock: RunningMock) -> None:
    async with client(mock) as http:
        chat = await http.post("/chat/completions", json=chat_body(model="gpt-nope"))
        embed = await http.post("/embeddings", json={"model": "emb-nope", "input": "x"})
        known = await http.get("/models/gpt-4o-mini")
        unknown = await http.get("/models/gpt-nope")
    for resp, name in ((chat, "gpt-nope"), (embed, "emb-nope")):
        assert resp.status_code == 404
        error = resp.json()["error"]
        assert (error["type"], error["code"]) == ("invalid_request_error", "model_not_found")
        assert f"`{name}`" in error["message"]
    assert known.json() == {
        "id": "gpt-4o-mini",
        "object": "model",
        "created": 1_700_000_000,
        "owned_by": "system",
    }
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"


async def test_context_window_is_enforced(serve: Serve) -> None:
    small = await serve(context_window=20)
    long = [{"role": "user", "content": "word " * 30}]
    async with client(small) as http:
        over = await http.post("/chat/completions", json=chat_body(messages=long))
        with_limit = await http.post("/chat/completions", json=chat_body(max_tokens=50))
        fits = await http.post("/chat/completions", json=chat_body(max_tokens=10))
    assert over.status_code == 400
    assert over.json()["error"]["code"] == "context_length_exceeded"
    assert "maximum context length is 20 tokens" in over.json()["error"]["message"]
    assert "your messages resulted in 30 tokens" in over.json()["error"]["message"]
    assert "(5 in the messages, 50 in the completion)" in with_limit.json()["error"]["message"]
    assert fits.status_code == 200


async def test_stream_error_event_ends_the_stream(mock: RunningMock) -> None:
    async with client(mock) as http:
        events = await stream_events(
            http, chat_body(stream=True), headers={"x-mock-fault": "stream-error-after:2:500"}
        )
        whole = await http.post(
            "/chat/completions", json=chat_body(), headers={"x-mock-fault": "stream-error-after:2"}
        )
    assert content_of(events[:-1]) and len([e for e in events if "choices" in e]) == 3
    assert events[-1] == {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    assert whole.status_code == 503


async def test_every_answer_carries_openai_headers(mock: RunningMock) -> None:
    async with client(mock) as http:
        chat = await http.post("/chat/completions", json=chat_body(max_tokens=3))
        embed = await http.post("/embeddings", json={"model": "mock-embed", "input": "x"})
        limited = await http.post(
            "/chat/completions", json=chat_body(), headers={"x-mock-fault": "429:retry-after=2"}
        )
        models = await http.get("/models")
    for resp in (chat, embed, limited, models):
        assert re.fullmatch(r"req_[0-9a-f]{32}", resp.headers["x-request-id"])
        assert int(resp.headers["openai-processing-ms"]) >= 0
    for resp in (chat, embed, limited):
        assert int(resp.headers["x-ratelimit-limit-requests"]) > 0
        assert int(resp.headers["x-ratelimit-remaining-tokens"]) > 0
        assert re.fullmatch(r"(\d+h)?(\d+m)?[\d.]+m?s", resp.headers["x-ratelimit-reset-tokens"])
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.headers["retry-after"] == "2"


async def test_rate_limiter_answers_openai_429s(serve: Serve) -> None:
    limited = await serve(requests_per_minute=2, tokens_per_minute=1000, accept_any_key=True)
    async with client(limited, key="key-one") as one, client(limited, key="key-two") as two:
        first = await one.post("/chat/completions", json=chat_body(max_tokens=10))
        second = await one.post("/chat/completions", json=chat_body(max_tokens=10))
        third = await one.post("/chat/completions", json=chat_body(max_tokens=10))
        other_key = await two.post("/chat/completions", json=chat_body(max_tokens=10))
        greedy = await two.post("/chat/completions", json=chat_body(max_tokens=990))
    assert (first.status_code, second.status_code, other_key.status_code) == (200, 200, 200)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert first.headers["x-ratelimit-remaining-tokens"] == "985"  # 5 prompt + 10 asked
    assert third.status_code == 429
    error = third.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "requests",
        "rate_limit_exceeded",
        None,
    )
    assert "on requests per min (RPM): Limit 2, Used 2, Requested 1." in error["message"]
    assert int(third.headers["retry-after"]) >= 1
    assert int(third.headers["retry-after-ms"]) > 0
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert greedy.status_code == 429 and greedy.json()["error"]["type"] == "tokens"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.12, "120ms"),
        (1, "1s"),
        (8.64, "8.64s"),
        (360, "6m0s"),
        (90.5, "1m30.5s"),
        (3723, "1h2m3s"),
    ],
)
def test_reset_durations_are_written_as_openai_does(seconds: float, text: str) -> None:
    assert duration(seconds) == text

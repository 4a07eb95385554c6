"""The Anthropic mock's own behaviour over real HTTP: auth, version, validation,
limits, faults, stream layout, prompt cache, and its parity with the OpenAI mock."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime
from typing import Any

import httpx
import pytest

from providers.anthropic.mock_request import MessagesRequest
from providers.anthropic.mock_usage import PromptCache
from providers.anthropic.tests.schema_check import problems
from providers.anthropic.tests.schemas import FORECAST_SCHEMA, LOOKUP_SCHEMA
from providers.core.testing import Serve
from providers.mock.config import MockConfig
from providers.mock.pieces import StopCut, cut_at_stop
from providers.mock.server import RunningMock
from providers.mock.text import answer_rng, answer_tokens

HELLO: list[dict[str, Any]] = [{"role": "user", "content": "Say hello to the fleet"}]
HEADERS = {"x-api-key": "mock-key", "anthropic-version": "2023-06-01"}
TOOL = {"name": "lookup", "input_schema": {"type": "object"}}


@pytest.fixture
async def mock(serve: Serve) -> RunningMock:
    return await serve()


def client(mock: RunningMock, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=mock.url("anthropic"), headers=HEADERS if headers is None else headers
    )


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "mock-claude", "max_tokens": 100, "messages": HELLO, **extra}


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["request_id"] == response.headers["request-id"]
    return response.status_code, payload["error"]["type"], payload["error"]["message"]


# -- stream layout -----------------------------------------------------------------------


def normalise(raw: bytes) -> bytes:
    return re.sub(rb'"(msg|toolu)_[0-9a-f]+"', rb'"\1_ID"', raw)


def expected_text_stream(tokens: list[str], stop: str) -> bytes:
    usage = (
        '"input_tokens":5,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
        '"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},'
    )
    events = [
        (
            "message_start",
            '{"type":"message_start","message":{"id":"msg_ID","type":"message",'
            '"role":"assistant","model":"mock-claude","content":[],"stop_reason":null,'
            f'"stop_sequence":null,"usage":{{{usage}"output_tokens":1,'
            '"service_tier":"standard"}}}',
        ),
        (
            "content_block_start",
            '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
        ),
        ("ping", '{"type":"ping"}'),
    ]
    events += [
        (
            "content_block_delta",
            '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
            + json.dumps(t)
            + "}}",
        )
        for t in tokens
    ]
    events += [
        ("content_block_stop", '{"type":"content_block_stop","index":0}'),
        (
            "message_delta",
            '{"type":"message_delta","delta":{"stop_reason":"' + stop + '","stop_sequence":null},'
            '"usage":{"input_tokens":5,"cache_creation_input_tokens":0,'
            f'"cache_read_input_tokens":0,"output_tokens":{len(tokens)}}}}}',
        ),
        ("message_stop", '{"type":"message_stop"}'),
    ]
    return "".join(f"event: {name}\ndata: {data}\n\n" for name, data in events).encode()


async def test_stream_bytes_match_the_reference_shape(mock: RunningMock) -> None:
    async with client(mock) as http:
        resp = await http.post("/messages", json=body(max_tokens=3, stream=True))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["request-id"].startswith("req_")
    tokens = answer_tokens(answer_rng(HELLO, None), 3)
    assert normalise(resp.content) == expected_text_stream(tokens, "max_tokens")


def sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (b.split("\n")[0].removeprefix("event: "), json.loads(b.split("\n")[1][6:]))
        for b in raw.split("\n\n")
        if b
    ]


def streamed_text(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(
        d["delta"]["text"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "text_delta"
    )


async def test_tool_input_streams_as_json_fragments(mock: RunningMock) -> None:
    tools = [
        {"name": "weather", "input_schema": FORECAST_SCHEMA},
        {"name": "search", "input_schema": LOOKUP_SCHEMA},
    ]
    payload = body(stream=True, tools=tools, tool_choice={"type": "any"})
    async with client(mock) as http:
        resp = await http.post("/messages", json=payload)
        whole = await http.post("/messages", json={**payload, "stream": False})
    events = sse(resp.text)
    fragments: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_delta":
            fragments[data["index"]] = (
                fragments.get(data["index"], "") + (data["delta"]["partial_json"])
            )
    assert sorted(fragments) == [0, 1]
    inputs = [json.loads(fragments[0]), json.loads(fragments[1])]
    assert problems(inputs[0], FORECAST_SCHEMA) == []
    assert problems(inputs[1], LOOKUP_SCHEMA) == []
    assert set(inputs[0]) == set(FORECAST_SCHEMA["properties"])
    # Deterministic: the same request answered whole carries the same inputs.
    assert [b["input"] for b in whole.json()["content"]] == inputs
    starts = [d["content_block"]["name"] for n, d in events if n == "content_block_start"]
    assert starts == ["weather", "search"]
    deltas = [d for n, d in events if n == "content_block_delta"]
    assert deltas[0]["delta"]["partial_json"] == ""  # as the API opens a tool block
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_a_named_tool_without_properties_gets_an_empty_object(mock: RunningMock) -> None:
    payload = body(tools=[TOOL], tool_choice={"type": "tool", "name": "lookup"})
    async with client(mock) as http:
        answer = (await http.post("/messages", json=payload)).json()
    assert [(b["name"], b["input"]) for b in answer["content"]] == [("lookup", {})]


def test_the_tests_schema_checker_catches_bad_values() -> None:
    good = {
        "city": "x",
        "days": 1,
        "units": "c",
        "tags": [],
        "exact": None,
        "when": {"day": 2, "note": None},
    }
    assert problems(good, FORECAST_SCHEMA) == []
    bad = {**good, "days": True, "units": "k", "extra": 1, "when": {"day": "2", "note": 3}}
    del bad["city"]
    assert len(problems(bad, FORECAST_SCHEMA)) == 6


# -- stop sequences and JSON output ----------------------------------------------------------


def test_cut_at_stop_takes_the_earliest_sequence() -> None:
    pieces = ["one", " two", " three", " four"]
    assert cut_at_stop(pieces, ["zzz", ""]) is None
    assert cut_at_stop(pieces, []) is None
    # The earliest wins, cutting inside a piece; at one position, the first listed.
    assert cut_at_stop(pieces, ["four", "wo th"]) == StopCut(["one", " t"], "wo th")
    assert cut_at_stop(pieces, ["two", " tw"]) == StopCut(["one"], " tw")
    assert cut_at_stop(pieces, [" tw", " t"]) == StopCut(["one"], " tw")
    assert cut_at_stop(pieces, ["one"]) == StopCut([], "one")


async def test_stop_sequences_cut_the_text(mock: RunningMock) -> None:
    text = "".join(answer_tokens(answer_rng(HELLO, None), 12))
    stop = text.split()[4]
    expected = text[: text.index(stop)]
    payload = body(max_tokens=12, stop_sequences=["never there", stop])
    async with client(mock) as http:
        whole = (await http.post("/messages", json=payload)).json()
        streamed = sse((await http.post("/messages", json={**payload, "stream": True})).text)
    assert whole["content"] == [{"type": "text", "text": expected}]
    assert (whole["stop_reason"], whole["stop_sequence"]) == ("stop_sequence", stop)
    deltas = [d for n, d in streamed if n == "content_block_delta"]
    assert streamed_text(streamed) == expected
    final = streamed[-2][1]
    assert final["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": stop}
    assert whole["usage"]["output_tokens"] == final["usage"]["output_tokens"] == len(deltas)
    assert len(deltas) < 12


async def test_a_stop_sequence_at_once_leaves_no_content(mock: RunningMock) -> None:
    first = answer_tokens(answer_rng(HELLO, None), 1)[0]
    payload = body(stop_sequences=[first])
    async with client(mock) as http:
        whole = (await http.post("/messages", json=payload)).json()
        streamed = sse((await http.post("/messages", json={**payload, "stream": True})).text)
    assert whole["content"] == [] and whole["stop_sequence"] == first
    assert whole["usage"]["output_tokens"] == 0
    names = [n for n, _ in streamed]
    assert names == ["message_start", "ping", "message_delta", "message_stop"]
    assert streamed[2][1]["delta"]["stop_reason"] == "stop_sequence"


async def test_output_format_answers_an_instance_of_the_schema(mock: RunningMock) -> None:
    fmt = {"format": {"type": "json_schema", "schema": FORECAST_SCHEMA}}
    async with client(mock) as http:
        whole = (await http.post("/messages", json=body(output_config=fmt))).json()
        streamed = await http.post("/messages", json=body(output_config=fmt, stream=True))
        short = (await http.post("/messages", json=body(output_config=fmt, max_tokens=3))).json()
        stopped = (
            await http.post("/messages", json=body(output_config=fmt, stop_sequences=['"units"']))
        ).json()
        wrong = await http.post(
            "/messages", json=body(output_config={"format": {"type": "json_object"}})
        )
        schemaless = await http.post(
            "/messages", json=body(output_config={"format": {"type": "json_schema"}})
        )
    text = whole["content"][0]["text"]
    value = json.loads(text)
    assert problems(value, FORECAST_SCHEMA) == []
    assert set(value) >= set(FORECAST_SCHEMA["required"])
    assert whole["stop_reason"] == "end_turn"
    assert streamed_text(sse(streamed.text)) == text
    assert short["stop_reason"] == "max_tokens" and short["usage"]["output_tokens"] == 3
    assert text.startswith(short["content"][0]["text"])
    assert stopped["content"][0]["text"] == text[: text.index('"units"')]
    assert error_of(wrong)[:2] == (400, "invalid_request_error")
    assert "schema: Field required" in error_of(schemaless)[2]


# -- auth and version ----------------------------------------------------------------------


async def test_auth_and_version_rules(serve: Serve) -> None:
    mock = await serve()
    cases: list[tuple[dict[str, str], int, str]] = [
        ({"anthropic-version": "2023-06-01"}, 401, "x-api-key header is required"),
        ({"x-api-key": "sk-ant-wrong-key-123456", "anthropic-version": "2023-06-01"}, 401, ""),
        ({"x-api-key": "mock-key"}, 400, "anthropic-version: header is required"),
        ({"x-api-key": "mock-key", "anthropic-version": "latest"}, 400, "not a valid version"),
    ]
    async with client(mock, {}) as http:
        for headers, status, message in cases:
            resp = await http.post("/messages", json=body(), headers=headers)
            got_status, _, got_message = error_of(resp)
            assert got_status == status
            assert message in got_message
            assert "wrong-key" not in resp.text
        bearer = {"Authorization": "Bearer mock-key", "anthropic-version": "2026-10-21"}
        assert (await http.post("/messages", json=body(), headers=bearer)).status_code == 200
        missing = await http.get("/nowhere", headers=HEADERS)
        assert error_of(missing)[:2] == (404, "not_found_error")
    anyone = await serve(accept_any_key=True)
    async with client(anyone, {**HEADERS, "x-api-key": "whatever"}) as http:
        assert (await http.post("/messages", json=body())).status_code == 200


# -- validation ----------------------------------------------------------------------------

TOOL_TURN = {
    "role": "assistant",
    "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"max_tokens": 0}, "max_tokens: Input should be an integer >= 1"),
        ({"messages": []}, "at least one message is required"),
        ({"messages": [{"role": "system", "content": "x"}, *HELLO]}, 'Unexpected role "system"'),
        (
            {"messages": [{"role": "assistant", "content": "x"}]},
            'first message must use the "user"',
        ),
        ({"messages": [*HELLO, *HELLO]}, 'multiple "user" roles in a row'),
        ({"messages": [{"role": "user", "content": ""}]}, "must be non-empty"),
        ({"messages": [*HELLO, TOOL_TURN]}, "`tool_use` ids were found without `tool_result`"),
        (
            {
                "messages": [
                    *HELLO,
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]},
                ]
            },
            "unexpected `tool_use_id` found in `tool_result` blocks: x",
        ),
        ({"seed": 1}, "seed: Extra inputs are not permitted"),
        ({"stop": ["x"]}, "stop: Extra inputs are not permitted"),
        ({"temperature": 1.5}, "temperature: Input should be a number between 0 and 1"),
        ({"tool_choice": {"type": "auto"}}, "tool_choice may only be specified while providing"),
        ({"tools": [{"name": "f"}]}, "input_schema: Field required"),
        ({"system": 5}, "system: Input should be a valid string"),
    ],
)
async def test_request_validation(mock: RunningMock, change: dict[str, Any], message: str) -> None:
    payload = {k: v for k, v in {**body(), **change}.items() if v is not None}
    async with client(mock) as http:
        resp = await http.post("/messages", json=payload)
    status, kind, text = error_of(resp)
    assert (status, kind) == (400, "invalid_request_error")
    assert message in text


async def test_a_complete_tool_exchange_is_accepted(mock: RunningMock) -> None:
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]}
    payload = body(messages=[*HELLO, TOOL_TURN, result], tools=[TOOL])
    async with client(mock) as http:
        resp = await http.post("/messages", json=payload)
    assert resp.status_code == 200, resp.text
    assert resp.json()["content"][0]["type"] == "text"


async def test_count_tokens_takes_no_max_tokens(mock: RunningMock) -> None:
    async with client(mock) as http:
        only_prompt = {"model": "mock-claude", "messages": HELLO}
        counted = await http.post("/messages/count_tokens", json=only_prompt)
        refused = await http.post("/messages/count_tokens", json=body())
    assert counted.json() == {"input_tokens": 5}
    assert "max_tokens: Extra inputs are not permitted" in error_of(refused)[2]


async def test_models_pages(mock: RunningMock) -> None:
    models = list(MockConfig().models)
    async with client(mock) as http:
        first = (await http.get("/models", params={"limit": 2})).json()
        after = (await http.get("/models", params={"after_id": models[1]})).json()
        before = (await http.get("/models", params={"before_id": models[3], "limit": 2})).json()
        bad = await http.get("/models", params={"limit": 0})
    assert [m["id"] for m in first["data"]] == models[:2]
    assert (first["has_more"], first["first_id"], first["last_id"]) == (True, *models[:2])
    assert [m["id"] for m in after["data"]] == models[2:] and after["has_more"] is False
    assert [m["id"] for m in before["data"]] == models[1:3]
    datetime.fromisoformat(first["data"][0]["created_at"])
    assert error_of(bad)[0] == 400


# -- limits --------------------------------------------------------------------------------


async def test_rate_limit_headers_and_429(serve: Serve) -> None:
    mock = await serve(requests_per_minute=2, tokens_per_minute=10_000)
    async with client(mock) as http:
        answers = [await http.post("/messages", json=body(max_tokens=3)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    first, refused = answers[0].headers, answers[2]
    assert first["anthropic-ratelimit-requests-limit"] == "2"
    assert first["anthropic-ratelimit-requests-remaining"] == "1"
    assert first["anthropic-ratelimit-tokens-limit"] == "10000"
    assert first["anthropic-ratelimit-tokens-remaining"] == str(10_000 - 5 - 3)
    reset = datetime.fromisoformat(first["anthropic-ratelimit-requests-reset"])
    assert reset.tzinfo is not None
    assert error_of(refused)[:2] == (429, "rate_limit_error")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"


async def test_unknown_model_and_context_window(serve: Serve) -> None:
    mock = await serve(context_window=50)
    async with client(mock) as http:
        missing = await http.post("/messages", json=body(model="claude-nope"))
        over = await http.post("/messages", json=body(max_tokens=46))
        fits = await http.post("/messages", json=body(max_tokens=45))
    assert error_of(missing) == (404, "not_found_error", "model: claude-nope")
    assert error_of(over)[:2] == (400, "invalid_request_error")
    assert "exceed context limit: 5 + 46 > 50" in error_of(over)[2]
    assert fits.status_code == 200


# -- faults --------------------------------------------------------------------------------


async def test_drop_after_cuts_the_stream_after_n_tokens(mock: RunningMock) -> None:
    seen: list[str] = []
    async with client(mock) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream(
                "POST",
                "/messages",
                json=body(stream=True),
                headers={"x-mock-fault": "drop-after:2"},
            ) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data: ") and '"text_delta"' in line:
                        seen.append(json.loads(line[6:])["delta"]["text"])
    assert len(seen) == 2


async def test_stall_and_stream_error_faults(mock: RunningMock) -> None:
    async with client(mock) as http:
        started = asyncio.get_running_loop().time()
        stalled = await http.post(
            "/messages", json=body(max_tokens=2), headers={"x-mock-fault": "stall:0.3"}
        )
        assert asyncio.get_running_loop().time() - started >= 0.3
        assert stalled.status_code == 200
        streamed = await http.post(
            "/messages",
            json=body(stream=True),
            headers={"x-mock-fault": "stream-error-after:1:429"},
        )
        whole = await http.post(
            "/messages", json=body(), headers={"x-mock-fault": "stream-error-after:1"}
        )
        stats = (await http.get(f"{mock.root}/_mock/stats")).json()
    names = re.findall(r"^event: (\w+)$", streamed.text, re.MULTILINE)
    assert names[-1] == "error" and "message_stop" not in names
    assert names.count("content_block_delta") == 1
    assert '"type":"rate_limit_error"' in streamed.text.splitlines()[-2]
    assert error_of(whole)[:2] == (529, "overloaded_error")
    assert stats["faults_by_kind"]["stream-error"] == 2
    assert stats["requests"]["/anthropic/v1/messages"] == 3


# -- prompt cache --------------------------------------------------------------------------


def test_prompt_cache_expires_and_refreshes() -> None:
    now = [0.0]
    cache = PromptCache(clock=lambda: now[0])
    marked = {"type": "text", "text": "one two three", "cache_control": {"type": "ephemeral"}}
    req = MessagesRequest(
        model="m",
        messages=[{"role": "user", "content": [marked, {"type": "text", "text": "four"}]}],
        system=[],
        tools=[],
        tool_choice=None,
        max_tokens=1,
        stream=False,
    )
    assert cache.charge("k", req, 4).created == 3
    now[0] = 299.0
    assert cache.charge("k", req, 4).read == 3  # and refreshed for another 5 minutes
    now[0] = 598.0
    assert cache.charge("k", req, 4).read == 3
    assert cache.charge("other-key", req, 4).created == 3
    now[0] = 1000.0
    charge = cache.charge("k", req, 4)
    assert (charge.created, charge.read, charge.input_tokens) == (3, 0, 1)


# -- parity with the OpenAI mock -------------------------------------------------------------


async def test_same_conversation_same_answer_as_the_openai_mock(mock: RunningMock) -> None:
    """Same text and token counts, and tools called on the same turns, in both dialects."""
    openai = httpx.AsyncClient(
        base_url=mock.url("openai"), headers={"Authorization": "Bearer mock-key"}
    )
    function = {"name": "lookup", "parameters": LOOKUP_SCHEMA}
    lookup = {"name": "lookup", "input_schema": LOOKUP_SCHEMA}
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}
    conversations: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = [
        (HELLO, HELLO),
        ([{"role": "user", "content": "please use tools"}],) * 2,
        (
            [
                {"role": "user", "content": "please use tools"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny and warm"},
            ],
            [
                {"role": "user", "content": "please use tools"},
                {"role": "assistant", "content": [tool_use]},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": "sunny and warm",
                        }
                    ],
                },
            ],
        ),
    ]
    async with openai, client(mock) as http:
        for theirs_messages, our_messages in conversations:
            theirs = await openai.post(
                "/chat/completions",
                json={
                    "model": "mock-claude",
                    "messages": theirs_messages,
                    "max_tokens": 6,
                    "tools": [{"type": "function", "function": function}],
                },
            )
            ours = await http.post(
                "/messages", json=body(messages=our_messages, max_tokens=6, tools=[lookup])
            )
            assert theirs.status_code == ours.status_code == 200, ours.text
            choice = theirs.json()["choices"][0]["message"]
            content = ours.json()["content"]
            if choice.get("tool_calls"):
                arguments = json.loads(choice["tool_calls"][0]["function"]["arguments"])
                assert [(b["name"], b["input"]) for b in content] == [("lookup", arguments)]
            else:
                assert content == [{"type": "text", "text": choice["content"]}]
            assert ours.json()["usage"]["input_tokens"] == theirs.json()["usage"]["prompt_tokens"]


async def test_same_json_output_as_the_openai_mock(mock: RunningMock) -> None:
    openai = httpx.AsyncClient(
        base_url=mock.url("openai"), headers={"Authorization": "Bearer mock-key"}
    )
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": FORECAST_SCHEMA}}
    async with openai, client(mock) as http:
        theirs = await openai.post(
            "/chat/completions",
            json={"model": "mock-claude", "messages": HELLO, "response_format": fmt},
        )
        ours = await http.post(
            "/messages",
            json=body(output_config={"format": {"type": "json_schema", "schema": FORECAST_SCHEMA}}),
        )
    text = theirs.json()["choices"][0]["message"]["content"]
    assert ours.json()["content"] == [{"type": "text", "text": text}]
    assert ours.json()["usage"]["output_tokens"] == theirs.json()["usage"]["completion_tokens"]

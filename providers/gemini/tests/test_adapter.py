"""The Gemini adapter, its mapping, parsing and error table against `httpx.MockTransport`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from contracts.errors import (
    BadRequest,
    ContentFiltered,
    ContractError,
    FleetError,
    Forbidden,
    InternalError,
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
from providers.gemini.adapter import Gemini
from providers.gemini.errors import ERRORS, error_details, parse_duration
from providers.gemini.mapping import generate_body
from providers.options import ModelOptions

CANARY = "AIza-canary-0123456789abcdefCANARY"
SECRET = Secret({"api_key": CANARY})
BASE = "https://gemini.test/v1beta"
HELLO = [Message(role="user", content="hi")]

Make = Callable[..., Gemini]


@pytest.fixture
def adapter(pools: list[HttpClientPool]) -> Make:
    def make(handler: Handler) -> Gemini:
        pool = HttpClientPool(transport=httpx.MockTransport(handler))
        pools.append(pool)
        return Gemini(ProviderContext("gemini", pool, BASE))

    return make


def response(
    parts: list[dict[str, Any]], finish: str | None = "STOP", **usage: int
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": usage or {"promptTokenCount": 3, "candidatesTokenCount": 1},
        "modelVersion": "gemini-test",
    }


def google_error(code: int, status: str, message: str, *details: dict[str, Any]) -> bytes:
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        body["details"] = list(details)
    return json.dumps({"error": body}, indent=2).encode()


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


def quota_failure(quota_id: str, value: str = "15") -> dict[str, Any]:
    violation = {"quotaMetric": "m", "quotaId": quota_id, "quotaValue": value}
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]}


def reason(name: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": name}


def sse(*chunks: dict[str, Any], crlf: bool = True) -> bytes:
    sep = "\r\n\r\n" if crlf else "\n\n"
    return "".join(f"data: {json.dumps(c)}{sep}" for c in chunks).encode()


# -- request mapping -------------------------------------------------------------------


def test_body_maps_every_option() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    options = ModelOptions(
        temperature=0.5,
        top_p=0.9,
        max_tokens=99,
        stop=("END",),
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        reasoning_effort="low",
        top_logprobs=3,
        tool_choice={"type": "function", "function": {"name": "f"}},
        user="u",
        metadata={"k": "v"},
    )
    req = ChatRequest(
        model="gemini-2.5-flash",
        messages=[Message(role="system", content="be brief"), *HELLO],
        tools=[Tool(name="f", description="does f", parameters=schema)],
        options=options,
    )
    body = generate_body("gemini", req)
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {"name": "f", "parametersJsonSchema": schema, "description": "does f"}
            ]
        }
    ]
    assert body["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}
    }
    assert body["generationConfig"] == {
        "temperature": 0.5,
        "topP": 0.9,
        "maxOutputTokens": 99,
        "seed": 7,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
        "thinkingConfig": {"thinkingBudget": 1024},
        "responseLogprobs": True,
        "logprobs": 3,
    }


@pytest.mark.parametrize(
    ("model", "effort", "config"),
    [
        ("gemini-2.5-pro", "high", {"thinkingBudget": 24576}),
        ("models/gemini-2.0-flash", "none", {"thinkingBudget": 0}),
        ("gemini-3-pro-preview", "medium", {"thinkingLevel": "MEDIUM"}),
    ],
)
def test_reasoning_effort(model: str, effort: str, config: dict[str, Any]) -> None:
    req = ChatRequest(model=model, messages=HELLO, options=ModelOptions(reasoning_effort=effort))
    assert generate_body("gemini", req)["generationConfig"]["thinkingConfig"] == config


@pytest.mark.parametrize(
    "options",
    [
        ModelOptions(response_format={"type": "grammar"}),
        ModelOptions(tool_choice="sometimes"),
        ModelOptions(tool_choice={"name": "f"}),  # a named choice, no tools
        ModelOptions(reasoning_effort="none"),  # no thinkingLevel for "none"
    ],
)
def test_inexpressible_options_are_refused(options: ModelOptions) -> None:
    req = ChatRequest(model="gemini-3-flash", messages=HELLO, options=options)
    with pytest.raises(BadRequest):
        generate_body("gemini", req)


def test_tool_turns_become_function_parts() -> None:
    calls = [
        ToolCall(id="call_0", name="a", arguments='{"x": 1}'),
        ToolCall(id="g-id-7", name="b", arguments=""),
    ]
    messages = [
        Message(role="user", content="use tools"),
        Message(role="assistant", content=None, tool_calls=calls),
        Message(role="tool", content='{"ok": true}', tool_call_id="call_0"),
        Message(role="tool", content="[1, 2]", tool_call_id="g-id-7"),
        Message(role="user", content="and now?"),
    ]
    body = generate_body("gemini", ChatRequest(model="m", messages=messages))
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "use tools"}]},
        {
            "role": "model",
            "parts": [
                # The minted call_0 is not sent back; Google's own id is.
                {"functionCall": {"name": "a", "args": {"x": 1}}},
                {"functionCall": {"name": "b", "args": {}, "id": "g-id-7"}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "a", "response": {"ok": True}}},
                {"functionResponse": {"name": "b", "response": {"result": [1, 2]}, "id": "g-id-7"}},
                {"text": "and now?"},
            ],
        },
    ]


def test_a_tool_result_answering_nothing_is_refused() -> None:
    messages = [*HELLO, Message(role="tool", content="x", tool_call_id="nope")]
    with pytest.raises(ContractError):
        generate_body("gemini", ChatRequest(model="m", messages=messages))


def test_images() -> None:
    parts = [
        ContentPart(type="text", text="what is this"),
        ContentPart(type="image_url", image_url="data:image/png;base64,AAAA"),
        ContentPart(type="image_url", image_url="https://x.test/cat.JPG?size=2"),
    ]
    body = generate_body(
        "gemini", ChatRequest(model="m", messages=[Message(role="user", content=parts)])
    )
    assert body["contents"][0]["parts"] == [
        {"text": "what is this"},
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/cat.JPG?size=2"}},
    ]
    unknown = [ContentPart(type="image_url", image_url="https://x.test/picture")]
    with pytest.raises(BadRequest, match="image type"):
        generate_body(
            "gemini", ChatRequest(model="m", messages=[Message(role="user", content=unknown)])
        )


# -- chat ------------------------------------------------------------------------------


async def test_chat_request_and_answer(adapter: Make) -> None:
    usage: dict[str, Any] = {
        "promptTokenCount": 10,
        "cachedContentTokenCount": 4,
        "candidatesTokenCount": 5,
        "thoughtsTokenCount": 7,
        "totalTokenCount": 22,
    }
    recorder = Recorder(
        lambda _: httpx.Response(
            200, json=response([{"text": "thinking", "thought": True}, {"text": "yo"}], **usage)
        )
    )
    result = await adapter(recorder).chat(ChatRequest(model="models/g 1", messages=HELLO), SECRET)
    request = recorder.requests[-1]
    assert request.url.raw_path == b"/v1beta/models/g%201:generateContent"
    assert request.headers["x-goog-api-key"] == CANARY
    assert result.message.content == "yo"
    assert result.finish_reason == "stop"
    assert result.usage == Usage(
        input_tokens=10,
        output_tokens=12,
        total_tokens=22,
        cached_input_tokens=4,
        reasoning_tokens=7,
    )


async def test_chat_function_calls(adapter: Make) -> None:
    parts = [
        {"functionCall": {"name": "a", "args": {"q": "x"}}},
        {"functionCall": {"name": "b", "args": {}, "id": "g1"}},
    ]
    result = await adapter(lambda _: httpx.Response(200, json=response(parts))).chat(
        ChatRequest(model="m", messages=HELLO), SECRET
    )
    assert result.finish_reason == "tool_calls"
    assert result.message.content is None
    assert result.message.tool_calls == [
        ToolCall(id="call_0", name="a", arguments='{"q":"x"}'),
        ToolCall(id="g1", name="b", arguments="{}"),
    ]


@pytest.mark.parametrize(
    ("finish", "expected"),
    [("MAX_TOKENS", "length"), ("OTHER", "other"), ("LANGUAGE", "language")],
)
async def test_finish_reasons(adapter: Make, finish: str, expected: str) -> None:
    body = response([{"text": "x"}], finish)
    result = await adapter(lambda _: httpx.Response(200, json=body)).chat(
        ChatRequest(model="m", messages=HELLO), SECRET
    )
    assert result.finish_reason == expected


async def test_filters_raise(adapter: Make) -> None:
    blocked = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
    with pytest.raises(ContentFiltered, match="PROHIBITED_CONTENT"):
        await adapter(lambda _: httpx.Response(200, json=blocked)).chat(
            ChatRequest(model="m", messages=HELLO), SECRET
        )
    stopped = response([], "SAFETY")
    stopped["candidates"][0]["safetyRatings"] = [
        {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "HIGH", "blocked": True},
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "LOW"},
    ]
    with pytest.raises(ContentFiltered, match="SAFETY; HARM_CATEGORY_HATE_SPEECH\\)") as info:
        await adapter(lambda _: httpx.Response(200, json=stopped)).chat(
            ChatRequest(model="m", messages=HELLO), SECRET
        )
    assert not info.value.retryable
    malformed = response([], "MALFORMED_FUNCTION_CALL")
    with pytest.raises(InternalError, match="malformed function call"):
        await adapter(lambda _: httpx.Response(200, json=malformed)).chat(
            ChatRequest(model="m", messages=HELLO), SECRET
        )


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "cls", "retry_after"),
    [
        (
            400,
            google_error(400, "INVALID_ARGUMENT", "API key not valid.", reason("API_KEY_INVALID")),
            Unauthorized,
            None,
        ),
        (400, google_error(400, "FAILED_PRECONDITION", "no"), BadRequest, None),
        (403, google_error(403, "PERMISSION_DENIED", "no"), Forbidden, None),
        (404, google_error(404, "NOT_FOUND", "models/x is not found"), NotFound, None),
        (
            429,
            google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "quota",
                quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
                retry_info("17s"),
            ),
            RateLimited,
            17.0,
        ),
        (429, google_error(429, "RESOURCE_EXHAUSTED", "x", retry_info("0.5s")), RateLimited, 0.5),
        (
            429,
            google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "quota",
                quota_failure("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
                retry_info("25s"),
            ),
            QuotaExceeded,
            None,
        ),
        (
            429,
            google_error(429, "RESOURCE_EXHAUSTED", "free tier", quota_failure("PerMinute", "0")),
            QuotaExceeded,
            None,
        ),
        (
            503,
            google_error(503, "UNAVAILABLE", "The model is overloaded."),
            ProviderUnavailable,
            None,
        ),
        (504, google_error(504, "DEADLINE_EXCEEDED", "late"), ProviderUnavailable, None),
        (502, b"<html>Bad Gateway</html>", ProviderUnavailable, None),
    ],
)
async def test_error_table(
    adapter: Make, status: int, body: bytes, cls: type[FleetError], retry_after: float | None
) -> None:
    handler = lambda _: httpx.Response(status, content=body)  # noqa: E731
    with pytest.raises(FleetError) as info:
        await adapter(handler).chat(ChatRequest(model="m", messages=HELLO), SECRET)
    error = info.value
    assert type(error) is cls, error
    assert error.provider_status == status
    assert error.retry_after == retry_after
    assert error.message.startswith("gemini: HTTP")
    assert CANARY not in error.message


def test_error_details_and_durations() -> None:
    assert parse_duration("17s") == 17.0
    assert parse_duration("0.250s") == 0.25
    assert parse_duration("soon") is None
    details = error_details(
        [{"error": {"details": [reason("API_KEY_INVALID"), retry_info("3s"), "junk"]}}]
    )
    assert (details.reason, details.retry_delay, details.quota_exhausted) == (
        "API_KEY_INVALID",
        3.0,
        False,
    )


def test_a_key_echoed_by_google_is_scrubbed() -> None:
    body = google_error(400, "INVALID_ARGUMENT", f"bad key {CANARY}", reason("API_KEY_INVALID"))
    error = ERRORS.from_response("gemini", 400, {}, body, SECRET)
    assert CANARY not in error.message


# -- streams ---------------------------------------------------------------------------


def _stream_chunks() -> list[dict[str, Any]]:
    return [
        response([{"text": "plan", "thought": True}], None, promptTokenCount=3),
        response([{"text": "Hel"}], None, promptTokenCount=3, candidatesTokenCount=1),
        response(
            [{"text": "lo é"}],
            "STOP",
            promptTokenCount=3,
            candidatesTokenCount=2,
            thoughtsTokenCount=1,
        ),
    ]


@pytest.mark.parametrize("crlf", [True, False])
@pytest.mark.parametrize("pieces", [1, 7, 50])
async def test_stream_text(adapter: Make, crlf: bool, pieces: int) -> None:
    body = sse(*_stream_chunks(), crlf=crlf)
    recorder = Recorder(lambda _: stream_response(body, pieces=pieces))
    events = await collect(
        adapter(recorder).stream_chat(ChatRequest(model="m", messages=HELLO), SECRET)
    )
    assert recorder.requests[-1].url.raw_path == b"/v1beta/models/m:streamGenerateContent?alt=sse"
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo é"]
    assert events[-1] == StreamEnd(
        finish_reason="stop",
        usage=Usage(input_tokens=3, output_tokens=3, total_tokens=6, reasoning_tokens=1),
    )


async def test_stream_function_calls(adapter: Make) -> None:
    body = sse(
        response([{"functionCall": {"name": "a", "args": {"q": 1}}}], None),
        response([{"functionCall": {"name": "b", "args": {}}}], "STOP"),
    )
    events = await collect(
        adapter(lambda _: stream_response(body)).stream_chat(
            ChatRequest(model="m", messages=HELLO), SECRET
        )
    )
    assert [e.delta for e in events if isinstance(e, ToolDelta)] == [
        ToolCallDelta(index=0, id="call_0", name="a", arguments='{"q":1}'),
        ToolCallDelta(index=1, id="call_1", name="b", arguments="{}"),
    ]
    assert isinstance(events[-1], StreamEnd) and events[-1].finish_reason == "tool_calls"


async def test_a_cut_stream_is_unavailable(adapter: Make) -> None:
    body = sse(response([{"text": "Hel"}], None))
    stream = adapter(lambda _: stream_response(body)).stream_chat(
        ChatRequest(model="m", messages=HELLO), SECRET
    )
    with pytest.raises(ProviderUnavailable, match="without a finish reason"):
        await collect(stream)


async def test_an_error_inside_a_stream(adapter: Make) -> None:
    error = json.loads(google_error(429, "RESOURCE_EXHAUSTED", "slow down", retry_info("2s")))
    body = sse(response([{"text": "Hel"}], None), error)
    got: list[Any] = []
    with pytest.raises(RateLimited) as info:
        async for event in adapter(lambda _: stream_response(body)).stream_chat(
            ChatRequest(model="m", messages=HELLO), SECRET
        ):
            got.append(event)
    assert [e.text for e in got] == ["Hel"]
    assert info.value.provider_status == 429
    assert info.value.retry_after == 2.0
    assert info.value.message.startswith("gemini: stream error RESOURCE_EXHAUSTED")


async def test_a_blocked_prompt_in_a_stream(adapter: Make) -> None:
    body = sse({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {}})
    with pytest.raises(ContentFiltered, match="prompt"):
        await collect(
            adapter(lambda _: stream_response(body)).stream_chat(
                ChatRequest(model="m", messages=HELLO), SECRET
            )
        )


# -- embeddings and verify -----------------------------------------------------------------


async def test_embed_one_and_batches(adapter: Make) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path.endswith(":embedContent"):
            return httpx.Response(200, json={"embedding": {"values": [1.0, 2.0]}})
        rows = [{"values": [float(i), 0.5]} for i, _ in enumerate(body["requests"])]
        return httpx.Response(
            200, json={"embeddings": rows, "usageMetadata": {"promptTokenCount": 2}}
        )

    recorder = Recorder(handler)
    gemini = adapter(recorder)
    one = await gemini.embed(
        EmbedRequest(model="e", inputs=["a"], input_type="query", dimensions=2), SECRET
    )
    assert (one.count, one.dims, one.usage) == (1, 2, Usage())
    assert recorder.body == {
        "content": {"parts": [{"text": "a"}]},
        "taskType": "RETRIEVAL_QUERY",
        "outputDimensionality": 2,
    }
    many = await gemini.embed(
        EmbedRequest(model="e", inputs=[str(i) for i in range(250)], input_type="clustering"),
        SECRET,
    )
    assert many.count == 250 and many.usage.input_tokens == 6
    sizes = [len(json.loads(r.content)["requests"]) for r in recorder.requests[1:]]
    assert sizes == [100, 100, 50]
    first = json.loads(recorder.requests[1].content)["requests"][0]
    assert first == {
        "model": "models/e",
        "content": {"parts": [{"text": "0"}]},
        "taskType": "CLUSTERING",
    }
    with pytest.raises(BadRequest):
        await gemini.embed(EmbedRequest(model="e", inputs=["a"], input_type="poetry"), SECRET)


async def test_verify(adapter: Make) -> None:
    ok = await adapter(
        lambda _: httpx.Response(200, json={"models": [{"name": "models/a"}], "nextPageToken": "t"})
    ).verify(SECRET)
    assert ok.ok and ok.detail == "1+ models visible"
    body = google_error(400, "INVALID_ARGUMENT", "API key not valid.", reason("API_KEY_INVALID"))
    bad = await adapter(lambda _: httpx.Response(400, content=body)).verify(SECRET)
    assert not bad.ok and "API key not valid" in bad.detail
    with pytest.raises(NotFound):
        await adapter(
            lambda _: httpx.Response(404, content=google_error(404, "NOT_FOUND", "x"))
        ).verify(SECRET)


async def test_a_raw_json_error_mid_stream_is_raised_as_itself(adapter: Make) -> None:
    # Google may write a pretty-printed error outside SSE framing, between events.
    error = google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted.")
    body = sse(response([{"text": "Hel"}], None)) + error + b"\n"
    with pytest.raises(RateLimited, match="RESOURCE_EXHAUSTED"):
        await collect(
            adapter(lambda _: stream_response(body)).stream_chat(
                ChatRequest(model="m", messages=HELLO), SECRET
            )
        )

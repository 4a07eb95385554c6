"""ConverseStream's event stream through the adapter, against `httpx.MockTransport`:
frames cut anywhere, corrupt and truncated bodies, exception and error frames."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from botocore.eventstream import EventStreamBuffer

from contracts.errors import (
    BadRequest,
    ContentFiltered,
    FleetError,
    InternalError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
)
from contracts.frames import ToolCallDelta, Usage
from contracts.jobs import Message
from providers.bedrock.adapter import Bedrock
from providers.bedrock.mock_wire import error_frame, event, frame
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.testing import Recorder, collect
from providers.core.types import ChatRequest, Secret, StreamEnd, StreamEvent, TextDelta, ToolDelta

SECRET_KEY = "stream-test-secret-CANARY-0123456789"
SECRET = Secret(
    {"access_key_id": "AKIDSTREAM", "secret_access_key": SECRET_KEY, "region": "us-east-1"}
)
BASE = "https://bedrock-runtime.us-east-1.amazonaws.com"
REQUEST = ChatRequest(model="m.model-v1:0", messages=[Message(role="user", content="hi")])
USAGE = {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5, "cacheReadInputTokens": 4}


def text_stream(*texts: str, stop: str = "end_turn") -> bytes:
    body = event("messageStart", {"role": "assistant"})
    for text in texts:
        body += event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}})
    body += event("contentBlockStop", {"contentBlockIndex": 0})
    body += event("messageStop", {"stopReason": stop})
    return body + event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 7}})


def exception(kind: str, payload: bytes) -> bytes:
    headers = [
        (":exception-type", kind),
        (":content-type", "application/json"),
        (":message-type", "exception"),
    ]
    return frame(headers, payload)


async def chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def streamed(body: bytes, size: int = 7) -> httpx.Response:
    headers = {"content-type": "application/vnd.amazon.eventstream"}
    return httpx.Response(200, headers=headers, content=chunks(body, size))


@pytest.fixture
def adapter(
    pools: list[HttpClientPool],
) -> Callable[[Callable[[httpx.Request], httpx.Response]], Bedrock]:
    def build(handler: Callable[[httpx.Request], httpx.Response]) -> Bedrock:
        pool = HttpClientPool(transport=httpx.MockTransport(Recorder(handler)))
        pools.append(pool)
        return Bedrock(ProviderContext("bedrock", pool, BASE))

    return build


async def run(adapter: Bedrock) -> tuple[list[StreamEvent], FleetError | None]:
    events: list[StreamEvent] = []
    try:
        async for e in adapter.stream_chat(REQUEST, SECRET):
            events.append(e)
    except FleetError as exc:
        return events, exc
    return events, None


def test_the_mock_encoder_is_read_by_botocore() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "é"}}))
    buffer.add_data(error_frame("ThrottlingException", "slow down"))
    first, second = list(buffer)
    assert first.headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert b'"p":"' in first.payload and "é".encode() in first.payload
    assert second.headers[":error-code"] == "ThrottlingException" and second.payload == b""


@pytest.mark.parametrize("size", [1, 3, 16, 61, 4096])
async def test_frames_cut_anywhere(adapter: Any, size: int) -> None:
    recorder: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        recorder.append(request)
        return streamed(text_stream("Hel", "lo ", "wörld"), size)

    events = await collect(adapter(handler).stream_chat(REQUEST, SECRET))
    assert events == [
        TextDelta("Hel"),
        TextDelta("lo "),
        TextDelta("wörld"),
        StreamEnd(
            "stop",
            Usage(input_tokens=7, output_tokens=2, total_tokens=9, cached_input_tokens=4),
        ),
    ]
    sent = recorder[0]
    assert sent.url.raw_path == b"/model/m.model-v1:0/converse-stream"
    assert sent.headers["accept"] == "application/vnd.amazon.eventstream"
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDSTREAM/")


async def test_tool_calls_stream_as_deltas(adapter: Any) -> None:
    body = event("messageStart", {"role": "assistant"})
    body += event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Let me"}})
    body += event("contentBlockStop", {"contentBlockIndex": 0})
    for index, (tid, name) in enumerate([("t1", "a"), ("t2", "b")], start=1):
        start = {"toolUse": {"toolUseId": tid, "name": name}}
        body += event("contentBlockStart", {"contentBlockIndex": index, "start": start})
        for part in ('{"q":', '"x"}'):
            delta = {"toolUse": {"input": part}}
            body += event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta})
        body += event("contentBlockStop", {"contentBlockIndex": index})
    reasoning = {"reasoningContent": {"text": "thinking"}}
    body += event("contentBlockDelta", {"contentBlockIndex": 3, "delta": reasoning})
    body += event("messageStop", {"stopReason": "tool_use"})
    body += event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 1}})
    events = await collect(adapter(lambda r: streamed(body)).stream_chat(REQUEST, SECRET))
    assert [e.delta for e in events if isinstance(e, ToolDelta)] == [
        ToolCallDelta(index=0, id="t1", name="a"),
        ToolCallDelta(index=0, arguments='{"q":'),
        ToolCallDelta(index=0, arguments='"x"}'),
        ToolCallDelta(index=1, id="t2", name="b"),
        ToolCallDelta(index=1, arguments='{"q":'),
        ToolCallDelta(index=1, arguments='"x"}'),
    ]
    assert events[0] == TextDelta("Let me")
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "tool_calls"


def corrupt(body: bytes, offset: int) -> bytes:
    return body[:offset] + bytes([body[offset] ^ 0xFF]) + body[offset + 1 :]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (1, "corrupt event-stream frame"),  # total length: the prelude CRC no longer matches
        (9, "corrupt event-stream frame"),  # the prelude CRC itself
        (30, "corrupt event-stream frame"),  # a header byte: the message CRC fails
    ],
)
async def test_corrupt_frames_end_the_stream_at_once(
    adapter: Any, where: int, message: str
) -> None:
    second = event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}})
    body = event("messageStart", {"role": "assistant"}) + corrupt(second, where) + text_stream()
    events, error = await run(adapter(lambda r: streamed(body, 5)))
    assert isinstance(error, ProviderUnavailable) and error.retryable
    assert message in error.message and error.message.startswith("bedrock: ")
    assert not events


async def test_a_corrupt_message_crc(adapter: Any) -> None:
    first = event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "ok"}})
    bad = bytearray(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}}))
    bad[-1] ^= 0x01
    body = event("messageStart", {"role": "assistant"}) + first + bytes(bad) + text_stream()
    events, error = await run(adapter(lambda r: streamed(body)))
    assert events == [TextDelta("ok")]
    assert isinstance(error, ProviderUnavailable) and "Checksum" in error.message


@pytest.mark.parametrize("cut", [0, 5, 20, -1])
async def test_a_truncated_body_is_a_dropped_stream(adapter: Any, cut: int) -> None:
    whole = text_stream("a", "b")
    metadata = event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 7}})
    # Cut inside the last frame (metadata): messageStop arrived, the stream is not whole.
    body = whole[: len(whole) - len(metadata) + cut] if cut >= 0 else whole[: -len(metadata)]
    events, error = await run(adapter(lambda r: streamed(body)))
    assert [e for e in events if isinstance(e, StreamEnd)] == []
    assert isinstance(error, ProviderUnavailable)
    assert "stream ended before messageStop and metadata" in error.message


@pytest.mark.parametrize(
    ("frame_bytes", "cls", "status", "retryable"),
    [
        (
            exception("throttlingException", b'{"message":"Too many requests"}'),
            RateLimited,
            429,
            True,
        ),
        (exception("validationException", b'{"message":"bad"}'), BadRequest, 400, False),
        (
            exception("internalServerException", b'{"message":"oops"}'),
            ProviderUnavailable,
            500,
            True,
        ),
        (exception("serviceUnavailableException", b"{}"), ProviderUnavailable, 503, True),
        (exception("modelTimeoutException", b'{"message":"slow"}'), ProviderTimeout, 408, True),
        (
            exception("modelStreamErrorException", b'{"message":"m"}'),
            ProviderUnavailable,
            424,
            True,
        ),
        (
            exception("modelStreamErrorException", b'{"message":"m","originalStatusCode":429}'),
            RateLimited,
            429,
            True,
        ),
        (
            exception("modelStreamErrorException", b'{"message":"m","originalStatusCode":400}'),
            BadRequest,
            400,
            False,
        ),
        (error_frame("ServiceQuotaExceededException", "quota"), QuotaExceeded, 400, False),
        (error_frame("SomethingNew", "what"), ProviderUnavailable, 500, True),
        (error_frame("ModelErrorException", "model failed"), InternalError, 424, False),
    ],
    ids=lambda v: v if isinstance(v, int | bool) else getattr(v, "__name__", None),
)
async def test_exception_and_error_frames(
    adapter: Any, frame_bytes: bytes, cls: type[FleetError], status: int, retryable: bool
) -> None:
    head = event("messageStart", {"role": "assistant"})
    head += event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "partial"}})
    events, error = await run(adapter(lambda r: streamed(head + frame_bytes + text_stream())))
    assert events == [TextDelta("partial")]
    assert type(error) is cls, error
    assert error.provider_status == status and error.retryable is retryable
    assert error.message.startswith("bedrock: stream error")


@pytest.mark.parametrize(
    ("stop", "cls"),
    [
        ("guardrail_intervened", ContentFiltered),
        ("content_filtered", ContentFiltered),
        ("model_context_window_exceeded", BadRequest),
        ("malformed_tool_use", ProviderUnavailable),
    ],
)
async def test_stop_reasons_that_are_errors(adapter: Any, stop: str, cls: type[FleetError]) -> None:
    events, error = await run(adapter(lambda r: streamed(text_stream("a", stop=stop))))
    assert events == [TextDelta("a")]
    assert type(error) is cls and stop in error.message


async def test_an_error_behind_a_200_is_not_fed_to_the_decoder(adapter: Any) -> None:
    body = (
        b'{"Output":{"__type":"com.amazon.coral.service#UnknownOperationException"},'
        b'"Version":"1.0"}'
    )
    response = httpx.Response(200, headers={"content-type": "application/json"}, content=body)
    events, error = await run(adapter(lambda r: response))
    assert not events
    assert error is not None and error.code.value == "not_found"
    assert "UnknownOperationException" in error.message


async def test_http_errors_before_the_stream(adapter: Any) -> None:
    headers = {
        "x-amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/coral/",
        "x-amzn-RequestId": "req-1",
    }
    response = httpx.Response(429, headers=headers, json={"message": "Too many requests"})
    events, error = await run(adapter(lambda r: response))
    assert not events and isinstance(error, RateLimited)
    assert error.provider_request_id == "req-1"
    assert error.message == "bedrock: HTTP 429 ThrottlingException: Too many requests"


async def test_a_request_that_cannot_be_mapped_fails_where_the_stream_is_read(
    adapter: Any,
) -> None:
    calls: list[httpx.Request] = []
    bad = Secret({"access_key_id": "A", "secret_access_key": "S", "region": "nowhere"})

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return streamed(text_stream())

    stream = adapter(handler).stream_chat(REQUEST, bad)
    with pytest.raises(BadRequest, match="not an AWS region name"):
        await stream.__anext__()
    assert not calls


def test_prelude_layout() -> None:
    raw = frame([(":message-type", "event")], b"{}")
    total, headers_length, crc = struct.unpack(">III", raw[:12])
    assert total == len(raw) and crc == zlib.crc32(raw[:8])
    assert headers_length == len(raw) - 16 - 2
    assert struct.unpack(">I", raw[-4:])[0] == zlib.crc32(raw[:-4])

"""The Replicate adapter against `httpx.MockTransport` fakes (no network)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from contracts.errors import (
    BadRequest,
    FleetError,
    Forbidden,
    InternalError,
    NotFound,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from contracts.jobs import Message
from providers.core.http import HttpClientPool, HttpSettings
from providers.core.spec import ProviderContext
from providers.core.testing import Handler, Recorder, collect, stream_response
from providers.core.types import ChatRequest, Secret, StreamEnd, TextDelta
from providers.options import ModelOptions
from providers.replicate import predictions as lifecycle
from providers.replicate.adapter import Replicate
from providers.replicate.predictions import prefer_wait

CANARY = "r8_canary0123456789abcdefCANARY"
SECRET = Secret({"api_key": CANARY})
BASE = "https://api.replicate.test/v1"
PID = "gm3qorzdhgbfurvjtvhg6dckhu"

Make = Callable[..., Replicate]


@pytest.fixture
def adapter(pools: list[HttpClientPool]) -> Make:
    def make(handler: Handler, *, read_timeout: float = 60.0) -> Replicate:
        settings = HttpSettings(read_timeout=read_timeout)
        pool = HttpClientPool(settings, transport=httpx.MockTransport(handler))
        pools.append(pool)
        return Replicate(ProviderContext("replicate", pool, BASE))

    return make


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The polling waits, recorded instead of slept."""
    waited: list[float] = []

    async def fake(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(lifecycle, "_sleep", fake)
    return waited


def prediction(status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": PID,
        "model": "meta/llama",
        "version": "v1",
        "input": {"prompt": "hi"},
        "output": ["Hello", " there"] if status == "succeeded" else None,
        "logs": "",
        "error": None,
        "status": status,
        "created_at": "2025-01-01T00:00:00Z",
        "urls": {
            "get": f"{BASE}/predictions/{PID}",
            "cancel": f"{BASE}/predictions/{PID}/cancel",
            "stream": f"https://stream.replicate.test/v1/files/{PID}",
        },
        "metrics": {"input_token_count": 4, "output_token_count": 2, "predict_time": 0.1},
    }
    body.update(extra)
    return body


def request(model: str = "meta/llama", **options: Any) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[Message(role="user", content="hi")],
        options=ModelOptions(**options),
    )


def problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": title, "detail": detail, "status": status, **extra}


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    def handle(_: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status,
            json=body,
            headers={"content-type": "application/problem+json", **(headers or {})},
        )

    return handle


# -- creating and waiting -------------------------------------------------------------


async def test_a_finished_prediction_is_the_answer(adapter: Make, sleeps: list[float]) -> None:
    recorder = Recorder(lambda _: httpx.Response(201, json=prediction()))
    result = await adapter(recorder).chat(request(temperature=0.2), SECRET)
    assert result.message.text() == "Hello there"
    assert result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (4, 2)
    assert result.usage.total_tokens == 6
    sent = recorder.requests[0]
    assert sent.url == f"{BASE}/models/meta/llama/predictions"
    assert sent.headers["authorization"] == f"Bearer {CANARY}"
    assert sent.headers["prefer"] == "wait=54"  # under the 60 s read timeout
    assert recorder.body == {"input": {"prompt": "hi", "temperature": 0.2}}
    assert sleeps == []


@pytest.mark.parametrize(
    ("model", "path", "version"),
    [
        ("meta/llama:abc123", "/predictions", "abc123"),
        ("5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa", "/predictions", None),
    ],
)
async def test_versions_go_to_predictions(
    adapter: Make, model: str, path: str, version: str | None
) -> None:
    recorder = Recorder(lambda _: httpx.Response(201, json=prediction()))
    await adapter(recorder).chat(request(model), SECRET)
    assert recorder.requests[0].url == BASE + path
    assert recorder.body["version"] == (version or model)


@pytest.mark.parametrize("model", ["meta/../account", "a/b/c", "owner/", ":v", "meta/x:", "a b"])
async def test_models_that_are_no_route_are_refused(adapter: Make, model: str) -> None:
    recorder = Recorder(lambda _: httpx.Response(201, json=prediction()))
    with pytest.raises(BadRequest):
        await adapter(recorder).chat(request(model), SECRET)
    assert recorder.requests == []


async def test_polls_with_backoff_until_finished(adapter: Make, sleeps: list[float]) -> None:
    statuses = iter(["processing"] * 6 + ["succeeded"])

    def handle(req: httpx.Request) -> httpx.Response:
        if req.method == "POST":
            return httpx.Response(201, json=prediction("starting"))
        assert req.url == f"{BASE}/predictions/{PID}"
        return httpx.Response(200, json=prediction(next(statuses)))

    result = await adapter(handle).chat(request(), SECRET)
    assert result.message.text() == "Hello there"
    assert sleeps == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0]


async def test_without_room_for_a_wait_it_only_polls(adapter: Make, sleeps: list[float]) -> None:
    recorder = Recorder(
        lambda req: httpx.Response(201 if req.method == "POST" else 200, json=prediction())
    )
    await adapter(recorder, read_timeout=0.5).chat(request(), SECRET)
    assert "prefer" not in recorder.requests[0].headers
    assert prefer_wait(0.5) is None
    assert prefer_wait(2) == 1
    assert prefer_wait(600) == 60


async def test_a_transient_poll_failure_is_tried_again(adapter: Make, sleeps: list[float]) -> None:
    answers = iter(
        [
            httpx.Response(201, json=prediction("starting")),
            httpx.Response(503, json=problem(503, "Service unavailable", "busy")),
            httpx.Response(
                429,
                json=problem(429, "Request was throttled", "slow"),
                headers={"retry-after": "3"},
            ),
            httpx.Response(200, json=prediction()),
        ]
    )
    result = await adapter(lambda _: next(answers)).chat(request(), SECRET)
    assert result.message.text() == "Hello there"
    assert sleeps == [0.25, 0.25, 3.0]


async def test_a_permanent_poll_failure_cancels_the_prediction(
    adapter: Make, sleeps: list[float]
) -> None:
    def handle(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/cancel"):
            return httpx.Response(200, json=prediction("canceled"))
        if req.method == "POST":
            return httpx.Response(201, json=prediction("starting"))
        return httpx.Response(403, json=problem(403, "Forbidden", "no"))

    recorder = Recorder(handle)
    with pytest.raises(Forbidden):
        await adapter(recorder).chat(request(), SECRET)
    assert recorder.requests[-1].url == f"{BASE}/predictions/{PID}/cancel"


async def test_max_tokens_reached_is_length(adapter: Make) -> None:
    answer_body = prediction(metrics={"input_token_count": 4, "output_token_count": 2})
    recorder = Recorder(lambda _: httpx.Response(201, json=answer_body))
    result = await adapter(recorder).chat(request(max_tokens=2), SECRET)
    assert result.finish_reason == "length"
    assert recorder.body["input"]["max_tokens"] == 2


async def test_without_metrics_usage_is_zero(adapter: Make) -> None:
    body = prediction(metrics={}, output="plain string")
    result = await adapter(lambda _: httpx.Response(201, json=body)).chat(request(), SECRET)
    assert result.message.text() == "plain string"
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.total_tokens) == (
        0,
        0,
        0,
    )
    assert result.finish_reason == "stop"


async def test_output_that_is_not_text_is_refused(adapter: Make) -> None:
    body = prediction(output=[{"url": "https://x/img.png"}])
    with pytest.raises(BadRequest, match="not text"):
        await adapter(lambda _: httpx.Response(201, json=body)).chat(request(), SECRET)


@pytest.mark.parametrize(
    ("error", "cls", "retryable"),
    [
        ("Traceback: ValueError: bad prompt", InternalError, False),
        ("Prediction failed for an unknown reason (E1000)", ProviderUnavailable, True),
        ("Timeout starting prediction (E6716)", ProviderUnavailable, True),
        ("CUDA out of memory (E1001)", BadRequest, False),
        (f"leaked {CANARY} here", InternalError, False),
    ],
)
async def test_a_failed_prediction_is_a_model_error(
    adapter: Make, error: str, cls: type[FleetError], retryable: bool
) -> None:
    body = prediction("failed", error=error)
    with pytest.raises(FleetError) as info:
        await adapter(lambda _: httpx.Response(201, json=body)).chat(request(), SECRET)
    assert type(info.value) is cls
    assert info.value.retryable is retryable
    assert info.value.message.startswith("replicate: prediction failed")
    assert CANARY not in info.value.message
    assert info.value.provider_request_id == PID


async def test_a_prediction_canceled_elsewhere_is_an_error(adapter: Make) -> None:
    body = prediction("canceled")
    with pytest.raises(InternalError, match="canceled"):
        await adapter(lambda _: httpx.Response(201, json=body)).chat(request(), SECRET)


async def test_an_answer_without_an_id_is_unusable(adapter: Make) -> None:
    body = prediction("starting", id="../account")
    with pytest.raises(ProviderUnavailable, match="id"):
        await adapter(lambda _: httpx.Response(201, json=body)).chat(request(), SECRET)


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "title", "cls", "retryable"),
    [
        (400, "Bad request", BadRequest, False),
        (401, "Unauthenticated", Unauthorized, False),
        (402, "Insufficient credit", QuotaExceeded, False),
        (403, "Forbidden", Forbidden, False),
        (404, "Not found", NotFound, False),
        (422, "Input validation failed", BadRequest, False),
        (422, "Invalid version or not permitted", NotFound, False),
        (429, "Request was throttled", RateLimited, True),
        (500, "Internal server error", ProviderUnavailable, True),
        (503, "Service unavailable", ProviderUnavailable, True),
    ],
)
async def test_problem_details_are_classed(
    adapter: Make, status: int, title: str, cls: type[FleetError], retryable: bool
) -> None:
    handler = answer(status, problem(status, title, f"went wrong for {CANARY}"))
    with pytest.raises(FleetError) as info:
        await adapter(handler).chat(request(), SECRET)
    assert type(info.value) is cls
    assert info.value.retryable is retryable
    assert info.value.provider_status == status
    assert info.value.message.startswith(f"replicate: HTTP {status} {title}: went wrong")
    assert CANARY not in info.value.message


async def test_retry_after_comes_from_the_header_then_the_body(adapter: Make) -> None:
    body = problem(429, "Request was throttled", "resets in ~8s", retry_after=8)
    with pytest.raises(RateLimited) as header:
        await adapter(answer(429, body, {"retry-after": "2"})).chat(request(), SECRET)
    assert header.value.retry_after == 2.0
    with pytest.raises(RateLimited) as in_body:
        await adapter(answer(429, body)).chat(request(), SECRET)
    assert in_body.value.retry_after == 8.0


async def test_verify(adapter: Make) -> None:
    account = {"type": "organization", "username": "acme", "name": "Acme"}
    recorder = Recorder(lambda _: httpx.Response(200, json=account))
    result = await adapter(recorder).verify(SECRET)
    assert result.ok and result.detail == "account acme (organization)"
    assert recorder.requests[0].url == f"{BASE}/account"
    refused = await adapter(answer(401, problem(401, "Unauthenticated", "bad token"))).verify(
        SECRET
    )
    assert not refused.ok and "bad token" in refused.detail
    with pytest.raises(ProviderUnavailable):
        await adapter(answer(500, problem(500, "Internal server error", "x"))).verify(SECRET)


async def test_a_key_that_cannot_be_a_header_is_refused_without_echo(adapter: Make) -> None:
    with pytest.raises(BadRequest) as info:
        await adapter(lambda _: httpx.Response(201, json=prediction())).chat(
            request(), Secret({"api_key": "r8_bad\nkey"})
        )
    assert "r8_bad" not in info.value.message


# -- streams --------------------------------------------------------------------------


def sse(*events: tuple[str, str]) -> bytes:
    out = []
    for n, (name, data) in enumerate(events):
        lines = "".join(f"data: {line}\n" for line in data.split("\n"))
        out.append(f"event: {name}\nid: 1:{n}\n{lines}\n")
    return "".join(out).encode()


class StreamServer:
    """Create, stream, read and cancel answers for one streamed prediction."""

    def __init__(self, body: bytes, *, final: dict[str, Any] | None = None) -> None:
        self.body = body
        self.final = final or prediction()
        self.created = prediction("starting")
        self.requests: list[httpx.Request] = []

    def __call__(self, req: httpx.Request) -> httpx.Response:
        self.requests.append(req)
        if req.url.path.endswith("/cancel"):
            return httpx.Response(200, json=prediction("canceled"))
        if req.method == "POST":
            return httpx.Response(201, json=self.created)
        if req.url.host == "stream.replicate.test":
            return stream_response(self.body)
        return httpx.Response(200, json=self.final)

    @property
    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.host}{r.url.path}" for r in self.requests]

    @property
    def cancels(self) -> int:
        return sum(r.url.path.endswith("/cancel") for r in self.requests)


DONE = ("done", "{}")


async def test_stream_yields_plain_text_then_the_end(adapter: Make) -> None:
    body = sse(
        ("output", "Hello"), ("logs", "loading"), ("output", " multi\nline"), ("output", ""), DONE
    )
    server = StreamServer(body)
    events = await collect(adapter(server).stream_chat(request(max_tokens=9), SECRET))
    assert events[:-1] == [TextDelta("Hello"), TextDelta(" multi\nline")]
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "stop"
    assert (end.usage.input_tokens, end.usage.output_tokens) == (4, 2)
    create, stream, final = server.requests
    assert json.loads(create.content) == {
        "input": {"prompt": "hi", "max_tokens": 9},
        "stream": True,
    }
    assert "prefer" not in create.headers
    assert stream.url == f"https://stream.replicate.test/v1/files/{PID}"
    assert stream.headers["accept"] == "text/event-stream"
    assert stream.headers["cache-control"] == "no-store"
    assert stream.headers["authorization"] == f"Bearer {CANARY}"
    assert final.url == f"{BASE}/predictions/{PID}"
    assert server.cancels == 0


async def test_stream_end_waits_for_the_prediction_to_be_marked_finished(
    adapter: Make, sleeps: list[float]
) -> None:
    reads = iter([prediction("processing"), prediction()])
    server = StreamServer(sse(("output", "Hi"), DONE))
    base = server.__call__

    def handle(req: httpx.Request) -> httpx.Response:
        if req.method == "GET" and req.url.host == "api.replicate.test":
            server.requests.append(req)
            return httpx.Response(200, json=next(reads))
        return base(req)

    events = await collect(adapter(handle).stream_chat(request(), SECRET))
    assert isinstance(events[-1], StreamEnd)
    assert sleeps == [0.25]


async def test_a_stream_cut_before_done_is_dropped_and_cancelled(adapter: Make) -> None:
    server = StreamServer(sse(("output", "Hel"), ("output", "lo")))
    with pytest.raises(ProviderUnavailable, match="done"):
        await collect(adapter(server).stream_chat(request(), SECRET))
    assert server.cancels == 1


@pytest.mark.parametrize(
    ("data", "cls", "retryable"),
    [
        (
            '{"detail": "busy", "status": 503, "title": "Service unavailable"}',
            ProviderUnavailable,
            True,
        ),
        (
            '{"detail": "slow down", "status": 429, "title": "Request was throttled"}',
            RateLimited,
            True,
        ),
        ('{"detail": "the model raised"}', InternalError, False),
        ('{"detail": "unknown (E1000)"}', ProviderUnavailable, True),
        ("not json at all", InternalError, False),
    ],
)
async def test_an_error_event_raises(
    adapter: Make, data: str, cls: type[FleetError], retryable: bool
) -> None:
    server = StreamServer(sse(("output", "Hi"), ("error", data), ("done", '{"reason":"error"}')))
    got: list[object] = []
    with pytest.raises(FleetError) as info:
        async for event in adapter(server).stream_chat(request(), SECRET):
            got.append(event)
    assert got == [TextDelta("Hi")]
    assert type(info.value) is cls and info.value.retryable is retryable
    assert server.cancels == 0  # the prediction ended by itself


async def test_done_with_a_reason_is_an_error(adapter: Make) -> None:
    canceled = StreamServer(sse(("output", "Hi"), ("done", '{"reason": "canceled"}')))
    with pytest.raises(InternalError, match="canceled"):
        await collect(adapter(canceled).stream_chat(request(), SECRET))
    failed = StreamServer(
        sse(("done", '{"reason": "error"}')),
        final=prediction("failed", error="boom"),
    )
    with pytest.raises(InternalError, match="boom"):
        await collect(adapter(failed).stream_chat(request(), SECRET))
    assert canceled.cancels == failed.cancels == 0


async def test_an_early_close_cancels_the_prediction(adapter: Make) -> None:
    server = StreamServer(sse(("output", "a"), ("output", "b"), DONE))
    stream = adapter(server).stream_chat(request(), SECRET)
    assert await anext(stream) == TextDelta("a")
    await stream.aclose()
    assert server.cancels == 1
    assert server.paths[-1] == f"POST api.replicate.test/v1/predictions/{PID}/cancel"


@pytest.mark.parametrize(
    "url",
    [
        None,
        "https://evil.test/v1/files/x",
        "http://stream.replicate.test/v1/files/x",  # a sibling, but not over https
        "ftp://api.replicate.test/x",
    ],
)
async def test_without_a_stream_url_to_trust_the_answer_is_one_delta(
    adapter: Make, sleeps: list[float], url: str | None
) -> None:
    server = StreamServer(sse(DONE))
    server.created = prediction("starting", urls={"stream": url} if url else {})
    events = await collect(adapter(server).stream_chat(request(), SECRET))
    assert events[0] == TextDelta("Hello there")
    assert isinstance(events[1], StreamEnd) and len(events) == 2
    assert all(r.url.host == "api.replicate.test" for r in server.requests)


async def test_a_stream_error_status_before_events_is_raised(adapter: Make) -> None:
    def handle(req: httpx.Request) -> httpx.Response:
        if req.method == "POST" and not req.url.path.endswith("/cancel"):
            return httpx.Response(201, json=prediction("starting"))
        if req.url.host == "stream.replicate.test":
            return httpx.Response(404, json=problem(404, "Not found", "no stream"))
        return httpx.Response(200, json=prediction("canceled"))

    recorder = Recorder(handle)
    with pytest.raises(NotFound):
        await collect(adapter(recorder).stream_chat(request(), SECRET))
    assert recorder.requests[-1].url.path.endswith("/cancel")


async def test_a_stream_request_that_cannot_be_mapped_fails_when_read(adapter: Make) -> None:
    recorder = Recorder(lambda _: httpx.Response(201, json=prediction()))
    stream = adapter(recorder).stream_chat(request(top_logprobs=2), SECRET)
    assert recorder.requests == []
    with pytest.raises(BadRequest, match="log probabilities"):
        await collect(stream)


async def test_read_timeouts_are_timeouts(adapter: Make) -> None:
    def handle(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=req)

    with pytest.raises(ProviderTimeout):
        await adapter(handle).chat(request(), SECRET)

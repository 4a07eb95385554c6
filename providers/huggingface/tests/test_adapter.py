"""The Hugging Face adapter against `httpx.MockTransport` fakes (no network)."""

from __future__ import annotations

import asyncio
import json
import struct
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
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from contracts.jobs import Message
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
from providers.huggingface import SPECS
from providers.huggingface.adapter import HuggingFace
from providers.huggingface.embed import BATCH, FAN_OUT
from providers.huggingface.endpoints import resolve
from providers.options import ModelOptions

TOKEN = "hf_canary0123456789abcdefCANARY"
SECRET = Secret({"api_key": TOKEN})
ROUTER = "https://router.huggingface.co/v1"
Build = Callable[..., HuggingFace]

OK_CHAT = {
    "object": "chat.completion",
    "id": "",
    "created": 1,
    "model": "org/model",
    "system_fingerprint": "3.3.6-sha-x",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "yo"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


@pytest.fixture
def build(pools: list[HttpClientPool]) -> Build:
    def make(handler: Handler, *, base: str | None = ROUTER) -> HuggingFace:
        pool = HttpClientPool(transport=httpx.MockTransport(handler))
        pools.append(pool)
        return HuggingFace(ProviderContext("huggingface", pool, base))

    return make


def request(model: str = "org/model", **options: Any) -> ChatRequest:
    return ChatRequest(
        model=model, messages=[Message(role="user", content="hi")], options=ModelOptions(**options)
    )


def sse(*events: Any, done: bool = True) -> bytes:
    parts = [f"data: {json.dumps(e)}\n\n" for e in events]
    if done:
        parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"role": "assistant", **delta}, "finish_reason": finish}
    return {"object": "chat.completion.chunk", "choices": [choice], **extra}


# -- specs and addresses ----------------------------------------------------------------


def test_specs() -> None:
    assert [s.name for s in SPECS] == ["huggingface", "huggingface-mock"]
    assert SPECS[0].default_base_url == ROUTER
    assert SPECS[1].default_base_url == "http://127.0.0.1:8900/huggingface/v1"
    assert "bill_to" in SPECS[0].credential_fields


@pytest.mark.parametrize(
    ("base", "secret_base", "chat", "pipeline", "whoami"),
    [
        (
            ROUTER,
            None,
            f"{ROUTER}/chat/completions",
            "https://router.huggingface.co/hf-inference/models/BAAI/bge-m3/pipeline/feature-extraction",
            "https://huggingface.co/api/whoami-v2",
        ),
        (
            "http://127.0.0.1:8900/huggingface/v1/",
            None,
            "http://127.0.0.1:8900/huggingface/v1/chat/completions",
            "http://127.0.0.1:8900/huggingface/hf-inference/models/BAAI/bge-m3/pipeline/feature-extraction",
            "http://127.0.0.1:8900/huggingface/api/whoami-v2",
        ),
        (
            ROUTER,
            "https://proxy.test/hf",
            "https://proxy.test/hf/chat/completions",
            "https://proxy.test/hf/hf-inference/models/BAAI/bge-m3/pipeline/feature-extraction",
            "https://proxy.test/hf/api/whoami-v2",
        ),
        (
            None,
            None,
            f"{ROUTER}/chat/completions",
            "https://router.huggingface.co/hf-inference/models/BAAI/bge-m3/pipeline/feature-extraction",
            "https://huggingface.co/api/whoami-v2",
        ),
    ],
    ids=["default", "override", "credential", "unset"],
)
def test_addresses(
    base: str | None, secret_base: str | None, chat: str, pipeline: str, whoami: str
) -> None:
    secret = Secret({"api_key": TOKEN, **({"base_url": secret_base} if secret_base else {})})
    ends = resolve(base, secret)
    assert ends.chat == chat
    assert ends.feature_extraction("BAAI/bge-m3") == pipeline
    assert ends.whoami == whoami


# -- chat ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "openai/gpt-oss-20b",
        "openai/gpt-oss-20b:fastest",
        "deepseek-ai/DeepSeek-R1:together",
        "gpt2",
    ],
)
async def test_models_go_verbatim(build: Build, model: str) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    await build(rec).chat(request(model), SECRET)
    assert rec.body["model"] == model
    assert str(rec.requests[0].url) == f"{ROUTER}/chat/completions"


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ("org/model name", "not a Hub model id"),
        ("org/model:", "empty or malformed suffix"),
        ("org/model:a:b", "empty or malformed suffix"),
        (":fastest", "not a Hub model id"),
        ("", "not a Hub model id"),
        ("a/b/c", "not a Hub model id"),
    ],
)
async def test_bad_model_names_are_refused_before_a_call(
    build: Build, model: str, match: str
) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    adapter = build(rec)
    with pytest.raises(BadRequest, match=match):
        await adapter.chat(request(model), SECRET)
    with pytest.raises(BadRequest, match=match):
        await collect(adapter.stream_chat(request(model), SECRET))
    assert rec.requests == []


async def test_options_and_headers(build: Build) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    secret = Secret({"api_key": TOKEN, "bill_to": "my-org"})
    options = ModelOptions(
        temperature=0.3,
        max_tokens=10,
        seed=3,
        stop=("END",),
        response_format={"type": "json_object"},
        reasoning_effort="low",
        user="u-1",
        metadata={"k": "v"},
        service_tier="auto",
        top_logprobs=2,
    )
    req = ChatRequest("org/model", [Message(role="user", content="hi")], options=options)
    await build(rec).chat(req, secret)
    sent = rec.requests[0]
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["x-hf-bill-to"] == "my-org"
    assert rec.body == {
        "model": "org/model",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3,
        "max_tokens": 10,
        "seed": 3,
        "stop": ["END"],
        "response_format": {"type": "json_object"},
        "reasoning_effort": "low",
        "logprobs": True,
        "top_logprobs": 2,
    }


async def test_a_service_tier_is_refused(build: Build) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    with pytest.raises(BadRequest, match="no service tiers"):
        await build(rec).chat(request(service_tier="flex"), SECRET)
    assert rec.requests == []


@pytest.mark.parametrize(("sent", "fleet"), [("eos_token", "stop"), ("stop_sequence", "stop")])
async def test_tgi_finish_reasons(build: Build, sent: str, fleet: str) -> None:
    body = json.loads(json.dumps(OK_CHAT))
    body["choices"][0]["finish_reason"] = sent
    result = await build(lambda r: httpx.Response(200, json=body)).chat(request(), SECRET)
    assert result.finish_reason == fleet
    stream = sse(chunk({"content": "a"}), chunk({"content": ""}, sent))
    events = await collect(build(lambda r: stream_response(stream)).stream_chat(request(), SECRET))
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.finish_reason == fleet


async def test_stream_with_tgi_tool_deltas_and_usage_on_the_last_chunk(build: Build) -> None:
    usage = {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}

    def call(index: int, call_id: str, name: str | None, arguments: str) -> dict[str, Any]:
        function = {"name": name, "arguments": arguments}
        return {"index": index, "id": call_id, "type": "function", "function": function}

    body = sse(
        chunk({"tool_calls": [call(0, "c0", "a", "")]}),
        chunk({"tool_calls": [call(0, "", None, '{"q":')]}),
        chunk({"tool_calls": [call(1, "c1", "b", "")]}),
        chunk({"tool_calls": [call(0, "", None, '"x"}')]}),
        chunk({"content": ""}, "tool_calls", usage=usage),
    )
    rec = Recorder(lambda r: stream_response(body))
    events = await collect(build(rec).stream_chat(request(), SECRET))
    assert rec.body["stream"] is True
    assert rec.body["stream_options"] == {"include_usage": True}
    deltas = [e.delta for e in events if isinstance(e, ToolDelta)]
    assert [(d.index, d.id, d.name, d.arguments) for d in deltas] == [
        (0, "c0", "a", ""),
        (0, None, None, '{"q":'),
        (1, "c1", "b", ""),
        (0, None, None, '"x"}'),
    ]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.finish_reason == "tool_calls"
    assert (end.usage.input_tokens, end.usage.output_tokens) == (4, 3)


@pytest.mark.parametrize(
    ("event", "cls", "status"),
    [
        ({"error": "Model is overloaded", "error_type": "overloaded"}, ProviderUnavailable, 503),
        (
            {"error": "Input validation error: too long", "error_type": "validation"},
            BadRequest,
            422,
        ),
        ({"error": "CUDA out of memory", "error_type": "generation"}, ProviderUnavailable, 424),
        (
            {"error": {"message": "slow down", "type": "rate_limit_error", "code": 429}},
            RateLimited,
            429,
        ),
        ({"error": {"message": "no credits", "code": 402}}, QuotaExceeded, 402),
        ({"error": "something odd"}, ProviderUnavailable, 500),
    ],
    ids=["tgi-overloaded", "tgi-validation", "tgi-generation", "nested-429", "nested-402", "bare"],
)
async def test_errors_inside_a_stream(
    build: Build, event: dict[str, Any], cls: type[FleetError], status: int
) -> None:
    body = sse(chunk({"content": "a"}), event, done=False)
    got: list[Any] = []
    with pytest.raises(FleetError) as info:
        async for e in build(lambda r: stream_response(body)).stream_chat(request(), SECRET):
            got.append(e)
    assert got == [TextDelta("a")]
    assert type(info.value) is cls
    assert info.value.provider_status == status
    assert info.value.message.startswith("huggingface: stream error")


async def test_an_error_in_a_200_body_is_raised(build: Build) -> None:
    body = {"error": "Model is overloaded", "error_type": "overloaded"}
    with pytest.raises(ProviderUnavailable, match="error body"):
        await build(lambda r: httpx.Response(200, json=body)).chat(request(), SECRET)


# -- HTTP errors ---------------------------------------------------------------------------


def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return handler


ERROR_CASES: list[tuple[int, Any, dict[str, str], type[FleetError], bool]] = [
    (400, {"error": {"message": "bad", "type": "invalid_request_error"}}, {}, BadRequest, False),
    (401, {"error": "Invalid credentials in Authorization header"}, {}, Unauthorized, False),
    (402, {"error": "You have exceeded your monthly included credits"}, {}, QuotaExceeded, False),
    (404, {"error": "Model org/model does not exist"}, {}, NotFound, False),
    (
        400,
        {"error": {"message": "not supported by any provider", "code": "model_not_supported"}},
        {},
        NotFound,
        False,
    ),
    (422, {"error": "Input validation error", "error_type": "validation"}, {}, BadRequest, False),
    (
        424,
        {"error": "generation failed", "error_type": "generation"},
        {},
        ProviderUnavailable,
        True,
    ),
    (429, {"error": "Rate limit reached"}, {"retry-after": "7"}, RateLimited, True),
    (500, {"error": "Internal Server Error"}, {}, ProviderUnavailable, True),
    (503, {"error": "Service Unavailable"}, {}, ProviderUnavailable, True),
]


@pytest.mark.parametrize(("status", "body", "headers", "cls", "retryable"), ERROR_CASES)
async def test_error_statuses(
    build: Build,
    status: int,
    body: Any,
    headers: dict[str, str],
    cls: type[FleetError],
    retryable: bool,
) -> None:
    with pytest.raises(FleetError) as info:
        await build(answer(status, body, headers)).chat(request(), SECRET)
    error = info.value
    assert type(error) is cls
    assert error.retryable is retryable
    assert error.provider_status == status
    assert error.message.startswith(f"huggingface: HTTP {status}")
    if "retry-after" in headers:
        assert error.retry_after == 7.0


async def test_quota_is_never_retried_whatever_the_headers_say(build: Build) -> None:
    handler = answer(402, {"error": "credits"}, {"retry-after": "5", "x-should-retry": "true"})
    with pytest.raises(QuotaExceeded) as info:
        await build(handler).chat(request(), SECRET)
    assert info.value.retryable is False
    assert info.value.retry_after is None


async def test_a_loading_model_waits_for_its_estimated_time(build: Build) -> None:
    body = {"error": "Model org/model is currently loading", "estimated_time": 12.5}
    with pytest.raises(ProviderUnavailable) as info:
        await build(answer(503, body)).chat(request(), SECRET)
    assert info.value.retry_after == 12.5
    with pytest.raises(ProviderUnavailable) as info:
        await build(answer(503, body, {"retry-after": "3"})).chat(request(), SECRET)
    assert info.value.retry_after == 3.0  # the header wins


async def test_a_token_without_the_inference_permission_says_so(build: Build) -> None:
    body = {
        "error": "This authentication method does not have sufficient permissions to call "
        "Inference Providers on behalf of user someone"
    }
    with pytest.raises(Forbidden) as info:
        await build(answer(403, body)).chat(request(), SECRET)
    assert "lacks the 'Make calls to Inference Providers' permission" in info.value.message
    assert "on behalf of user someone" in info.value.message
    gated = {"error": "Access to model org/model is restricted."}
    with pytest.raises(Forbidden) as info:
        await build(answer(403, gated)).chat(request(), SECRET)
    assert "permission" not in info.value.message


async def test_gateway_pages_header_messages_and_trace_ids(build: Build) -> None:
    page = b"<html>\r\n<head><title>502 Bad Gateway</title></head><body>x</body></html>"
    with pytest.raises(ProviderUnavailable) as info:
        await build(answer(502, page, {"content-type": "text/html"})).chat(request(), SECRET)
    assert info.value.message == "huggingface: HTTP 502: 502 Bad Gateway"
    headers = {"x-error-message": "Invalid credentials", "x-amzn-trace-id": "Root=1-abc"}
    with pytest.raises(Unauthorized) as refused:
        await build(answer(401, b"", headers)).chat(request(), SECRET)
    assert refused.value.message == "huggingface: HTTP 401: Invalid credentials"
    assert refused.value.provider_request_id == "Root=1-abc"


async def test_the_token_never_reaches_a_message(build: Build) -> None:
    body = {"error": f"Invalid token {TOKEN}"}
    for status in (401, 403, 500):
        with pytest.raises(FleetError) as info:
            await build(answer(status, body)).chat(request(), SECRET)
        assert TOKEN not in info.value.message


# -- embeddings -------------------------------------------------------------------------


def vectors(texts: list[str], dims: int = 3) -> list[list[float]]:
    return [[float(len(t)), float(i), 0.5][:dims] for i, t in enumerate(texts)]


def rows(data: bytes, dims: int) -> list[tuple[float, ...]]:
    return [
        struct.unpack_from(f"<{dims}f", data, i * dims * 4) for i in range(len(data) // (dims * 4))
    ]


async def test_embeddings_batch_by_32_in_order(build: Build) -> None:
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        texts = json.loads(request.content)["inputs"]
        # Each text's vector says which text it is: the first word's number.
        payload = [[float(t.split()[1]), 1.0] for t in texts]
        return httpx.Response(200, json=payload, headers={"x-compute-tokens": str(len(texts))})

    inputs = [f"text {i}" for i in range(3 * BATCH + 5)]
    pool = HttpClientPool(transport=httpx.MockTransport(handler))
    try:
        adapter = HuggingFace(ProviderContext("huggingface", pool, ROUTER))
        result = await adapter.embed(EmbedRequest("BAAI/bge-m3", inputs), SECRET)
    finally:
        await pool.aclose()
    assert (result.count, result.dims) == (len(inputs), 2)
    assert [r[0] for r in rows(result.data, 2)] == [float(i) for i in range(len(inputs))]
    assert result.usage.input_tokens == len(inputs)
    assert 1 < peak <= FAN_OUT


async def test_embedding_request_shape(build: Build) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=vectors(["a", "bb"])))
    req = EmbedRequest("BAAI/bge-m3:hf-inference", ["a", "bb"], input_type="query")
    result = await build(rec).embed(req, SECRET)
    sent = rec.requests[0]
    assert str(sent.url) == (
        "https://router.huggingface.co/hf-inference/models/BAAI/bge-m3/pipeline/feature-extraction"
    )
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert rec.body == {"inputs": ["a", "bb"], "prompt_name": "query"}
    assert rows(result.data, 3) == [(1.0, 0.0, 0.5), (2.0, 1.0, 0.5)]
    assert result.usage.input_tokens == 0  # no x-compute-tokens, nothing pooled


async def test_per_token_answers_are_mean_pooled(build: Build) -> None:
    per_token = [
        [[1.0, 2.0], [3.0, 4.0]],  # two tokens
        [[[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]],  # three, in a batch dimension of one
    ]
    result = await build(lambda r: httpx.Response(200, json=per_token)).embed(
        EmbedRequest("bert-base-uncased", ["a", "b"]), SECRET
    )
    assert rows(result.data, 2) == [(2.0, 3.0), (7.0, 8.0)]
    assert result.usage.input_tokens == 5


async def test_a_lone_input_answered_as_a_bare_vector(build: Build) -> None:
    result = await build(lambda r: httpx.Response(200, json=[0.25, 0.5])).embed(
        EmbedRequest("m", ["a"]), SECRET
    )
    assert rows(result.data, 2) == [(0.25, 0.5)]


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ([[1.0, 2.0]], "expected 2 embeddings, got 1"),
        ({"embeddings": []}, "expected 2 embeddings, got 0"),
        ([[1.0, 2.0], [1.0]], "inconsistent"),
        ([[[1.0, 2.0], [1.0]], [1.0, 2.0]], "inconsistent"),
        ([["x", 1.0], [1.0, 2.0]], "non-numbers"),
    ],
)
async def test_malformed_embeddings(build: Build, payload: Any, match: str) -> None:
    with pytest.raises(InternalError, match=match):
        await build(lambda r: httpx.Response(200, json=payload)).embed(
            EmbedRequest("m", ["a", "b"]), SECRET
        )


async def test_embedding_refusals(build: Build) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=[[1.0]]))
    adapter = build(rec)
    with pytest.raises(BadRequest, match="no dimensions parameter"):
        await adapter.embed(EmbedRequest("m", ["a"], dimensions=256), SECRET)
    with pytest.raises(BadRequest, match="asks for provider 'together'"):
        await adapter.embed(EmbedRequest("org/m:together", ["a"]), SECRET)
    with pytest.raises(BadRequest, match="nothing to embed"):
        await adapter.embed(EmbedRequest("m", []), SECRET)
    assert rec.requests == []


async def test_an_embedding_batch_failure_fails_the_whole(build: Build) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        texts = json.loads(request.content)["inputs"]
        if texts[0] == "t32":
            return httpx.Response(429, json={"error": "slow"}, headers={"retry-after": "2"})
        return httpx.Response(200, json=[[1.0] for _ in texts])

    with pytest.raises(RateLimited) as info:
        await build(handler).embed(EmbedRequest("m", [f"t{i}" for i in range(70)]), SECRET)
    assert info.value.retry_after == 2.0


# -- verify -------------------------------------------------------------------------------


def whoami(role: str, global_: list[str], scoped: list[str] | None = None) -> dict[str, Any]:
    token: dict[str, Any] = {"displayName": "t", "role": role}
    if role == "fineGrained":
        token["fineGrained"] = {
            "global": global_,
            "scoped": [{"entity": {"type": "user", "name": "me"}, "permissions": scoped or []}],
        }
    return {"type": "user", "name": "me", "auth": {"type": "access_token", "accessToken": token}}


@pytest.mark.parametrize(
    ("payload", "ok", "detail"),
    [
        (whoami("read", []), True, "authenticated as me (read token)"),
        (
            whoami("fineGrained", ["inference.serverless.write"]),
            True,
            "authenticated as me (fineGrained token)",
        ),
        (
            whoami("fineGrained", [], ["inference.serverless.write"]),
            True,
            "authenticated as me (fineGrained token)",
        ),
        (whoami("fineGrained", ["discussion.write"]), False, "lacks the 'Make calls"),
    ],
    ids=["read", "fine-grained", "scoped", "no-permission"],
)
async def test_verify(build: Build, payload: dict[str, Any], ok: bool, detail: str) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=payload))
    result = await build(rec).verify(SECRET)
    assert str(rec.requests[0].url) == "https://huggingface.co/api/whoami-v2"
    assert rec.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert result.ok is ok
    assert detail in result.detail
    assert TOKEN not in result.detail


async def test_verify_refusals_and_failures(build: Build) -> None:
    bad = {"error": "Invalid credentials in Authorization header"}
    result = await build(answer(401, bad)).verify(SECRET)
    assert not result.ok
    assert result.detail == "huggingface: HTTP 401: Invalid credentials in Authorization header"
    with pytest.raises(ProviderUnavailable):
        await build(answer(500, {"error": "down"})).verify(SECRET)

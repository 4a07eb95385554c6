"""The vLLM adapter against `httpx.MockTransport` fakes (no network)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from contracts.errors import (
    BadRequest,
    FleetError,
    InternalError,
    NotFound,
    ProviderUnavailable,
    RateLimited,
    Unauthorized,
)
from contracts.frames import RerankItem, Usage
from contracts.jobs import Message
from providers.core.http import HttpClientPool
from providers.core.spec import Capability, ProviderContext
from providers.core.testing import Handler, Recorder, collect, stream_response
from providers.core.types import (
    ChatRequest,
    EmbedRequest,
    RerankRequest,
    Secret,
    StreamEnd,
    TextDelta,
    ToolDelta,
)
from providers.options import ModelOptions
from providers.vllm import SPECS
from providers.vllm.adapter import Vllm

CANARY = "vllm-canary-key-0123456789abcdef"
SECRET = Secret({"api_key": CANARY})
BASE = "http://vllm.test:8000/v1"
REQ = ChatRequest(model="qwen", messages=[Message(role="user", content="hi")])

Make = Callable[..., Vllm]


@pytest.fixture
def adapter(pools: list[HttpClientPool]) -> Make:
    def make(handler: Handler, *, base: str | None = BASE) -> Vllm:
        pool = HttpClientPool(transport=httpx.MockTransport(handler))
        pools.append(pool)
        return Vllm(ProviderContext("vllm", pool, base))

    return make


def sse(*events: dict[str, Any]) -> bytes:
    return (
        b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    )


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, **extra}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "qwen",
        "choices": [choice],
    }


USAGE = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "qwen",
    "choices": [],
    "usage": {"prompt_tokens": 9, "total_tokens": 13, "completion_tokens": 4},
}


async def test_stream_in_vllms_tool_call_layout(adapter: Make) -> None:
    # The tool-call header has no `arguments`; the last chunk carries `stop_reason`.
    body = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk(
            {
                "tool_calls": [
                    {
                        "id": "chatcmpl-tool-1",
                        "type": "function",
                        "index": 0,
                        "function": {"name": "run"},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"cmd": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"ls"}'}}]}),
        chunk({"content": ""}, "tool_calls", stop_reason=None),
        USAGE,
    )
    rec = Recorder(lambda _: stream_response(body, pieces=9))
    events = await collect(adapter(rec).stream_chat(REQ, SECRET))
    assert rec.requests[-1].url == f"{BASE}/chat/completions"
    assert rec.body["stream_options"] == {"include_usage": True}
    assert rec.requests[-1].headers["authorization"] == f"Bearer {CANARY}"
    deltas = [e.delta for e in events if isinstance(e, ToolDelta)]
    assert deltas[0].id == "chatcmpl-tool-1" and deltas[0].name == "run"
    assert "".join(d.arguments for d in deltas) == '{"cmd": "ls"}'
    assert events[-1] == StreamEnd(
        "tool_calls", Usage(input_tokens=9, output_tokens=4, total_tokens=13)
    )


@pytest.mark.parametrize(
    ("error", "cls", "status"),
    [
        # vLLM wraps in-stream errors in "error"...
        (
            {
                "error": {
                    "object": "error",
                    "message": "bad",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                }
            },
            BadRequest,
            400,
        ),
        (
            {
                "error": {
                    "message": "slow down",
                    "type": "RateLimitError",
                    "param": None,
                    "code": 429,
                }
            },
            RateLimited,
            429,
        ),
        # ...and a flat error object must not pass for a chunk without choices.
        (
            {
                "object": "error",
                "message": "engine died",
                "type": "InternalServerError",
                "param": None,
                "code": 500,
            },
            ProviderUnavailable,
            500,
        ),
    ],
)
async def test_errors_inside_a_stream(
    adapter: Make, error: dict[str, Any], cls: type[FleetError], status: int
) -> None:
    body = sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), error)
    failing = adapter(lambda _: stream_response(body))
    events: list[object] = []
    with pytest.raises(cls) as info:
        async for event in failing.stream_chat(REQ, SECRET):
            events.append(event)
    assert events == [TextDelta("Hel")]
    assert info.value.provider_status == status


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 8 tokens.",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                }
            },
            BadRequest,
        ),
        (
            400,
            {
                "object": "error",
                "message": "bad",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
            BadRequest,
        ),
        (401, {"error": "Unauthorized"}, Unauthorized),
        (
            404,
            {
                "error": {
                    "message": "The model `x` does not exist.",
                    "type": "NotFoundError",
                    "param": "model",
                    "code": 404,
                }
            },
            NotFound,
        ),
        (
            404,
            {
                "object": "error",
                "message": "The model `x` does not exist.",
                "type": "NotFoundError",
                "param": None,
                "code": 404,
            },
            NotFound,
        ),
        (
            500,
            {
                "error": {
                    "message": "EngineCore died",
                    "type": "InternalServerError",
                    "param": None,
                    "code": 500,
                }
            },
            ProviderUnavailable,
        ),
    ],
)
async def test_error_bodies_new_and_old(
    adapter: Make, status: int, body: dict[str, Any], cls: type[FleetError]
) -> None:
    failing = adapter(lambda _: httpx.Response(status, json=body))
    for call in (
        lambda a: a.chat(REQ, SECRET),
        lambda a: collect(a.stream_chat(REQ, SECRET)),
        lambda a: a.rerank(RerankRequest(model="r", query="q", documents=["d"]), SECRET),
        lambda a: a.embed(EmbedRequest(model="e", inputs=["x"]), SECRET),
    ):
        with pytest.raises(FleetError) as info:
            await call(failing)
        assert type(info.value) is cls
        assert info.value.message.startswith(f"vllm: HTTP {status}")


async def test_chat_and_options(adapter: Make) -> None:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "qwen",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "reasoning_content": None,
                    "content": "yo",
                    "tool_calls": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
            }
        ],
        "usage": {
            "prompt_tokens": 3,
            "total_tokens": 4,
            "completion_tokens": 1,
            "prompt_tokens_details": None,
        },
    }
    rec = Recorder(lambda _: httpx.Response(200, json=completion))
    options = ModelOptions(
        max_tokens=9,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
    )
    result = await adapter(rec).chat(
        ChatRequest(model="qwen", messages=REQ.messages, options=options), SECRET
    )
    assert result.message.content == "yo" and result.finish_reason == "stop"
    assert result.usage == Usage(input_tokens=3, output_tokens=1, total_tokens=4)
    # The old name, which every vLLM knows; response_format as vLLM takes it itself.
    assert rec.body["max_tokens"] == 9 and "max_completion_tokens" not in rec.body
    assert rec.body["response_format"]["type"] == "json_schema"


async def test_rerank(adapter: Make) -> None:
    answer = {
        "id": "rerank-1",
        "model": "bge",
        "usage": {"total_tokens": 21},
        "results": [
            {"index": 1, "document": {"text": "b"}, "relevance_score": 0.9},
            {"index": 0, "document": {"text": "a"}, "relevance_score": 0.1},
        ],
    }
    rec = Recorder(lambda _: httpx.Response(200, json=answer))
    req = RerankRequest(model="bge", query="q", documents=["a", "b"], top_n=2)
    result = await adapter(rec).rerank(req, SECRET)
    assert str(rec.requests[-1].url) == f"{BASE}/rerank"
    assert rec.body == {"model": "bge", "query": "q", "documents": ["a", "b"], "top_n": 2}
    assert result.items == [RerankItem(index=1, score=0.9), RerankItem(index=0, score=0.1)]
    assert result.usage == Usage(input_tokens=21, total_tokens=21)
    await adapter(rec).rerank(RerankRequest(model="bge", query="q", documents=["a"]), SECRET)
    assert "top_n" not in rec.body


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"results": [{"relevance_score": 0.5}]},
        {"results": [{"index": 0, "relevance_score": "high"}]},
    ],
)
async def test_malformed_rerank_answers(adapter: Make, answer: dict[str, Any]) -> None:
    bad = adapter(lambda _: httpx.Response(200, json=answer))
    with pytest.raises(InternalError):
        await bad.rerank(RerankRequest(model="bge", query="q", documents=["a"]), SECRET)


async def test_embed_and_verify(adapter: Make) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            if request.headers.get("authorization") != f"Bearer {CANARY}":
                return httpx.Response(401, json={"error": "Unauthorized"})
            return httpx.Response(200, json={"object": "list", "data": [{"id": "qwen"}]})
        data = [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}]
        return httpx.Response(
            200,
            json={"object": "list", "data": data, "usage": {"prompt_tokens": 2, "total_tokens": 2}},
        )

    vllm = adapter(handler)
    result = await vllm.embed(EmbedRequest(model="e", inputs=["x"]), SECRET)
    assert (result.count, result.dims, result.usage.input_tokens) == (1, 2, 2)
    assert (await vllm.verify(SECRET)).ok
    refused = await vllm.verify(Secret({"api_key": "wrong"}))
    assert not refused.ok and "Unauthorized" in refused.detail


async def test_no_key_means_no_auth_header(adapter: Make) -> None:
    rec = Recorder(lambda _: httpx.Response(200, json={"results": []}))
    await adapter(rec).rerank(RerankRequest(model="r", query="q", documents=["a"]), Secret({}))
    assert "authorization" not in rec.requests[-1].headers


def test_specs() -> None:
    assert [s.name for s in SPECS] == ["vllm", "vllm-mock"]
    assert SPECS[0].default_base_url == "http://localhost:8000/v1"
    assert Capability.RERANK in SPECS[0].capabilities

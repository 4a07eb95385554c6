"""The Bedrock adapter against `httpx.MockTransport`: request mapping, answers,
errors, embeddings fan-out, rerank and verify (no network)."""

from __future__ import annotations

import asyncio
import base64
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
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from contracts.frames import RerankItem, Usage
from contracts.jobs import ContentPart, Message, Tool, ToolCall
from providers.bedrock import embed as embedding
from providers.bedrock.adapter import Bedrock
from providers.bedrock.mapping import converse_body
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.testing import Recorder
from providers.core.types import ChatRequest, EmbedRequest, RerankRequest, Secret
from providers.options import ModelOptions

SECRET_KEY = "adapter-secret-CANARY-abcdef0123456789"
SECRET = Secret(
    {"access_key_id": "AKIDADAPTER", "secret_access_key": SECRET_KEY, "region": "us-west-2"}
)
BASE = "https://bedrock-runtime.{region}.amazonaws.com"
TOOL = Tool(name="lookup", description="Look up", parameters={"type": "object"})
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()

Build = Callable[[Callable[[httpx.Request], httpx.Response]], tuple[Bedrock, Recorder]]


@pytest.fixture
def build(pools: list[HttpClientPool]) -> Build:
    def make(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[Bedrock, Recorder]:
        recorder = Recorder(handler)
        pool = HttpClientPool(transport=httpx.MockTransport(recorder))
        pools.append(pool)
        return Bedrock(ProviderContext("bedrock", pool, BASE)), recorder

    return make


def request(*messages: Message, **options: Any) -> ChatRequest:
    return ChatRequest(
        model="anthropic.claude-3-haiku-20240307-v1:0",
        messages=list(messages) or [Message(role="user", content="hi")],
        tools=options.pop("tools", []),
        options=ModelOptions(**options),
    )


def answer(content: list[dict[str, Any]], stop: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5, **usage},
        "metrics": {"latencyMs": 10},
    }


def aws_error(status: int, kind: str, message: str = "m", via: str = "header") -> httpx.Response:
    if via == "header":
        headers = {
            "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"
        }
        return httpx.Response(status, headers=headers, json={"message": message})
    return httpx.Response(
        status, json={"__type": f"com.amazon.coral.service#{kind}", "Message": message}
    )


# -- request mapping --------------------------------------------------------------------


def test_turns_are_merged_and_blocks_mapped() -> None:
    call = ToolCall(id="t1", name="lookup", arguments='{"q": "x"}')
    body = converse_body(
        "bedrock",
        request(
            Message(role="system", content="Be brief."),
            Message(role="developer", content="Really."),
            Message(role="user", content="first"),
            Message(
                role="user",
                content=[
                    ContentPart(type="text", text="second"),
                    ContentPart(type="image_url", image_url=PNG),
                ],
            ),
            Message(role="assistant", content="", tool_calls=[call]),
            Message(role="tool", content='{"ok": true}', tool_call_id="t1"),
            Message(role="tool", content="plain words", tool_call_id="t2"),
            Message(role="user", content="and now?"),
            tools=[TOOL],
        ),
    )
    assert body["system"] == [{"text": "Be brief."}, {"text": "Really."}]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    first, call_turn, results = body["messages"]
    assert first["content"][:2] == [{"text": "first"}, {"text": "second"}]
    image = first["content"][2]["image"]
    assert (
        image["format"] == "png" and base64.b64decode(image["source"]["bytes"]) == b"\x89PNG fake"
    )
    assert call_turn["content"] == [
        {"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {"q": "x"}}}
    ]
    assert results["content"] == [
        {"toolResult": {"toolUseId": "t1", "content": [{"json": {"ok": True}}]}},
        {"toolResult": {"toolUseId": "t2", "content": [{"text": "plain words"}]}},
        {"text": "and now?"},
    ]
    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "lookup",
                    "inputSchema": {"json": {"type": "object"}},
                    "description": "Look up",
                }
            }
        ]
    }


def test_options_map_to_converse_fields() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = converse_body(
        "bedrock",
        request(
            max_tokens=10,
            temperature=0.2,
            top_p=0.9,
            stop=("END",),
            seed=7,
            frequency_penalty=0.0,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": schema},
            },
            reasoning_effort="low",
            service_tier="flex",
            metadata={"team": "x"},
            user="u-1",
            tools=[TOOL],
            tool_choice={"type": "function", "function": {"name": "lookup"}},
        ),
    )
    assert body["inferenceConfig"] == {
        "maxTokens": 10,
        "temperature": 0.2,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    assert body["outputConfig"] == {
        "textFormat": {
            "type": "json_schema",
            "structure": {
                "jsonSchema": {"schema": json.dumps(schema, separators=(",", ":")), "name": "out"}
            },
        },
        "effort": "low",
    }
    assert body["serviceTier"] == {"type": "flex"}
    assert body["requestMetadata"] == {"team": "x", "user": "u-1"}
    assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "lookup"}}
    assert "seed" not in json.dumps(body)
    choices: list[tuple[str, dict[str, Any]]] = [("auto", {"auto": {}}), ("required", {"any": {}})]
    for choice, wire in choices:
        assert (
            converse_body("bedrock", request(tools=[TOOL], tool_choice=choice))["toolConfig"][
                "toolChoice"
            ]
            == wire
        )
    assert "toolConfig" not in converse_body("bedrock", request(tools=[TOOL], tool_choice="none"))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"response_format": {"type": "json_object"}}, "needs a json_schema"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"presence_penalty": 1.0}, "presence_penalty"),
        ({"top_logprobs": 3}, "log probabilities"),
        ({"reasoning_effort": "minimal"}, "reasoning_effort"),
        ({"service_tier": "scale"}, "service_tier"),
        ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ],
)
def test_what_converse_cannot_do_is_refused(options: dict[str, Any], match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        converse_body("bedrock", request(**options))


def test_bad_messages_are_refused() -> None:
    with pytest.raises(BadRequest, match="data: URL or an s3:// URI"):
        converse_body(
            "bedrock",
            request(
                Message(
                    role="user",
                    content=[ContentPart(type="image_url", image_url="https://x/y.png")],
                )
            ),
        )
    with pytest.raises(ContractError):
        converse_body("bedrock", request(Message(role="tool", content="x")))
    call = ToolCall(id="t", name="lookup", arguments="[1]")
    with pytest.raises(ContractError):
        converse_body("bedrock", request(Message(role="assistant", tool_calls=[call])))
    history = [
        Message(role="user", content="q"),
        Message(role="assistant", tool_calls=[ToolCall(id="t", name="lookup", arguments="{}")]),
        Message(role="tool", content="r", tool_call_id="t"),
    ]
    with pytest.raises(BadRequest, match="tool_choice 'none'"):
        converse_body("bedrock", request(*history, tools=[TOOL], tool_choice="none"))


# -- answers --------------------------------------------------------------------------


async def test_chat_answer_and_usage_with_the_prompt_cache(build: Build) -> None:
    content: list[dict[str, Any]] = [
        {"reasoningContent": {"reasoningText": {"text": "hm"}}},
        {"text": "Hello"},
        {"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {"q": "é"}}},
    ]
    payload = answer(content, "tool_use", cacheReadInputTokens=10, cacheWriteInputTokens=4)
    adapter, recorder = build(lambda r: httpx.Response(200, json=payload))
    result = await adapter.chat(request(), SECRET)
    assert result.finish_reason == "tool_calls"
    assert result.message.content == "Hello"
    assert result.message.tool_calls == [ToolCall(id="t1", name="lookup", arguments='{"q":"é"}')]
    assert result.usage == Usage(
        input_tokens=17,
        output_tokens=2,
        total_tokens=19,
        cached_input_tokens=10,
        cache_write_tokens=4,
    )
    sent = recorder.requests[0]
    assert str(sent.url) == (
        "https://bedrock-runtime.us-west-2.amazonaws.com/model/"
        "anthropic.claude-3-haiku-20240307-v1:0/converse"
    )
    assert "/us-west-2/bedrock/aws4_request" in sent.headers["authorization"]
    assert recorder.body["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("pause_turn", "pause_turn"),
    ],
)
async def test_finish_reasons(build: Build, stop: str, finish: str) -> None:
    adapter, _ = build(lambda r: httpx.Response(200, json=answer([{"text": "x"}], stop)))
    assert (await adapter.chat(request(), SECRET)).finish_reason == finish


@pytest.mark.parametrize(
    ("stop", "cls"),
    [
        ("guardrail_intervened", ContentFiltered),
        ("content_filtered", ContentFiltered),
        ("model_context_window_exceeded", BadRequest),
        ("malformed_model_output", ProviderUnavailable),
    ],
)
async def test_stop_reasons_raised(build: Build, stop: str, cls: type[FleetError]) -> None:
    adapter, _ = build(lambda r: httpx.Response(200, json=answer([{"text": "x"}], stop)))
    with pytest.raises(cls, match=stop):
        await adapter.chat(request(), SECRET)


async def test_api_key_is_a_bearer_token(build: Build) -> None:
    adapter, recorder = build(lambda r: httpx.Response(200, json=answer([{"text": "x"}])))
    await adapter.chat(request(), Secret({"api_key": "ABSKbedrock-key", "region": "eu-central-1"}))
    sent = recorder.requests[0]
    assert sent.headers["authorization"] == "Bearer ABSKbedrock-key"
    assert sent.url.host == "bedrock-runtime.eu-central-1.amazonaws.com"
    assert "x-amz-date" not in sent.headers


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "cls", "retryable"),
    [
        (400, "ValidationException", BadRequest, False),
        (403, "AccessDeniedException", Forbidden, False),
        (403, "UnrecognizedClientException", Unauthorized, False),
        (403, "InvalidSignatureException", Unauthorized, False),
        (403, "ExpiredTokenException", Unauthorized, False),
        (403, "MissingAuthenticationTokenException", Unauthorized, False),
        (400, "IncompleteSignatureException", Unauthorized, False),
        (404, "ResourceNotFoundException", NotFound, False),
        (408, "ModelTimeoutException", ProviderTimeout, True),
        (429, "ThrottlingException", RateLimited, True),
        (429, "ModelNotReadyException", ProviderUnavailable, True),
        (400, "ServiceQuotaExceededException", QuotaExceeded, False),
        (429, "ServiceQuotaExceededException", QuotaExceeded, False),
        (424, "ModelErrorException", InternalError, False),
        (500, "InternalServerException", ProviderUnavailable, True),
        (503, "ServiceUnavailableException", ProviderUnavailable, True),
    ],
)
@pytest.mark.parametrize("via", ["header", "body"])
async def test_error_table(
    build: Build, status: int, kind: str, cls: type[FleetError], retryable: bool, via: str
) -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        response = aws_error(status, kind, f"no {SECRET_KEY}", via)
        response.headers["x-amzn-RequestId"] = "rid-9"
        return response

    adapter, _ = build(handler)
    with pytest.raises(FleetError) as info:
        await adapter.chat(request(), SECRET)
    error = info.value
    assert type(error) is cls and error.retryable is retryable
    assert error.provider_status == status and error.provider_request_id == "rid-9"
    assert error.message == f"bedrock: HTTP {status} {kind}: no [redacted]"


async def test_the_context_length_message_is_a_bad_request(build: Build) -> None:
    adapter, _ = build(
        lambda r: aws_error(400, "ValidationException", "Input is too long for requested model.")
    )
    with pytest.raises(BadRequest, match="Input is too long"):
        await adapter.chat(request(), SECRET)


# -- embeddings -------------------------------------------------------------------------


async def test_titan_fans_out_in_order_with_bounded_concurrency(build: Build) -> None:
    texts = [f"text number {i}" for i in range(20)]
    active = peak = 0

    async def handler(r: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        body = json.loads(r.content)
        await asyncio.sleep(0.001 * (len(body["inputText"]) % 3))
        active -= 1
        index = float(body["inputText"].rsplit(" ", 1)[1])
        return httpx.Response(200, json={"embedding": [index, 1.0], "inputTextTokenCount": 3})

    adapter, recorder = build(handler)  # type: ignore[arg-type]
    result = await adapter.embed(
        EmbedRequest(model="amazon.titan-embed-text-v2:0", inputs=texts, dimensions=256), SECRET
    )
    assert result.count == 20 and result.dims == 2
    assert [row[0] for row in _rows(result.data, 2)] == [float(i) for i in range(20)]
    assert result.usage == Usage(input_tokens=60, total_tokens=60)
    assert peak <= embedding.FAN_OUT
    assert json.loads(recorder.requests[0].content) == {
        "inputText": "text number 0",
        "normalize": True,
        "dimensions": 256,
    }
    assert recorder.requests[0].url.path == "/model/amazon.titan-embed-text-v2:0/invoke"


def _rows(data: bytes, dims: int) -> list[list[float]]:
    import struct

    flat = struct.unpack(f"<{len(data) // 4}f", data)
    return [list(flat[i : i + dims]) for i in range(0, len(flat), dims)]


async def test_a_failed_call_fails_the_whole_embedding(build: Build) -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        if b"bad" in r.content:
            return aws_error(429, "ThrottlingException")
        return httpx.Response(200, json={"embedding": [1.0]})

    adapter, _ = build(handler)
    with pytest.raises(RateLimited):
        await adapter.embed(EmbedRequest(model="mock-e", inputs=["a", "bad", "c"]), SECRET)


async def test_cohere_batches_of_96_and_input_types(build: Build) -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        body = json.loads(r.content)
        vectors = [[float(len(t))] for t in body["texts"]]
        return httpx.Response(
            200,
            headers={"X-Amzn-Bedrock-Input-Token-Count": str(len(body["texts"]))},
            json={"embeddings": {"float": vectors}, "response_type": "embeddings_by_type"},
        )

    adapter, recorder = build(handler)
    texts = ["x" * (i % 5 + 1) for i in range(100)]
    result = await adapter.embed(
        EmbedRequest(model="cohere.embed-english-v3", inputs=texts, input_type="query"), SECRET
    )
    assert result.count == 100 and result.usage.input_tokens == 100
    bodies = [json.loads(r.content) for r in recorder.requests]
    assert [len(b["texts"]) for b in bodies] == [96, 4]
    assert bodies[0]["input_type"] == "search_query" and bodies[0]["embedding_types"] == ["float"]
    with pytest.raises(BadRequest, match="fixed size"):
        await adapter.embed(
            EmbedRequest(model="cohere.embed-english-v3", inputs=["a"], dimensions=256), SECRET
        )
    with pytest.raises(BadRequest, match="input_type"):
        await adapter.embed(
            EmbedRequest(model="cohere.embed-english-v3", inputs=["a"], input_type="image"), SECRET
        )


# -- rerank and verify ------------------------------------------------------------------


async def test_rerank_pages_and_arns(build: Build) -> None:
    pages = [
        {"results": [{"index": 2, "relevanceScore": 0.9}], "nextToken": "more"},
        {"results": [{"index": 0, "relevanceScore": 0.1}]},
    ]

    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[len(recorder.requests) - 1])

    adapter, recorder = build(handler)
    result = await adapter.rerank(
        RerankRequest(model="amazon.rerank-v1:0", query="q", documents=["a", "b", "c"], top_n=2),
        SECRET,
    )
    assert result.items == [RerankItem(index=2, score=0.9), RerankItem(index=0, score=0.1)]
    first, second = (json.loads(r.content) for r in recorder.requests)
    assert (
        recorder.requests[0].url == "https://bedrock-agent-runtime.us-west-2.amazonaws.com/rerank"
    )
    config = first["rerankingConfiguration"]["bedrockRerankingConfiguration"]
    assert config == {
        "numberOfResults": 2,
        "modelConfiguration": {
            "modelArn": "arn:aws:bedrock:us-west-2::foundation-model/amazon.rerank-v1:0"
        },
    }
    assert first["sources"][1] == {
        "type": "INLINE",
        "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": "b"}},
    }
    assert second["nextToken"] == "more" and "nextToken" not in first


async def test_verify(build: Build) -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        if "wrong" in r.headers["authorization"]:
            return aws_error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        return httpx.Response(200, json={"modelSummaries": [{"modelId": "a"}, {"modelId": "b"}]})

    adapter, recorder = build(handler)
    good = await adapter.verify(SECRET)
    assert good.ok and good.detail == "2 foundation models in us-west-2"
    assert (
        str(recorder.requests[0].url) == "https://bedrock.us-west-2.amazonaws.com/foundation-models"
    )
    bad = await adapter.verify(Secret({"api_key": "wrong", "region": "us-west-2"}))
    assert not bad.ok and "security token included in the request is invalid" in bad.detail


async def test_verify_names_a_region_aws_does_not_have(build: Build) -> None:
    def unreachable(r: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Name or service not known", request=r)

    adapter, _ = build(unreachable)
    result = await adapter.verify(Secret({"api_key": "k", "region": "xx-nowhere-1"}))
    assert not result.ok and "'xx-nowhere-1' is not an AWS region" in result.detail
    with pytest.raises(ProviderUnavailable):  # a real region that is down stays retryable
        await adapter.verify(SECRET)

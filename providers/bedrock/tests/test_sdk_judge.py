"""boto3 as an independent judge of the Bedrock mock.

boto3 signs with its own SigV4 (the mock checks it with botocore), parses every
body with the service models, decodes the event stream with botocore's decoder
and raises its own errors: `ClientError` with AWS's `Error.Code` and HTTP status
for every fault, `EventStreamError` for an error inside a stream. The clients run
in a thread (`asyncio.to_thread`): the mock serves from the test's loop.

`retries={"total_max_attempts": 1}`, not `max_attempts`: in botocore's default
(legacy) retry mode `max_attempts: 1` still allows one retry, which would turn a
429 fault into a success.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from providers.bedrock import mock_auth
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from providers.mock.text import answer_rng, answer_tokens, embedding_floats

HELLO_TEXT = "Say hello to the fleet"
HELLO: list[Any] = [{"role": "user", "content": [{"text": HELLO_TEXT}]}]
TOOLS: dict[str, Any] = {
    "tools": [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "Weather for a city",
                "inputSchema": {
                    "json": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    }
                },
            }
        },
        {"toolSpec": {"name": "search_docs", "inputSchema": {"json": {"type": "object"}}}},
    ]
}
ARN = (
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
    "us.anthropic.claude-3-haiku-20240307-v1:0"
)


@pytest.fixture(scope="module")
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig(context_window=5000))
    yield running
    await running.close()


def client(
    mock: RunningMock,
    service: str = "bedrock-runtime",
    secret: str = mock_auth.SECRET_ACCESS_KEY,
    **extra: Any,
) -> Any:
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=mock.sdk_url("bedrock"),
        aws_access_key_id=extra.pop("access_key_id", mock_auth.ACCESS_KEY_ID),
        aws_secret_access_key=secret,
        config=Config(retries={"total_max_attempts": 1}),
        **extra,
    )


@pytest.fixture(scope="module")
def runtime(mock: RunningMock) -> Any:
    return client(mock)


async def call(method: Callable[..., Any], **kwargs: Any) -> Any:
    return await asyncio.to_thread(method, **kwargs)


async def fault(mock: RunningMock, spec: str) -> str:
    """A model name of its own with `spec` queued for its next request."""
    model = f"mock-judge-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=mock.root) as admin:
        response = await admin.post("/_mock/faults", json={"spec": spec, "model": model})
        assert response.status_code == 201
    return model


def hello_text(count: int) -> str:
    return "".join(
        answer_tokens(answer_rng([{"role": "user", "content": HELLO_TEXT}], None), count)
    )


def read_stream(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from response["stream"]


# -- bodies and streams ------------------------------------------------------------------


async def test_converse_text(runtime: Any) -> None:
    answer = await call(
        runtime.converse, modelId="mock-model", messages=HELLO, inferenceConfig={"maxTokens": 5}
    )
    assert answer["output"]["message"]["content"] == [{"text": hello_text(5)}]
    assert answer["stopReason"] == "max_tokens"
    assert answer["usage"] == {"inputTokens": 5, "outputTokens": 5, "totalTokens": 10}
    assert answer["metrics"]["latencyMs"] >= 1
    assert answer["ResponseMetadata"]["RequestId"]


async def test_converse_through_an_inference_profile_arn(runtime: Any) -> None:
    # boto3 sends `%3A` and `%2F` and signs `%253A`/`%252F`: the mock agrees.
    answer = await call(runtime.converse, modelId=ARN, messages=HELLO)
    assert answer["stopReason"] == "end_turn"


async def test_converse_parallel_tools(runtime: Any) -> None:
    asks = [{"role": "user", "content": [{"text": "Please use tools"}]}]
    answer = await call(runtime.converse, modelId="mock-model", messages=asks, toolConfig=TOOLS)
    uses = [b["toolUse"] for b in answer["output"]["message"]["content"]]
    assert answer["stopReason"] == "tool_use"
    assert [u["name"] for u in uses] == ["get_weather", "search_docs"]
    assert isinstance(uses[0]["input"]["city"], str)
    assert len({u["toolUseId"] for u in uses}) == 2
    # The tool turn goes back in, as boto3 users send it.
    turn = [
        *asks,
        answer["output"]["message"],
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": u["toolUseId"], "content": [{"json": {"ok": True}}]}}
                for u in uses
            ],
        },
    ]
    second = await call(runtime.converse, modelId="mock-model", messages=turn, toolConfig=TOOLS)
    assert second["stopReason"] == "end_turn"


async def test_converse_stream_text(runtime: Any) -> None:
    response = await call(
        runtime.converse_stream,
        modelId="mock-model",
        messages=HELLO,
        inferenceConfig={"maxTokens": 6},
    )
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == (
        "application/vnd.amazon.eventstream"
    )
    events = await asyncio.to_thread(lambda: list(read_stream(response)))
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )
    assert text == hello_text(6)
    assert events[-2]["messageStop"]["stopReason"] == "max_tokens"
    assert events[-1]["metadata"]["usage"] == {
        "inputTokens": 5,
        "outputTokens": 6,
        "totalTokens": 11,
    }


async def test_converse_stream_parallel_tools(runtime: Any) -> None:
    asks = [{"role": "user", "content": [{"text": "Use tools now"}]}]
    whole = await call(runtime.converse, modelId="mock-model", messages=asks, toolConfig=TOOLS)
    response = await call(
        runtime.converse_stream, modelId="mock-model", messages=asks, toolConfig=TOOLS
    )
    events = await asyncio.to_thread(lambda: list(read_stream(response)))
    calls: dict[int, dict[str, str]] = {}
    for e in events:
        if "contentBlockStart" in e:
            start = e["contentBlockStart"]
            calls[start["contentBlockIndex"]] = {**start["start"]["toolUse"], "input": ""}
        elif "contentBlockDelta" in e:
            delta = e["contentBlockDelta"]
            calls[delta["contentBlockIndex"]]["input"] += delta["delta"]["toolUse"]["input"]
    streamed = [(c["name"], json.loads(c["input"])) for c in calls.values()]
    created = [
        (b["toolUse"]["name"], b["toolUse"]["input"]) for b in whole["output"]["message"]["content"]
    ]
    assert streamed == created
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"
    assert events[-1]["metadata"]["usage"] == whole["usage"]


async def test_structured_output(runtime: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    }
    answer = await call(
        runtime.converse,
        modelId="mock-model",
        messages=HELLO,
        outputConfig={
            "textFormat": {
                "type": "json_schema",
                "structure": {"jsonSchema": {"schema": json.dumps(schema), "name": "w"}},
            }
        },
    )
    value = json.loads(answer["output"]["message"]["content"][0]["text"])
    assert isinstance(value["city"], str) and isinstance(value["days"], int)


async def test_invoke_titan_and_cohere(runtime: Any) -> None:
    titan = await call(
        runtime.invoke_model,
        modelId="amazon.titan-embed-text-v2:0",
        body=json.dumps({"inputText": "hello world", "dimensions": 256, "normalize": True}),
    )
    payload = json.loads(titan["body"].read())
    assert payload["embedding"] == embedding_floats("hello world", 256)
    assert payload["inputTextTokenCount"] == 2
    assert titan["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "2"
    cohere = await call(
        runtime.invoke_model,
        modelId="cohere.embed-english-v3",
        body=json.dumps(
            {"texts": ["a", "b c"], "input_type": "search_query", "embedding_types": ["float"]}
        ),
    )
    payload = json.loads(cohere["body"].read())
    assert payload["response_type"] == "embeddings_by_type"
    assert payload["embeddings"]["float"] == [embedding_floats(t, 1024) for t in ("a", "b c")]


async def test_list_foundation_models(mock: RunningMock) -> None:
    control = client(mock, "bedrock")
    models = await call(control.list_foundation_models)
    ids = [m["modelId"] for m in models["modelSummaries"]]
    assert "amazon.titan-embed-text-v2:0" in ids and "mock-model" in ids
    embedding = await call(control.list_foundation_models, byOutputModality="EMBEDDING")
    assert {m["outputModalities"][0] for m in embedding["modelSummaries"]} == {"EMBEDDING"}


async def test_rerank(mock: RunningMock) -> None:
    agent = client(mock, "bedrock-agent-runtime")
    documents = ["green pear", "a red apple pie", "apple"]
    answer = await call(
        agent.rerank,
        queries=[{"type": "TEXT", "textQuery": {"text": "red apple"}}],
        sources=[
            {
                "type": "INLINE",
                "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": d}},
            }
            for d in documents
        ],
        rerankingConfiguration={
            "type": "BEDROCK_RERANKING_MODEL",
            "bedrockRerankingConfiguration": {
                "numberOfResults": 2,
                "modelConfiguration": {
                    "modelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.rerank-v1:0"
                },
            },
        },
    )
    assert [r["index"] for r in answer["results"]] == [1, 2]
    assert answer["results"][0]["relevanceScore"] > answer["results"][1]["relevanceScore"]


async def test_temporary_credentials_and_their_token(mock: RunningMock) -> None:
    temporary = client(
        mock,
        secret=mock_auth.SESSION_SECRET,
        access_key_id=mock_auth.SESSION_ACCESS_KEY_ID,
        aws_session_token=mock_auth.SESSION_TOKEN,
    )
    assert (await call(temporary.converse, modelId="mock-model", messages=HELLO))["stopReason"]
    forged = client(
        mock,
        secret=mock_auth.SESSION_SECRET,
        access_key_id=mock_auth.SESSION_ACCESS_KEY_ID,
        aws_session_token="not-the-token",
    )
    with pytest.raises(ClientError) as info:
        await call(forged.converse, modelId="mock-model", messages=HELLO)
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"


# -- errors ----------------------------------------------------------------------------

FAULTS = [
    ("400", "ValidationException", 400),
    ("401", "UnrecognizedClientException", 403),
    ("403", "AccessDeniedException", 403),
    ("404", "ResourceNotFoundException", 404),
    ("429:retry-after=2", "ThrottlingException", 429),
    ("quota", "ServiceQuotaExceededException", 400),
    ("overloaded", "ServiceUnavailableException", 503),
    ("500", "InternalServerException", 500),
    ("503", "ServiceUnavailableException", 503),
    ("context", "ValidationException", 400),
]


@pytest.mark.parametrize(("spec", "code", "status"), FAULTS)
@pytest.mark.parametrize("stream", [False, True])
async def test_every_fault_is_a_client_error(
    mock: RunningMock, runtime: Any, spec: str, code: str, status: int, stream: bool
) -> None:
    model = await fault(mock, spec)
    method = runtime.converse_stream if stream else runtime.converse
    with pytest.raises(ClientError) as info:
        await call(method, modelId=model, messages=HELLO)
    error = info.value.response
    assert error["Error"]["Code"] == code
    assert error["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error["Error"]["Message"]
    assert error["ResponseMetadata"]["RequestId"]
    if spec.startswith("429"):
        assert error["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "2"


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ("stream-error-after:2", "serviceUnavailableException"),
        ("stream-error-after:2:429", "throttlingException"),
        ("stream-error-after:2:400", "validationException"),
        ("stream-error-after:2:500", "internalServerException"),
        ("stream-error-after:2:502", "modelStreamErrorException"),
        ("stream-error-after:2:quota", "ServiceQuotaExceededException"),
    ],
)
async def test_errors_inside_the_stream(
    mock: RunningMock, runtime: Any, spec: str, code: str
) -> None:
    model = await fault(mock, spec)
    response = await call(runtime.converse_stream, modelId=model, messages=HELLO)
    seen: list[dict[str, Any]] = []

    def consume() -> None:
        for event in read_stream(response):
            seen.append(event)

    with pytest.raises(EventStreamError) as info:
        await asyncio.to_thread(consume)
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["Error"]["Message"]
    texts = [e for e in seen if "contentBlockDelta" in e]
    assert len(texts) == 2


@pytest.mark.parametrize(
    ("spec", "reason"),
    [("filtered", "guardrail_intervened"), ("filtered-after:3", "content_filtered")],
)
async def test_filtered_stop_reasons(
    mock: RunningMock, runtime: Any, spec: str, reason: str
) -> None:
    model = await fault(mock, spec)
    answer = await call(runtime.converse, modelId=model, messages=HELLO)
    assert answer["stopReason"] == reason
    model = await fault(mock, spec)
    response = await call(runtime.converse_stream, modelId=model, messages=HELLO)
    events = await asyncio.to_thread(lambda: list(read_stream(response)))
    assert events[-2]["messageStop"]["stopReason"] == reason


async def test_wrong_secret_is_an_invalid_signature(mock: RunningMock) -> None:
    wrong = client(mock, secret=mock_auth.WRONG_SECRET)
    with pytest.raises(ClientError) as info:
        await call(wrong.converse, modelId="mock-model", messages=HELLO)
    error = info.value.response
    assert error["Error"]["Code"] == "InvalidSignatureException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Message"].startswith("The request signature we calculated")
    stranger = client(mock, access_key_id="AKIAUNKNOWN000000000")
    with pytest.raises(ClientError) as info:
        await call(stranger.converse, modelId="mock-model", messages=HELLO)
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"
    elsewhere = boto3.client(
        "bedrock-runtime",
        region_name="xx-nowhere-1",
        endpoint_url=mock.sdk_url("bedrock"),
        aws_access_key_id=mock_auth.ACCESS_KEY_ID,
        aws_secret_access_key=mock_auth.SECRET_ACCESS_KEY,
        config=Config(retries={"total_max_attempts": 1}),
    )
    with pytest.raises(ClientError) as info:
        await call(elsewhere.converse, modelId="mock-model", messages=HELLO)
    assert info.value.response["Error"]["Message"].startswith("Credential should be scoped")


async def test_unknown_model_route_and_bad_requests(mock: RunningMock, runtime: Any) -> None:
    with pytest.raises(ClientError) as info:
        await call(runtime.converse, modelId="anthropic.claude-nonexistent-v9:0", messages=HELLO)
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as info:
        await call(
            runtime.apply_guardrail,
            guardrailIdentifier="g",
            guardrailVersion="1",
            source="INPUT",
            content=[{"text": {"text": "x"}}],
        )
    assert info.value.response["Error"]["Code"] == "UnknownOperationException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    twice = [*HELLO, *HELLO]
    with pytest.raises(ClientError, match="alternate between user and assistant"):
        await call(runtime.converse, modelId="mock-model", messages=twice)
    with pytest.raises(ClientError, match="Input is too long for requested model"):
        await call(
            runtime.converse,
            modelId="mock-model",
            messages=[{"role": "user", "content": [{"text": "word " * 5001}]}],
        )
    with pytest.raises(ClientError, match="doesn't support this operation"):
        await call(runtime.converse, modelId="amazon.titan-embed-text-v2:0", messages=HELLO)

"""The official `cohere` SDK as an independent judge of the Cohere mock.

The SDK must parse every body and stream the mock sends and raise its own typed
error (`cohere.errors.*`) for every fault. The SDK builds its models without
validating them, so raw bodies are also validated with those models
(`model_validate`), and any field they do not know (`model_extra`) fails, save
the ones the real API is known to send beyond the SDK's models (the
`message-start` echo of an empty message).

The key check is `POST /v1/check-api-key` through the SDK's raw client: its
`check_api_key` method is stubbed out as deprecated since cohere 5.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Final

import cohere
import httpx
import pydantic
import pytest
from cohere.core.api_error import ApiError

from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from providers.mock.text import answer_rng, answer_tokens

MODEL: Final = "mock-command"  # "mock-" names are always served, on every endpoint
PROMPT: Final = "Say hello to the fleet"
HELLO: Final[list[cohere.ChatMessageV2]] = [cohere.UserChatMessageV2(content=PROMPT)]
CITY_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}
TOOLS: Final = [
    cohere.ToolV2(
        function=cohere.ToolV2Function(
            name="get_weather", description="Weather for a city", parameters=CITY_SCHEMA
        )
    ),
    cohere.ToolV2(
        function=cohere.ToolV2Function(
            name="search_docs",
            parameters={"type": "object", "properties": {"query": {"type": "string"}}},
        )
    ),
]
USE_TOOLS: Final[list[cohere.ChatMessageV2]] = [
    cohere.UserChatMessageV2(content="Please use tools to look this up")
]
_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(cohere.V2ChatStreamResponse)
# What the real API's `message-start` carries beyond the SDK's model of it.
_START_ECHO: Final = {"content", "tool_plan", "tool_calls", "citations"}


@pytest.fixture
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig(context_window=5000), "127.0.0.1", 0)
    yield running
    await running.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def sdk(mock: RunningMock, http: httpx.AsyncClient, key: str = "mock-key") -> cohere.AsyncClientV2:
    return cohere.AsyncClientV2(
        api_key=key, base_url=mock.sdk_url("cohere"), max_retries=0, httpx_client=http
    )


@pytest.fixture
def client(mock: RunningMock, http: httpx.AsyncClient) -> cohere.AsyncClientV2:
    return sdk(mock, http)


async def raw_post(
    mock: RunningMock, http: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> httpx.Response:
    headers = {"Authorization": "Bearer mock-key"}
    return await http.post(mock.url("cohere") + path, json=body, headers=headers)


def fault(spec: str) -> Any:
    return {"additional_headers": {"x-mock-fault": spec}}


def _models(value: Any) -> Iterator[pydantic.BaseModel]:
    if isinstance(value, pydantic.BaseModel):
        yield value
        for name in type(value).model_fields:
            yield from _models(getattr(value, name))
    elif isinstance(value, list):
        for item in value:
            yield from _models(item)


def assert_no_invented_fields(
    value: pydantic.BaseModel, allowed: frozenset[str] = frozenset()
) -> None:
    for model in _models(value):
        extra = set(model.model_extra or ()) - allowed
        assert not extra, f"{type(model).__name__} has unknown {extra}"


def sse_events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in body.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            assert name.startswith("event: ") and data.startswith("data: ")
            events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def hello_text(count: int) -> str:
    messages = [{"role": "user", "content": PROMPT}]
    return "".join(answer_tokens(answer_rng(messages, None), count))


def texts_of(response: cohere.V2ChatResponse) -> str:
    return "".join(
        item.text
        for item in response.message.content or ()
        if isinstance(item, cohere.TextAssistantMessageResponseContentItem)
    )


# The SDK's stream models make every level optional; these read what a valid event has.
def delta_text(event: Any) -> str:
    return str(event.delta.message.content.text or "")


def plan_text(event: Any) -> str:
    return str(event.delta.message.tool_plan or "")


def tool_call(event: Any) -> Any:
    return event.delta.message.tool_calls


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [event async for event in stream]


# -- chat -------------------------------------------------------------------------------


async def test_chat_text_is_parsed_and_valid(
    client: cohere.AsyncClientV2, mock: RunningMock, http: httpx.AsyncClient
) -> None:
    response = await client.chat(model=MODEL, messages=HELLO, max_tokens=5)
    assert texts_of(response) == hello_text(5)
    assert response.finish_reason == "MAX_TOKENS"
    assert response.usage is not None and response.usage.tokens is not None
    assert response.usage.tokens.input_tokens == 5 and response.usage.tokens.output_tokens == 5
    raw = await raw_post(
        mock, http, "/v2/chat", {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}
    )
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/json")
    whole = cohere.V2ChatResponse.model_validate(raw.json())
    assert_no_invented_fields(whole)
    assert whole.finish_reason == "COMPLETE"


async def test_chat_parallel_tools_and_their_round_trip(client: cohere.AsyncClientV2) -> None:
    response = await client.chat(model=MODEL, messages=USE_TOOLS, tools=TOOLS)
    assert response.finish_reason == "TOOL_CALL"
    calls = response.message.tool_calls or []
    assert [c.function.name for c in calls if c.function] == ["get_weather", "search_docs"]
    assert response.message.tool_plan
    assert len({c.id for c in calls}) == 2
    arguments = [json.loads(c.function.arguments or "") for c in calls if c.function]
    assert set(arguments[0]) == {"city", "days"} and isinstance(arguments[0]["days"], int)
    follow_up: list[cohere.ChatMessageV2] = [
        *USE_TOOLS,
        cohere.AssistantChatMessageV2(tool_calls=calls, tool_plan=response.message.tool_plan),
        *(cohere.ToolChatMessageV2(tool_call_id=c.id, content='{"ok": true}') for c in calls),
    ]
    answer = await client.chat(model=MODEL, messages=follow_up, tools=TOOLS)
    assert answer.finish_reason == "COMPLETE" and texts_of(answer)
    required = await client.chat(model=MODEL, messages=HELLO, tools=TOOLS, tool_choice="REQUIRED")
    assert required.finish_reason == "TOOL_CALL"
    plain = await client.chat(model=MODEL, messages=USE_TOOLS, tools=TOOLS, tool_choice="NONE")
    assert plain.finish_reason == "COMPLETE" and not plain.message.tool_calls


async def test_json_and_stop_sequences(client: cohere.AsyncClientV2) -> None:
    shaped = await client.chat(
        model=MODEL,
        messages=HELLO,
        response_format=cohere.JsonObjectResponseFormatV2(json_schema=CITY_SCHEMA),
    )
    assert set(json.loads(texts_of(shaped))) == {"city", "days"}
    loose = await client.chat(
        model=MODEL, messages=HELLO, response_format=cohere.JsonObjectResponseFormatV2()
    )
    assert isinstance(json.loads(texts_of(loose)), dict)
    text = hello_text(20)
    stop = text.split()[6]
    cut = await client.chat(model=MODEL, messages=HELLO, max_tokens=20, stop_sequences=[stop])
    assert cut.finish_reason == "STOP_SEQUENCE"
    assert texts_of(cut) == text[: text.index(stop)]


async def test_chat_stream_events_validate(
    client: cohere.AsyncClientV2, mock: RunningMock, http: httpx.AsyncClient
) -> None:
    events = await collect(client.chat_stream(model=MODEL, messages=HELLO, max_tokens=6))
    kinds = [e.type for e in events]
    assert kinds == [
        "message-start",
        "content-start",
        *["content-delta"] * 6,
        "content-end",
        "message-end",
    ]
    text = "".join(
        delta_text(e) for e in events if isinstance(e, cohere.ContentDeltaV2ChatStreamResponse)
    )
    assert text == hello_text(6)
    last = events[-1]
    assert isinstance(last, cohere.MessageEndV2ChatStreamResponse) and last.delta is not None
    assert last.delta.finish_reason == "MAX_TOKENS"
    whole = await client.chat(model=MODEL, messages=HELLO, max_tokens=6)
    assert last.delta.usage == whole.usage
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    raw = await raw_post(mock, http, "/v2/chat", body)
    assert raw.headers["content-type"].startswith("text/event-stream")
    for name, data in sse_events(raw.content):
        assert data["type"] == name
        allowed = _START_ECHO if name == "message-start" else frozenset()
        assert_no_invented_fields(_EVENTS.validate_python(data), frozenset(allowed))


async def test_chat_stream_tool_calls(
    client: cohere.AsyncClientV2, mock: RunningMock, http: httpx.AsyncClient
) -> None:
    events = await collect(client.chat_stream(model=MODEL, messages=USE_TOOLS, tools=TOOLS))
    plan = "".join(
        plan_text(e) for e in events if isinstance(e, cohere.ToolPlanDeltaV2ChatStreamResponse)
    )
    calls: dict[int, dict[str, str]] = {}
    for event in events:
        if isinstance(event, cohere.ToolCallStartV2ChatStreamResponse):
            calls[event.index or 0] = {"name": tool_call(event).function.name, "arguments": ""}
        elif isinstance(event, cohere.ToolCallDeltaV2ChatStreamResponse):
            calls[event.index or 0]["arguments"] += tool_call(event).function.arguments or ""
    whole = await client.chat(model=MODEL, messages=USE_TOOLS, tools=TOOLS)
    assert plan == whole.message.tool_plan
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        (c.function.name, json.loads(c.function.arguments or ""))
        for c in whole.message.tool_calls or ()
        if c.function
    ]
    assert events[-1].delta.finish_reason == "TOOL_CALL"
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Please use tools"}],
        "tools": [t.model_dump(exclude_none=True) for t in TOOLS],
        "stream": True,
    }
    raw = await raw_post(mock, http, "/v2/chat", body)
    names = [name for name, _ in sse_events(raw.content)]
    assert names[:2] == ["message-start", "tool-plan-delta"]
    assert names[-2:] == ["tool-call-end", "message-end"]
    for name, data in sse_events(raw.content):
        allowed = _START_ECHO if name == "message-start" else frozenset()
        assert_no_invented_fields(_EVENTS.validate_python(data), frozenset(allowed))


async def test_an_error_inside_a_stream_is_a_failed_message_end(
    client: cohere.AsyncClientV2,
) -> None:
    events = await collect(
        client.chat_stream(
            model=MODEL, messages=HELLO, request_options=fault("stream-error-after:3:429")
        )
    )
    deltas = [e for e in events if isinstance(e, cohere.ContentDeltaV2ChatStreamResponse)]
    assert len(deltas) == 3
    last = events[-1]
    assert isinstance(last, cohere.MessageEndV2ChatStreamResponse) and last.delta is not None
    assert last.delta.finish_reason == "ERROR"
    assert last.delta.error is not None and "per minute request limit" in last.delta.error


# -- embed, rerank, key check, models -----------------------------------------------------


async def test_embed(
    client: cohere.AsyncClientV2, mock: RunningMock, http: httpx.AsyncClient
) -> None:
    texts = ["the first text", "a second text", "the first text"]
    response = await client.embed(
        model=MODEL,
        input_type="search_document",
        texts=texts,
        embedding_types=["float", "int8", "ubinary"],
        output_dimension=16,
    )
    floats = response.embeddings.float_ or []
    assert len(floats) == 3 and all(len(v) == 16 for v in floats)
    assert floats[0] == floats[2] and floats[0] != floats[1]
    assert [len(v) for v in response.embeddings.int8 or ()] == [16] * 3
    assert [len(v) for v in response.embeddings.ubinary or ()] == [2] * 3
    assert response.meta is not None and response.meta.billed_units is not None
    assert response.meta.billed_units.input_tokens == 9
    body = {
        "model": "embed-v4.0",
        "input_type": "search_query",
        "texts": texts,
        "embedding_types": ["float"],
    }
    raw = await raw_post(mock, http, "/v2/embed", body)
    parsed = cohere.EmbedByTypeResponse.model_validate(raw.json())
    assert_no_invented_fields(parsed)
    assert len((parsed.embeddings.float_ or [[]])[0]) == 1536
    with pytest.raises(cohere.BadRequestError) as too_many:
        await client.embed(
            model=MODEL, input_type="search_document", texts=["x"] * 97, embedding_types=["float"]
        )
    assert too_many.value.body["message"].startswith("invalid request: total number of texts")
    with pytest.raises(cohere.BadRequestError):
        await client.embed(
            model="embed-english-v3.0",
            input_type="clustering",
            texts=["x"],
            output_dimension=256,
            embedding_types=["float"],
        )


async def test_rerank(
    client: cohere.AsyncClientV2, mock: RunningMock, http: httpx.AsyncClient
) -> None:
    documents = ["cats and dogs", "the queue is durable", "a durable queue of jobs", "one queue"]
    response = await client.rerank(model=MODEL, query="durable queue", documents=documents, top_n=3)
    assert [r.index for r in response.results][:2] in ([1, 2], [2, 1])
    assert response.results[2].index == 3 and len(response.results) == 3
    scores = [r.relevance_score for r in response.results]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert response.meta is not None and response.meta.billed_units is not None
    assert response.meta.billed_units.search_units == 1
    raw = await raw_post(
        mock, http, "/v2/rerank", {"model": "rerank-v3.5", "query": "q", "documents": documents}
    )
    assert_no_invented_fields(cohere.V2RerankResponse.model_validate(raw.json()))
    with pytest.raises(cohere.BadRequestError) as empty:
        await client.rerank(model=MODEL, query="q", documents=[])
    assert empty.value.body["message"] == "invalid request: list of documents must not be empty"
    with pytest.raises(cohere.BadRequestError, match="not supported by the rerank API"):
        await client.rerank(model="command-a-03-2025", query="q", documents=["a"])


async def test_check_api_key(mock: RunningMock, http: httpx.AsyncClient) -> None:
    # The raw client mixes in v1's methods at run time, beyond what its type says.
    raw: Any = sdk(mock, http).with_raw_response
    good = await raw.check_api_key()
    assert_no_invented_fields(good.data)
    assert good.data.valid is True and good.data.organization_id
    with pytest.raises(cohere.UnauthorizedError) as wrong:
        wrong_raw: Any = sdk(mock, http, "wrong-key").with_raw_response
        await wrong_raw.check_api_key()
    assert wrong.value.body == {"id": wrong.value.body["id"], "message": "invalid api token"}


async def test_models_list_and_get(
    client: cohere.AsyncClientV2, mock: RunningMock, http: httpx.AsyncClient
) -> None:
    names: list[str] = []
    token: str | None = None
    while True:
        page = await client.models.list(page_size=5, page_token=token)
        names.extend(m.name or "" for m in page.models)
        for model in page.models:
            assert_no_invented_fields(model)
        token = page.next_page_token
        if not token:
            break
    assert "embed-v4.0" in names and set(MockConfig().models) <= set(names)
    rerankers = await client.models.list(endpoint="rerank")
    assert all("rerank" in (m.endpoints or ()) for m in rerankers.models)
    model = await client.models.get("command-a-03-2025")
    assert model.endpoints == ["chat"]
    with pytest.raises(cohere.NotFoundError):
        await client.models.get("no-such-model")


# -- errors -----------------------------------------------------------------------------

FAULTS: Final[Sequence[tuple[str, type[ApiError], int, str]]] = [
    ("400", cohere.BadRequestError, 400, "invalid request: "),
    ("401", cohere.UnauthorizedError, 401, "invalid api token"),
    ("403", cohere.ForbiddenError, 403, "You do not have access"),
    ("404", cohere.NotFoundError, 404, f"model '{MODEL}' not found"),
    ("429:retry-after=2", cohere.TooManyRequestsError, 429, "You are past the per minute"),
    (
        "quota",
        cohere.TooManyRequestsError,
        429,
        "You are using a Trial key, which is limited to 1000 API calls / month",
    ),
    ("context", cohere.BadRequestError, 400, "too many tokens: "),
    ("overloaded", cohere.ServiceUnavailableError, 503, "service unavailable"),
    ("500", cohere.InternalServerError, 500, "internal server error"),
    ("502", ApiError, 502, "bad gateway"),
    ("503", cohere.ServiceUnavailableError, 503, "service unavailable"),
    ("504", cohere.GatewayTimeoutError, 504, "gateway timeout"),
]


@pytest.mark.parametrize(("spec", "cls", "status", "wording"), FAULTS)
@pytest.mark.parametrize("call", ["chat", "chat_stream", "embed", "rerank"])
async def test_every_fault_is_the_sdks_typed_error(
    client: cohere.AsyncClientV2,
    spec: str,
    cls: type[ApiError],
    status: int,
    wording: str,
    call: str,
) -> None:
    with pytest.raises(cls) as info:
        if call == "chat":
            await client.chat(model=MODEL, messages=HELLO, request_options=fault(spec))
        elif call == "chat_stream":
            await collect(
                client.chat_stream(model=MODEL, messages=HELLO, request_options=fault(spec))
            )
        elif call == "embed":
            await client.embed(
                model=MODEL,
                input_type="search_query",
                texts=["a"],
                embedding_types=["float"],
                request_options=fault(spec),
            )
        else:
            await client.rerank(
                model=MODEL, query="q", documents=["a"], request_options=fault(spec)
            )
    error = info.value
    assert error.status_code == status
    assert isinstance(error.body, dict) and set(error.body) == {"id", "message"}
    assert error.body["message"].startswith(wording)
    if status == 429 and spec != "quota":
        assert error.headers is not None and error.headers["retry-after"] == "2"


async def test_unknown_model_context_and_bad_requests(client: cohere.AsyncClientV2) -> None:
    with pytest.raises(cohere.NotFoundError) as missing:
        await client.chat(model="command-nonexistent", messages=HELLO)
    assert missing.value.body["message"].startswith("model 'command-nonexistent' not found")
    with pytest.raises(cohere.BadRequestError) as overflow:
        await client.chat(model=MODEL, messages=HELLO, max_tokens=4999)
    assert overflow.value.body["message"].startswith("too many tokens: size limit exceeded by 4")
    stray: list[cohere.ChatMessageV2] = [
        *HELLO,
        cohere.ToolChatMessageV2(tool_call_id="nobody_asked", content="{}"),
    ]
    with pytest.raises(cohere.BadRequestError, match="does not match any tool call"):
        await client.chat(model=MODEL, messages=stray)
    with pytest.raises(cohere.BadRequestError, match="tool_choice can only be specified"):
        await client.chat(model=MODEL, messages=HELLO, tool_choice="REQUIRED")
    with pytest.raises(cohere.BadRequestError, match="not supported with tools"):
        await client.chat(
            model=MODEL,
            messages=HELLO,
            tools=TOOLS,
            response_format=cohere.JsonObjectResponseFormatV2(),
        )


async def test_unknown_routes_answer_in_cohere_shape(
    mock: RunningMock, http: httpx.AsyncClient
) -> None:
    headers = {"Authorization": "Bearer mock-key"}
    missing = await http.get(mock.url("cohere") + "/v9/nothing", headers=headers)
    assert missing.status_code == 404
    assert missing.json() == {"id": missing.json()["id"], "message": "404 page not found"}
    wrong_method = await http.get(mock.url("cohere") + "/v2/chat", headers=headers)
    assert wrong_method.status_code == 405 and set(wrong_method.json()) == {"id", "message"}
    anonymous = await http.post(mock.url("cohere") + "/v2/chat", json={})
    assert anonymous.status_code == 401 and anonymous.json()["message"] == "no api key supplied"


async def test_rate_limiter_answers_cohere_429(http: httpx.AsyncClient) -> None:
    limited = await start_mock(MockConfig(requests_per_minute=1), "127.0.0.1", 0)
    try:
        client = sdk(limited, http)
        await client.chat(model=MODEL, messages=HELLO)
        with pytest.raises(cohere.TooManyRequestsError) as info:
            await client.chat(model=MODEL, messages=HELLO)
        assert info.value.headers is not None and int(info.value.headers["retry-after"]) >= 1
        assert info.value.body["message"].startswith("You are past the per minute request limit")
    finally:
        await limited.close()

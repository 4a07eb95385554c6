"""OpenAI's API as a mock (`/openai/v1/chat/completions`, `/embeddings`, `/models`).

Wire shapes follow shared/reference/providers.md sections 3-6 and 10. Streams are
hot paths (hundreds of concurrent 50 tok/s streams per process), so each stream
pre-builds the bytes around a content token and splices in only the token text.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any, Final

from aiohttp import web

from providers.mock.app import (
    MAX_BODY,
    Dropped,
    MockProvider,
    MockShared,
    Pacer,
    StreamCounter,
    delay_whole_response,
    interrupt,
    new_id,
    shared_state,
)
from providers.mock.config import MockConfig
from providers.mock.faults import (
    ErrorFault,
    Fault,
    MockError,
    bad_request,
    mask_key,
    retry_headers,
)
from providers.mock.text import (
    WORDS,
    answer_rng,
    answer_tokens,
    embedding_bytes,
    embedding_floats,
    last_user_text,
    prompt_token_count,
)

_SEPARATORS: Final = (",", ":")
_SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
_CONTENT_SUFFIX: Final = b'},"finish_reason":null}]}\n\n'
_DONE: Final = b"data: [DONE]\n\n"
_MODEL_CREATED: Final = 1_700_000_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class _ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class _Answer:
    tokens: list[str]
    tool_calls: list[_ToolCall]
    finish_reason: str
    prompt_tokens: int


def _dumps(value: object) -> str:
    return json.dumps(value, separators=_SEPARATORS)


# ---------------------------------------------------------------- request parsing


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise bad_request(
            "We could not parse the JSON body of your request. The OpenAI API expects a "
            "JSON payload."
        ) from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _require_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter")
    return model


def _positive_int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad_request(f"Invalid '{name}': expected an integer >= 1.", name, "invalid_value")
    return value


def _token_limit(body: Mapping[str, Any]) -> int | None:
    newer = _positive_int(body, "max_completion_tokens")
    older = _positive_int(body, "max_tokens")
    return newer if newer is not None else older


def _messages(body: Mapping[str, Any]) -> list[Any]:
    messages = body.get("messages")
    if messages is None:
        raise bad_request(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise bad_request("Invalid 'messages': expected a non-empty array.", "messages")
    if not all(isinstance(m, dict) for m in messages):
        raise bad_request("Invalid 'messages': every message must be an object.", "messages")
    return messages


def _include_usage(body: Mapping[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise bad_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    return isinstance(options, dict) and options.get("include_usage") is True


def _embedding_inputs(raw: object) -> list[tuple[str, int]]:
    """(text to embed, token count) per input; token arrays are accepted as OpenAI does."""
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise bad_request("'input' must be a non-empty string or array.", "input")
    inputs: list[tuple[str, int]] = []
    for item in raw:
        if isinstance(item, str) and item:
            inputs.append((item, max(len(item.split()), 1)))
        elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
            inputs.append((" ".join(map(str, item)), len(item)))
        else:
            raise bad_request("'input' items must be non-empty strings or token arrays.", "input")
    return inputs


# ---------------------------------------------------------------- answers


def _tool_names(body: Mapping[str, Any], messages: Sequence[Any]) -> list[str]:
    """The functions to call instead of answering with text (empty: answer with text)."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return []
    names = [
        t["function"]["name"]
        for t in tools
        if isinstance(t, dict)
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
    ]
    choice = body.get("tool_choice")
    if not names or choice == "none":
        return []
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        return [name] if isinstance(name, str) else []
    if choice == "required" or "use tools" in last_user_text(messages).lower():
        return names[:2]
    return []


def _compose(body: Mapping[str, Any], messages: list[Any], config: MockConfig) -> _Answer:
    limit = _token_limit(body)  # validated even when tools answer, as OpenAI does
    seed = body.get("seed")
    rng = answer_rng(messages, seed if isinstance(seed, int) else None)
    prompt_tokens = prompt_token_count(messages)
    names = _tool_names(body, messages)
    if names:
        calls = [
            _ToolCall(f"call_{i}", name, json.dumps({"query": rng.choice(WORDS)}))
            for i, name in enumerate(names)
        ]
        return _Answer([], calls, "tool_calls", prompt_tokens)
    count = config.max_tokens_default if limit is None else min(limit, config.max_tokens_default)
    finish = "length" if count < config.max_tokens_default else "stop"
    return _Answer(answer_tokens(rng, count), [], finish, prompt_tokens)


def _split_arguments(arguments: str) -> list[str]:
    """Three fragments (fewer for tiny strings), so clients must concatenate."""
    cut = max(len(arguments) // 3, 1)
    parts = [arguments[:cut], arguments[cut : 2 * cut], arguments[2 * cut :]]
    return [p for p in parts if p]


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _stamp() -> str:
    return f" t{time.time_ns()}"


# ---------------------------------------------------------------- streaming


class _ChunkWriter:
    """Writes `chat.completion.chunk` SSE events for one stream."""

    __slots__ = ("_content_prefix", "_head", "_resp")

    def __init__(self, resp: web.StreamResponse, completion_id: str, created: int, model: str):
        self._resp = resp
        self._head = (
            f'data: {{"id":{_dumps(completion_id)},"object":"chat.completion.chunk",'
            f'"created":{created},"model":{_dumps(model)},"choices":'
        ).encode()
        self._content_prefix = self._head + b'[{"index":0,"delta":{"content":'

    def frame(self, delta: Mapping[str, Any], finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return self._head + _dumps([choice]).encode() + b"}\n\n"

    async def write(self, frame: bytes) -> None:
        await self._resp.write(frame)

    async def content(self, text: str) -> None:
        await self._resp.write(self._content_prefix + json.dumps(text).encode() + _CONTENT_SUFFIX)

    async def usage(self, usage: Mapping[str, int]) -> None:
        await self._resp.write(self._head + b'[],"usage":' + _dumps(usage).encode() + b"}\n\n")


def _tool_frames(writer: _ChunkWriter, calls: Sequence[_ToolCall]) -> list[bytes]:
    """Each call's header then argument fragments, calls interleaved to test index assembly."""
    per_call: list[list[bytes]] = []
    for index, call in enumerate(calls):
        header = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        frames = [writer.frame({"tool_calls": [header]}, None)]
        frames += [
            writer.frame({"tool_calls": [{"index": index, "function": {"arguments": part}}]}, None)
            for part in _split_arguments(call.arguments)
        ]
        per_call.append(frames)
    return [frame for group in zip_longest(*per_call) for frame in group if frame is not None]


async def _send_stream(
    request: web.Request,
    writer: _ChunkWriter,
    answer: _Answer,
    config: MockConfig,
    fault: Fault | None,
) -> int:
    """Role chunk, content/tool chunks, finish chunk; returns completion tokens."""
    frames = _tool_frames(writer, answer.tool_calls) if answer.tool_calls else None
    total = len(frames) if frames is not None else len(answer.tokens)
    role = {"role": "assistant", "content": None if frames is not None else ""}
    pacer = Pacer(config.tokens_per_sec)
    if config.ttft_ms:
        await asyncio.sleep(config.ttft_ms / 1000)
    for index in range(total):
        await interrupt(request, fault, index, total)
        await pacer.wait()
        if index == 0:
            await writer.write(writer.frame(role, None))
        if frames is not None:
            await writer.write(frames[index])
        else:
            await writer.content(_stamp() if config.stamp_tokens else answer.tokens[index])
    await interrupt(request, fault, total, total)
    await writer.write(writer.frame({}, answer.finish_reason))
    return total


async def _stream_chat(
    request: web.Request,
    state: MockShared,
    model: str,
    answer: _Answer,
    include_usage: bool,
    fault: Fault | None,
) -> web.StreamResponse:
    resp = web.StreamResponse(headers=_SSE_HEADERS)
    await resp.prepare(request)
    writer = _ChunkWriter(resp, new_id("chatcmpl-"), int(time.time()), model)
    with StreamCounter(state.stats):
        completion_tokens = await _send_stream(request, writer, answer, state.config, fault)
        if include_usage:
            await writer.usage(_usage(answer.prompt_tokens, completion_tokens))
        await writer.write(_DONE)
    return resp


# ---------------------------------------------------------------- non-streaming


def _completion_body(model: str, answer: _Answer, config: MockConfig) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant"}
    if answer.tool_calls:
        message["content"] = None
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in answer.tool_calls
        ]
        completion_tokens = sum(len(_split_arguments(c.arguments)) + 1 for c in answer.tool_calls)
    else:
        tokens = [_stamp() for _ in answer.tokens] if config.stamp_tokens else answer.tokens
        message["content"] = "".join(tokens)
        completion_tokens = len(tokens)
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": answer.finish_reason}],
        "usage": _usage(answer.prompt_tokens, completion_tokens),
    }


def _json_response(payload: Mapping[str, Any]) -> web.Response:
    return web.Response(body=_dumps(payload).encode(), content_type="application/json")


# ---------------------------------------------------------------- handlers


def _pick_fault(request: web.Request, model: str | None) -> Fault | None:
    fault = shared_state(request).pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        raise fault_error(fault, model)
    return fault


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await _json_object(request)
    model = _require_model(body)
    messages = _messages(body)
    stream = body.get("stream") is True
    include_usage = _include_usage(body, stream)
    answer = _compose(body, messages, state.config)
    fault = _pick_fault(request, model)
    if stream:
        return await _stream_chat(request, state, model, answer, include_usage, fault)
    completion = _completion_body(model, answer, state.config)
    try:
        await delay_whole_response(
            request, state.config, fault, completion["usage"]["completion_tokens"]
        )
    except Dropped:
        return web.Response()  # never sent: the transport is gone
    return _json_response(completion)


async def _embeddings(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await _json_object(request)
    model = _require_model(body)
    inputs = _embedding_inputs(body.get("input"))
    dims = _positive_int(body, "dimensions") or state.config.embed_dims
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    fault = _pick_fault(request, model)
    try:
        await delay_whole_response(request, state.config, fault, 1)
    except Dropped:
        return web.Response()
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": (
                base64.b64encode(embedding_bytes(text, dims)).decode()
                if encoding == "base64"
                else embedding_floats(text, dims)
            ),
        }
        for index, (text, _) in enumerate(inputs)
    ]
    tokens = sum(count for _, count in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _json_response({"object": "list", "data": data, "model": model, "usage": usage})


async def _models(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    _pick_fault(request, None)
    data = [
        {"id": m, "object": "model", "created": _MODEL_CREATED, "owned_by": "llm-fleet-mock"}
        for m in state.config.models
    ]
    return _json_response({"object": "list", "data": data})


# ---------------------------------------------------------------- errors


class OpenAIError(MockError):
    """An error in OpenAI's body shape: `{"error":{"message","type","param","code"}}`."""


def render_error(error: MockError) -> web.Response:
    body = {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }
    return web.Response(
        status=error.status,
        body=_dumps(body).encode(),
        content_type="application/json",
        headers=error.headers,
    )


def invalid_key_error(presented: str | None) -> MockError:
    if not presented:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    else:
        message = f"Incorrect API key provided: {mask_key(presented)}."
    return MockError(401, message, "invalid_request_error", "invalid_api_key")


_SERVER_ERRORS: Final[Mapping[int, str]] = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
    504: "Gateway timeout.",
}


def fault_error(fault: ErrorFault, model: str | None) -> MockError:
    kind = fault.kind
    if kind == "quota":
        return MockError(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        )
    if kind == "rate_limited":
        message = f"Rate limit reached for {model or 'requests'} (mock). Please try again later."
        return MockError(
            429, message, "requests", "rate_limit_exceeded", headers=retry_headers(fault)
        )
    if kind == "unauthorized":
        return MockError(
            401,
            "Incorrect API key provided (mock fault).",
            "invalid_request_error",
            "invalid_api_key",
        )
    if kind == "forbidden":
        return MockError(
            403,
            "Country, region, or territory not supported.",
            "request_forbidden",
            "unsupported_country_region_territory",
        )
    if kind == "not_found":
        message = f"The model `{model}` does not exist or you do not have access to it."
        return MockError(404, message, "invalid_request_error", "model_not_found")
    if kind == "context":
        return MockError(
            400,
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in more tokens. Please reduce the length of the messages.",
            "invalid_request_error",
            "context_length_exceeded",
            "messages",
        )
    if kind == "overloaded":
        return MockError(503, _SERVER_ERRORS[503], "server_error")
    if kind == "bad_request":
        return bad_request("Invalid request (mock fault).")
    return MockError(
        fault.status, _SERVER_ERRORS.get(fault.status, "Server error."), "server_error"
    )


# ---------------------------------------------------------------- app plumbing


def _authorize(request: web.Request, config: MockConfig) -> None:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else ""
    if not key or not (config.accept_any_key or key in config.api_keys):
        raise invalid_key_error(key)


@web.middleware
async def _gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts the request, checks the key, and renders errors in OpenAI's shape."""
    state = shared_state(request)
    route = request.match_info.route.resource
    state.stats.requests[route.canonical if route is not None else "<unmatched>"] += 1
    try:
        _authorize(request, state.config)
        return await handler(request)
    except MockError as exc:
        return render_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = f"Invalid URL ({request.method} {request.path})"
        return render_error(MockError(exc.status, message, "invalid_request_error"))


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("x-request-id", new_id("req_"))


def build_app() -> web.Application:
    """OpenAI's routes, to be mounted under `/openai` by `providers.mock.app.build_app`."""
    app = web.Application(middlewares=[_gate], client_max_size=MAX_BODY)
    app.on_response_prepare.append(_add_request_id)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_get("/v1/models", _models)
    return app


MOCK = MockProvider(prefix="openai", build=build_app, sdk_path="/v1", api_path="/v1")

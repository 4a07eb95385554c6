"""OpenAI's API as a mock (`/openai/v1/chat/completions`, `/embeddings`, `/models`).

What it reproduces of the real API (checked against the recordings in
shared/reference/transcripts/openai and judged by the official `openai` SDK):

* bodies and chunks field for field (`system_fingerprint`, `service_tier`,
  `logprobs`, `refusal`, `annotations`, usage with prompt and completion token
  details, reasoning tokens for o-series and gpt-5 models, `usage: null` on every
  chunk when usage was asked for, `obfuscation` padding); see `mock_wire`;
* random `call_…` tool-call ids, parallel calls streamed one after the other
  (`parallel_tool_calls: false` → one call; the `interleave` fault mixes them),
  `n` choices, `stop` sequences, `response_format` `json_object` and
  `json_schema` answered with valid JSON; see `mock_answers`;
* OpenAI's refusals of bad requests: 404 `model_not_found` for unknown models
  (`MockShared.knows_model`), 400 `unsupported_parameter` for `max_tokens` on
  reasoning models, 400 `context_length_exceeded` past `MockConfig.context_window`,
  the `json` word rule of `json_object`, and the other 400s of `mock_request`;
* every fault of `providers.mock.faults` in OpenAI's error shape, in-stream errors
  as `data: {"error": {…}}` followed by the end of the stream, and the per-key
  rate limiter's 429s with `retry-after`/`retry-after-ms`; see `mock_errors`;
* `x-request-id`, `openai-processing-ms`, `openai-version` on every answer and
  `x-ratelimit-*` on every chat and embeddings answer.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

from aiohttp import web

from providers.mock.app import (
    MAX_BODY,
    Dropped,
    MockProvider,
    MockShared,
    bearer_key,
    delay_whole_response,
    error_gate,
    json_answer,
    shared_state,
)
from providers.mock.config import MockConfig
from providers.mock.faults import ErrorFault, Fault, MockError, StreamErrorFault, bad_request
from providers.openai.mock_answers import compose, filtered
from providers.openai.mock_errors import (
    context_error,
    fault_error,
    invalid_key_error,
    model_not_found,
    rate_limit_error,
    ratelimit_headers,
    render_error,
)
from providers.openai.mock_request import (
    ChatParams,
    chat_params,
    embedding_inputs,
    json_object,
    positive_int,
    require_model,
)
from providers.openai.mock_wire import completion_body, embeddings_body, stream_answer

__all__ = ["MOCK", "build_app"]

_SEPARATORS: Final = (",", ":")
_MODEL_CREATED: Final = 1_700_000_000
_STARTED: Final = web.RequestKey("started", float)
_RATE_HEADERS: Final = web.RequestKey("rate_headers", dict[str, str])


# ---------------------------------------------------------------- request gates


def _authorize(request: web.Request, config: MockConfig) -> None:
    key = bearer_key(request)
    if not config.accepts(key):
        raise invalid_key_error(key)


def _require_known(state: MockShared, model: str) -> None:
    if not state.knows_model(model):
        raise model_not_found(model)


def _check_context(params: ChatParams, config: MockConfig) -> None:
    wanted = params.prompt_tokens + (params.max_tokens or 0)
    if wanted > config.context_window:
        raise context_error(config.context_window, params.prompt_tokens, params.max_tokens)


def _charge(request: web.Request, state: MockShared, model: str, tokens: int) -> None:
    """Take this request from the key's budget; a refusal is OpenAI's 429."""
    budget = state.limiter.take(bearer_key(request), tokens) if state.limiter.enabled else None
    request[_RATE_HEADERS] = ratelimit_headers(budget, tokens)
    if budget is not None and not budget.allowed:
        raise rate_limit_error(model, budget, tokens)


def _pick_fault(request: web.Request, model: str | None) -> Fault | None:
    state = shared_state(request)
    fault = state.pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        error = fault_error(fault, model, state.config.context_window)
        if error.kind == "rate_limited" and _RATE_HEADERS in request:
            request[_RATE_HEADERS]["x-ratelimit-remaining-requests"] = "0"
        raise error
    return fault


# ---------------------------------------------------------------- handlers


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await json_object(request)
    model = require_model(body)
    _require_known(state, model)
    params = chat_params(body, model)
    _check_context(params, state.config)
    limit = params.max_tokens or state.config.max_tokens_default
    _charge(request, state, model, params.prompt_tokens + limit)
    fault = _pick_fault(request, model)
    answer = filtered(compose(params, state.config), fault)
    if params.stream:
        return await stream_answer(request, state, params, answer, fault)
    if isinstance(fault, StreamErrorFault):
        # Without a stream to break, a failure mid-answer is the whole answer's.
        raise fault_error(fault.error, model, state.config.context_window)
    completion = completion_body(params, answer, state.config.stamp_tokens)
    try:
        await delay_whole_response(request, state.config, fault, answer.visible_tokens)
    except Dropped:
        return web.Response()  # never sent: the transport is gone
    return json_answer(completion)


async def _embeddings(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await json_object(request)
    model = require_model(body)
    _require_known(state, model)
    inputs = embedding_inputs(body.get("input"))
    dims = positive_int(body, "dimensions") or state.config.embed_dims
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request(
            f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.",
            "encoding_format",
            "invalid_value",
        )
    tokens = sum(count for _, count in inputs)
    _charge(request, state, model, tokens)
    fault = _pick_fault(request, model)
    try:
        await delay_whole_response(request, state.config, fault, 1)
    except Dropped:
        return web.Response()
    return json_answer(embeddings_body(inputs, dims, encoding, model))


def _model(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": _MODEL_CREATED, "owned_by": "system"}


async def _models(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    _pick_fault(request, None)
    return json_answer({"object": "list", "data": [_model(m) for m in state.config.models]})


async def _retrieve_model(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    model = request.match_info["model"]
    _pick_fault(request, model)
    if not state.knows_model(model):
        raise MockError(
            404,
            f"The model '{model}' does not exist",
            "invalid_request_error",
            "model_not_found",
            "model",
            kind="not_found",
        )
    return json_answer(_model(model))


# ---------------------------------------------------------------- app plumbing


def _admit(request: web.Request, config: MockConfig) -> None:
    request[_STARTED] = time.monotonic()  # for openai-processing-ms
    _authorize(request, config)


def _url_error(request: web.Request, exc: web.HTTPException) -> MockError:
    return MockError(
        exc.status, f"Invalid URL ({request.method} {request.path})", "invalid_request_error"
    )


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    started = request.get(_STARTED)
    elapsed = 0 if started is None else round((time.monotonic() - started) * 1000)
    headers = response.headers
    headers.setdefault("x-request-id", "req_" + os.urandom(16).hex())
    headers.setdefault("openai-processing-ms", str(elapsed))
    headers.setdefault("openai-version", "2020-10-01")
    for name, value in request.get(_RATE_HEADERS, {}).items():
        headers.setdefault(name, value)


def build_app() -> web.Application:
    """OpenAI's routes, to be mounted under `/openai` by `providers.mock.app.build_app`."""
    app = web.Application(
        middlewares=[error_gate(_admit, lambda error, _: render_error(error), _url_error)],
        client_max_size=MAX_BODY,
    )
    app.on_response_prepare.append(_add_headers)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model:.+}", _retrieve_model)
    return app


MOCK = MockProvider(prefix="openai", build=build_app, sdk_path="/v1", api_path="/v1")

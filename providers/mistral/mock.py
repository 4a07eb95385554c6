"""Mistral's API as a mock (`/mistral/v1/chat/completions`, `/embeddings`, `/models`).

What it reproduces of the real API (judged by the official `mistralai` SDK):

* bodies, chunks and model cards field for field (see `mock_wire`): usage on
  the last chunk unasked, tool calls whole in one chunk, 9-character call ids;
* Mistral's refusals: 422 `{"detail": […]}` for fields it does not know
  (`seed`, `stream_options`, `user`, …) or of the wrong type, 400 `invalid_model`
  for a model it does not serve (`MockShared.knows_model`, plus Mistral's own
  names), 400 `invalid_function_call` for a tool-call id that is not 9 letters
  and digits, the context window, and embeddings batches past 512 inputs or
  16,384 tokens (400, code 3210); see `mock_request`;
* every fault of `providers.mock.faults` in Mistral's shapes, in-stream errors as
  its error object followed by the end of the stream, and the per-key rate
  limiter's 429 with `retry-after`; see `mock_errors`;
* `mistral-correlation-id` (and Kong's `x-kong-request-id`) on every answer and
  `x-ratelimit-*` on every chat and embeddings answer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from providers.mistral.mock_answers import compose
from providers.mistral.mock_errors import (
    batch_too_large,
    context_error,
    fault_error,
    invalid_key_error,
    method_not_allowed,
    model_not_found,
    not_found_route,
    rate_limit_error,
    ratelimit_headers,
    render_error,
)
from providers.mistral.mock_request import chat_params, embedding_params, json_body
from providers.mistral.mock_wire import (
    completion_body,
    embeddings_body,
    model_card,
    stream_answer,
)
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
from providers.mock.faults import ErrorFault, Fault, MockError, StreamErrorFault

__all__ = ["CHAT_MODELS", "EMBED_MODELS", "MOCK", "build_app"]

CHAT_MODELS: Final = (
    "mistral-small-latest",
    "mistral-medium-latest",
    "mistral-large-latest",
    "magistral-medium-latest",
    "codestral-latest",
    "ministral-8b-latest",
)
# Embedding models and their vector sizes: (default, whether output_dimension is taken).
EMBED_MODELS: Final[Mapping[str, tuple[int, bool]]] = {
    "mistral-embed": (1024, False),
    "codestral-embed": (1536, True),
}
_MAX_DIMENSION: Final = 3072
_MAX_INPUTS: Final = 512
_MAX_BATCH_TOKENS: Final = 16_384
_RATE_HEADERS: Final = web.RequestKey("rate_headers", dict[str, str])


# ---------------------------------------------------------------- request gates


def _authorize(request: web.Request, config: MockConfig) -> None:
    key = bearer_key(request)
    if not config.accepts(key):
        raise invalid_key_error()


def _knows(state: MockShared, model: str) -> bool:
    return state.knows_model(model) or model in CHAT_MODELS or model in EMBED_MODELS


def _charge(request: web.Request, state: MockShared, tokens: int) -> None:
    """Take this request from the key's budget; a refusal is Mistral's 429."""
    budget = state.limiter.take(bearer_key(request), tokens) if state.limiter.enabled else None
    request[_RATE_HEADERS] = ratelimit_headers(budget, tokens)
    if budget is not None and not budget.allowed:
        raise rate_limit_error(budget)


def _pick_fault(request: web.Request, model: str | None) -> Fault | None:
    state = shared_state(request)
    fault = state.pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        error = fault_error(fault, model, state.config.context_window)
        if error.status == 429 and _RATE_HEADERS in request:
            request[_RATE_HEADERS]["x-ratelimit-remaining-req-minute"] = "0"
        raise error
    return fault


# ---------------------------------------------------------------- handlers


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    params = chat_params(await json_body(request))
    if not _knows(state, params.model):
        raise model_not_found(params.model)
    window = state.config.context_window
    if params.prompt_tokens + (params.max_tokens or 0) > window:
        raise context_error(window, params.prompt_tokens + (params.max_tokens or 0))
    limit = params.max_tokens or state.config.max_tokens_default
    _charge(request, state, params.prompt_tokens + limit)
    fault = _pick_fault(request, params.model)
    answer = compose(params, state.config)
    if params.stream:
        return await stream_answer(request, state, params, answer, fault)
    if isinstance(fault, StreamErrorFault):
        # Without a stream to break, a failure mid-answer is the whole answer's.
        raise fault_error(fault.error, params.model, window)
    completion = completion_body(params, answer, state.config.stamp_tokens)
    try:
        await delay_whole_response(request, state.config, fault, answer.completion_tokens)
    except Dropped:
        return web.Response()  # never sent: the transport is gone
    return json_answer(completion)


def _dimensions(state: MockShared, model: str, asked: int | None) -> int:
    default, choosable = EMBED_MODELS.get(model, (state.config.embed_dims, True))
    if asked is None:
        return default
    if not choosable:
        raise MockError(
            400,
            f"Model {model} does not support output_dimension.",
            "invalid_request_error",
            param="output_dimension",
        )
    if asked > _MAX_DIMENSION:
        raise MockError(
            400,
            f"output_dimension must be at most {_MAX_DIMENSION}.",
            "invalid_request_error",
            param="output_dimension",
        )
    return asked


async def _embeddings(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    params = embedding_params(await json_body(request))
    if not _knows(state, params.model):
        raise model_not_found(params.model)
    if params.output_dtype != "float":
        raise MockError(400, "The mock serves output_dtype 'float' only.", "invalid_request_error")
    if len(params.inputs) > _MAX_INPUTS:
        raise batch_too_large("inputs in request")
    tokens = sum(max(len(text.split()), 1) for text in params.inputs)
    if tokens > _MAX_BATCH_TOKENS:
        raise batch_too_large("tokens overall")
    dims = _dimensions(state, params.model, params.output_dimension)
    _charge(request, state, tokens)
    fault = _pick_fault(request, params.model)
    try:
        await delay_whole_response(request, state.config, fault, 1)
    except Dropped:
        return web.Response()
    return json_answer(embeddings_body(params.inputs, tokens, dims, params.model))


def _listed(config: MockConfig) -> list[str]:
    return list(dict.fromkeys([*CHAT_MODELS, *EMBED_MODELS, *config.models]))


async def _models(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    _pick_fault(request, None)
    cards = [model_card(m, embeddings=m in EMBED_MODELS) for m in _listed(state.config)]
    return json_answer({"object": "list", "data": cards})


async def _retrieve_model(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    model = request.match_info["model"]
    _pick_fault(request, model)
    if not _knows(state, model):
        raise model_not_found(model, 404)
    return json_answer(model_card(model, embeddings=model in EMBED_MODELS))


# ---------------------------------------------------------------- app plumbing


def _url_error(request: web.Request, exc: web.HTTPException) -> MockError:
    return method_not_allowed() if exc.status == 405 else not_found_route()


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    correlation = headers.setdefault("mistral-correlation-id", _correlation_id())
    headers.setdefault("x-kong-request-id", correlation)
    for name, value in request.get(_RATE_HEADERS, {}).items():
        headers.setdefault(name, value)


def _correlation_id() -> str:
    raw = os.urandom(16).hex()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def build_app() -> web.Application:
    """Mistral's routes, to be mounted under `/mistral` by `providers.mock.app.build_app`."""
    app = web.Application(
        middlewares=[error_gate(_authorize, lambda error, _: render_error(error), _url_error)],
        client_max_size=MAX_BODY,
    )
    app.on_response_prepare.append(_add_headers)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model:.+}", _retrieve_model)
    return app


MOCK = MockProvider(
    prefix="mistral", build=build_app, sdk_path="", api_path="/v1", content_filter=False
)

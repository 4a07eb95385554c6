"""Cohere's API as a mock, mounted under `/cohere`.

Routes: `POST /v2/chat` (whole or streamed), `POST /v2/embed`, `POST /v2/rerank`,
`POST /v1/check-api-key`, `GET /v1/models`, `GET /v1/models/{model}`.
Reproduced from the real API:

* `Authorization: Bearer` auth (401 "no api key supplied" / "invalid api token"),
  the request rules of `mock_request`, a 404 naming an unknown model, a 400 "too
  many tokens: …" when the prompt or prompt plus `max_tokens` passes
  `MockConfig.context_window`;
* answers (`mock_answer`), streams (`mock_stream`), embeddings and rankings
  (`mock_embed`) and errors (`mock_errors`) in the API's shapes;
* per-key budgets (`MockConfig.requests_per_minute` / `tokens_per_minute`)
  answered with Cohere's per-minute 429 and a `retry-after`.

Cohere has no content filter in its API, so `filtered` faults are ignored (and
`MOCK.content_filter` is False). A non-streamed request given a stream-error
fault gets that error as its HTTP answer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from providers.cohere.mock_answer import chat_response, compose
from providers.cohere.mock_catalog import CohereModel, describe, find, listed
from providers.cohere.mock_embed import embed_answer, embed_tokens, rerank_answer
from providers.cohere.mock_errors import (
    PER_MINUTE,
    cohere_id,
    fault_error,
    not_found,
    render_error,
    url_error,
)
from providers.cohere.mock_request import (
    invalid,
    json_object,
    parse_chat,
    parse_embed,
    parse_rerank,
)
from providers.cohere.mock_stream import StreamWriter
from providers.mock.app import (
    MAX_BODY,
    Dropped,
    MockProvider,
    MockShared,
    StreamCounter,
    delay_whole_response,
    error_gate,
    shared_state,
    stamp,
)
from providers.mock.config import MockConfig
from providers.mock.faults import ErrorFault, Fault, FilterFault, MockError, StreamErrorFault
from providers.mock.rerank import token_count

__all__ = ["MOCK", "build_app"]

_SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
# What check-api-key says of the mock's accounts: fixed, and nothing of the key.
_ORGANIZATION: Final = "5b4c9d1e-2f3a-4b6c-8d7e-9f0a1b2c3d4e"
_OWNER: Final = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
_PAGE_SIZE: Final = 20


# ---------------------------------------------------------------- faults and limits


def _pick_fault(request: web.Request, state: MockShared, model: str | None) -> Fault | None:
    """This request's fault; errors are raised, `filtered` dropped (Cohere has no filter)."""
    fault = state.pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        raise fault_error(fault, model)
    if isinstance(fault, FilterFault):
        return None
    return fault


def _whole_answer_fault(fault: Fault | None, model: str | None) -> Fault | None:
    # An error meant for inside a stream is the HTTP answer of a whole response.
    if isinstance(fault, StreamErrorFault):
        raise fault_error(fault.error, model)
    return fault


def _model(state: MockShared, name: str, endpoint: str) -> CohereModel:
    model = find(state, name)
    if model is None:
        raise not_found(name)
    if endpoint not in model.endpoints:
        raise invalid(f"model '{name}' is not supported by the {endpoint} API")
    return model


def _charge_budget(request: web.Request, state: MockShared, tokens: int) -> None:
    """Take one request of `tokens` from the key's budgets, or refuse it with a 429."""
    if not state.limiter.enabled:
        return
    budget = state.limiter.take(_presented_key(request), tokens)
    if not budget.allowed:
        retry = {"retry-after": str(max(math.ceil(budget.retry_after), 1))}
        raise MockError(429, PER_MINUTE, "rate_limited", headers=retry, kind="rate_limited")


def _check_context(prompt: int, max_tokens: int | None, window: int) -> None:
    if prompt > window:
        raise MockError(
            400,
            f"too many tokens: total number of tokens in the prompt cannot exceed {window} - "
            f"received {prompt}. Try using a shorter prompt, or enabling prompt truncating.",
            "too_many_tokens",
            kind="context",
        )
    if max_tokens is not None and prompt + max_tokens > window:
        raise MockError(
            400,
            f"too many tokens: size limit exceeded by {prompt + max_tokens - window} tokens. "
            "Try using shorter or fewer inputs, or a smaller max_tokens.",
            "too_many_tokens",
            kind="context",
        )


async def _delay(request: web.Request, state: MockShared, fault: Fault | None, n: int) -> bool:
    """Wait as a whole answer of `n` tokens would; False when a drop fault cut it."""
    try:
        await delay_whole_response(request, state.config, fault, n)
    except Dropped:
        return False
    return True


# ---------------------------------------------------------------- handlers


def _json_response(payload: Mapping[str, Any]) -> web.Response:
    return web.Response(body=json.dumps(payload).encode(), content_type="application/json")


async def _chat(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    params = parse_chat(await json_object(request))
    model = _model(state, params.model, "chat")
    answer = compose(params, state.config)
    _check_context(answer.prompt_tokens, params.max_tokens, model.context_length)
    _charge_budget(request, state, answer.prompt_tokens + answer.output_tokens)
    fault = _pick_fault(request, state, params.model)
    response_id = cohere_id()
    if params.stream:
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        with StreamCounter(state.stats):
            await StreamWriter(request, resp, fault, state.config).send(answer, response_id)
        return resp
    fault = _whole_answer_fault(fault, params.model)
    stamps = [stamp() for _ in answer.pieces] if state.config.stamp_tokens else None
    body = chat_response(answer, response_id, stamps if not answer.tool_calls else None)
    if not await _delay(request, state, fault, answer.output_tokens):
        return web.Response()  # never sent: the transport is gone
    return _json_response(body)


async def _embed(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    params = parse_embed(await json_object(request))
    model = _model(state, params.model, "embed")
    body = embed_answer(model, params)
    _charge_budget(request, state, embed_tokens(params))
    fault = _whole_answer_fault(_pick_fault(request, state, params.model), params.model)
    if not await _delay(request, state, fault, 1):
        return web.Response()
    return _json_response(body)


async def _rerank(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    params = parse_rerank(await json_object(request))
    _model(state, params.model, "rerank")
    tokens = token_count(params.query) * len(params.documents)
    _charge_budget(request, state, tokens + sum(token_count(d) for d in params.documents))
    fault = _whole_answer_fault(_pick_fault(request, state, params.model), params.model)
    if not await _delay(request, state, fault, 1):
        return web.Response()
    return _json_response(rerank_answer(params))


async def _check_api_key(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    _whole_answer_fault(_pick_fault(request, state, None), None)
    return _json_response({"valid": True, "organization_id": _ORGANIZATION, "owner_id": _OWNER})


def _page_size(request: web.Request) -> int:
    raw = request.query.get("page_size", str(_PAGE_SIZE))
    try:
        size = int(float(raw))
    except ValueError:
        size = 0
    if not 1 <= size <= 1000:
        raise invalid("page_size must be between 1 and 1000")
    return size


async def _models(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    _whole_answer_fault(_pick_fault(request, state, None), None)
    models = listed(state)
    endpoint = request.query.get("endpoint")
    if endpoint:
        models = [m for m in models if endpoint in m.endpoints]
    token = request.query.get("page_token", "")
    start = int(token) if token.isdigit() else 0
    size = _page_size(request)
    page = models[start : start + size]
    body: dict[str, Any] = {"models": [describe(m) for m in page]}
    if start + size < len(models):
        body["next_page_token"] = str(start + size)
    return _json_response(body)


async def _model_info(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    name = request.match_info["model"]
    _whole_answer_fault(_pick_fault(request, state, name), name)
    model = find(state, name)
    if model is None:
        raise not_found(name)
    return _json_response(describe(model))


# ---------------------------------------------------------------- app plumbing


def _presented_key(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _authorize(request: web.Request, config: MockConfig) -> None:
    key = _presented_key(request)
    if not key:
        raise MockError(401, "no api key supplied", "unauthorized", kind="unauthorized")
    if not config.accepts(key):
        raise MockError(401, "invalid api token", "unauthorized", kind="unauthorized")


def build_app() -> web.Application:
    """Cohere's routes, to be mounted under `/cohere` by `providers.mock.app`."""
    app = web.Application(
        middlewares=[error_gate(_authorize, render_error, url_error)], client_max_size=MAX_BODY
    )
    app.router.add_post("/v2/chat", _chat)
    app.router.add_post("/v2/embed", _embed)
    app.router.add_post("/v2/rerank", _rerank)
    app.router.add_post("/v1/check-api-key", _check_api_key)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model}", _model_info)
    return app


# Both the SDK and the fleet's adapter take the API's root and add `/v2/…` themselves.
MOCK = MockProvider(prefix="cohere", build=build_app, content_filter=False)

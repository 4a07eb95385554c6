"""Anthropic's Messages API as a mock, mounted under `/anthropic`.

Routes: `POST /v1/messages` (whole or streamed), `POST /v1/messages/count_tokens`,
`GET /v1/models`, `GET /v1/models/{id}`. Reproduced from the real API:

* `x-api-key` auth (401 `authentication_error`; a bearer token is accepted too,
  as the official SDK 2.x sends the key that way), the required, dated
  `anthropic-version` header (400), its request rules (`mock_request`), 404
  `not_found_error` for an unknown model, 400 when the prompt or prompt plus
  `max_tokens` passes `MockConfig.context_window`;
* answers (`mock_answer`), streams (`mock_stream`) and errors (`mock_errors`) in
  the API's shapes, with a `request-id` header on every answer;
* `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` headers (resets
  in RFC 3339) and a 429 with `retry-after` when `MockConfig` sets per-minute
  budgets; a request costs its prompt plus the answer it gets;
* prompt-cache usage fields (`mock_usage`).

A non-streamed request given a stream-error fault gets that error as its answer.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from providers.anthropic.mock_answer import compose, dumps, message_body, refused
from providers.anthropic.mock_errors import REQUEST_ID, fault_error, render_error
from providers.anthropic.mock_request import json_object, parse_count_tokens, parse_messages
from providers.anthropic.mock_stream import StreamWriter
from providers.anthropic.mock_usage import PromptCache, prompt_tokens
from providers.mock.app import (
    MAX_BODY,
    Dropped,
    MockProvider,
    MockShared,
    StreamCounter,
    delay_whole_response,
    error_gate,
    new_id,
    shared_state,
)
from providers.mock.config import MockConfig
from providers.mock.faults import ErrorFault, Fault, MockError, StreamErrorFault, bad_request
from providers.mock.ratelimit import Budget

__all__ = ["MOCK", "build_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
# Dated versions: the fleet sends 2023-06-01, the official SDK 2.x a 2026 one.
_VERSION: Final = re.compile(r"20\d\d-[01]\d-[0-3]\d")
_MODEL_CREATED: Final = "2025-01-01T00:00:00Z"
_LIMIT_HEADERS: Final = web.RequestKey("anthropic_limit_headers", dict[str, str])
_CACHE: Final = web.AppKey("anthropic_prompt_cache", PromptCache)


# ---------------------------------------------------------------- faults and limits


def _pick_fault(
    request: web.Request, state: MockShared, model: str | None, stream: bool
) -> Fault | None:
    fault = state.pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        raise fault_error(fault, model)
    if isinstance(fault, StreamErrorFault) and not stream:
        raise fault_error(fault.error, model)
    return fault


def _check_model(state: MockShared, model: str) -> None:
    if not state.knows_model(model):
        raise MockError(404, f"model: {model}", "not_found_error", kind="not_found")


def _check_context(prompt: int, max_tokens: int, window: int) -> None:
    if prompt > window:
        raise bad_request(f"prompt is too long: {prompt} tokens > {window} maximum")
    if prompt + max_tokens > window:
        raise bad_request(
            f"input length and `max_tokens` exceed context limit: {prompt} + {max_tokens} > "
            f"{window}, decrease input length or `max_tokens` and try again"
        )


def _rfc3339(seconds_from_now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds_from_now))


def _limit_headers(budget: Budget) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind, limit, remaining, reset in (
        ("requests", budget.limit_requests, budget.remaining_requests, budget.reset_requests),
        ("tokens", budget.limit_tokens, budget.remaining_tokens, budget.reset_tokens),
    ):
        if limit:
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{kind}-reset"] = _rfc3339(reset)
    return headers


def _charge_budget(request: web.Request, state: MockShared, tokens: int) -> None:
    """Take one request of `tokens` from the key's budgets, or refuse it with a 429."""
    if not state.limiter.enabled:
        return
    budget = state.limiter.take(_presented_key(request), tokens)
    # Every answer from here on carries them, the 429 below included (`_add_headers`).
    request[_LIMIT_HEADERS] = _limit_headers(budget)
    if not budget.allowed:
        retry = {"retry-after": str(max(math.ceil(budget.retry_after), 1))}
        message = "This request would exceed your organization's rate limit (mock budget)."
        raise MockError(429, message, "rate_limit_error", headers=retry, kind="rate_limited")


# ---------------------------------------------------------------- handlers


def _json_response(payload: Mapping[str, Any]) -> web.Response:
    return web.Response(body=dumps(payload).encode(), content_type="application/json")


async def _messages(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    req = parse_messages(await json_object(request))
    _check_model(state, req.model)
    prompt = prompt_tokens(req)
    _check_context(prompt, req.max_tokens, state.config.context_window)
    answer = compose(req, state.config)
    _charge_budget(request, state, prompt + answer.output_tokens)
    fault = _pick_fault(request, state, req.model, req.stream)
    answer = refused(answer, fault)
    charge = request.config_dict[_CACHE].charge(_presented_key(request), req, prompt)
    if req.stream:
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        with StreamCounter(state.stats):
            await StreamWriter(request, resp, fault, state.config).send(req.model, answer, charge)
        return resp
    message = message_body(req.model, answer, charge, state.config)
    try:
        await delay_whole_response(request, state.config, fault, answer.output_tokens)
    except Dropped:
        return web.Response()  # never sent: the transport is gone
    return _json_response(message)


async def _count_tokens(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    req = parse_count_tokens(await json_object(request))
    _check_model(state, req.model)
    _pick_fault(request, state, req.model, False)
    return _json_response({"input_tokens": prompt_tokens(req)})


def _model_info(model: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model,
        "display_name": model.replace("-", " ").title(),
        "created_at": _MODEL_CREATED,
        "lifecycle": "active",
    }


def _page_limit(request: web.Request) -> int:
    raw = request.query.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise bad_request("limit: Input should be an integer between 1 and 1000", "limit")
    return int(raw)


async def _models(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    _pick_fault(request, state, None, False)
    models = list(state.config.models)
    limit = _page_limit(request)
    after, before = request.query.get("after_id"), request.query.get("before_id")
    if after in models:
        models = models[models.index(after) + 1 :]
    if before in models:
        models = models[: models.index(before)]
    page = models[-limit:] if before is not None and after is None else models[:limit]
    return _json_response(
        {
            "data": [_model_info(m) for m in page],
            "has_more": len(page) < len(models),
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
    )


async def _model(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    model = request.match_info["model_id"]
    _pick_fault(request, state, model, False)
    _check_model(state, model)
    return _json_response(_model_info(model))


# ---------------------------------------------------------------- app plumbing


def _presented_key(request: web.Request) -> str:
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return key
    # The official SDK (2.x) sends the API key as a bearer token instead.
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _authorize(request: web.Request, config: MockConfig) -> None:
    key = _presented_key(request)
    if not key:
        raise MockError(401, "x-api-key header is required", "authentication_error")
    if not config.accepts(key):
        raise MockError(401, "invalid x-api-key", "authentication_error")
    version = request.headers.get("anthropic-version")
    if not version:
        raise bad_request("anthropic-version: header is required")
    if not _VERSION.fullmatch(version):
        raise bad_request(f"anthropic-version: {version!r} is not a valid version")


def _admit(request: web.Request, config: MockConfig) -> None:
    request[REQUEST_ID] = new_id("req_")  # the error body repeats the header's id
    _authorize(request, config)


def _url_error(request: web.Request, exc: web.HTTPException) -> MockError:
    kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
    return MockError(exc.status, exc.reason, kind)


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("request-id", request.get(REQUEST_ID) or new_id("req_"))
    for name, value in request.get(_LIMIT_HEADERS, {}).items():
        response.headers.setdefault(name, value)


def build_app() -> web.Application:
    """Anthropic's routes, to be mounted under `/anthropic` by `providers.mock.app`."""
    app = web.Application(
        middlewares=[error_gate(_admit, render_error, _url_error)], client_max_size=MAX_BODY
    )
    app[_CACHE] = PromptCache()
    app.on_response_prepare.append(_add_headers)
    app.router.add_post("/v1/messages", _messages)
    app.router.add_post("/v1/messages/count_tokens", _count_tokens)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model_id}", _model)
    return app


# The SDK appends `/v1/…` to its base URL itself; the fleet's adapter does not.
MOCK = MockProvider(prefix="anthropic", build=build_app, sdk_path="", api_path="/v1")

"""Replicate's predictions API as a mock, mounted under `/replicate`.

Routes (under `/v1`): `POST /models/{owner}/{name}/predictions`, `POST /predictions`
(`version` in the body), `GET /predictions/{id}`, `POST /predictions/{id}/cancel`,
`GET /predictions/{id}/stream` (the prediction's `urls.stream`) and `GET /account`;
and, the mock's own, `GET /replicate/_mock/predictions` (cancels and statuses).
Reproduced from the real API:

* `Authorization: Bearer <token>` (or the older `Token <token>`); 401
  "Unauthenticated" otherwise. Predictions are visible to the token that made them.
* Create answers 201 with the prediction object. Without `Prefer: wait` the
  prediction is `starting`; with `Prefer: wait` / `wait=N` the request is held until
  it finishes (`succeeded`/`failed`) or N seconds (at most 60) pass, after which it
  answers `starting`, as the official SDK says the API does (`run.py`), and the
  caller polls. Completion follows `MockConfig` (`mock_predictions`).
* An unknown `owner/name` is a 404; an unknown version a 422 "Invalid version or
  not permitted". Inputs are checked as a language model's schema would (422 with
  `invalid_fields`); unknown inputs are ignored, as cog ignores them.
* Errors are RFC 7807 problem details (`mock_errors`); the per-key rate limiter
  answers creates with 429, `Retry-After` and `retry_after`.
* Faults: error faults answer the create; a stream-error fault makes the prediction
  fail after N tokens (an `event: error` in its stream, `status: failed` with an
  `error` when read); stall and drop faults hit the stream of a streamed prediction
  and the create of any other. Content-filter and layout faults do not apply
  (language models on Replicate have no filter of the platform's).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import os
from typing import Any, Final

from aiohttp import web

from providers.mock.app import (
    MAX_BODY,
    Dropped,
    MockProvider,
    MockShared,
    StreamCounter,
    abort,
    error_gate,
    shared_state,
)
from providers.mock.config import MockConfig
from providers.mock.faults import (
    DropFault,
    ErrorFault,
    Fault,
    MockError,
    StallFault,
    StreamErrorFault,
)
from providers.replicate.mock_errors import (
    INVALID_VERSION,
    fault_error,
    invalid_input,
    not_found,
    render_error,
    transient_code,
    url_error,
)
from providers.replicate.mock_predictions import (
    MockPrediction,
    PredictionStore,
    answer_pieces,
    clock,
    parse_input,
)
from providers.replicate.mock_stream import SSE_HEADERS, write_stream

__all__ = ["MOCK", "STORE", "build_app"]

STORE: Final = web.AppKey("replicate_predictions", PredictionStore)
_KEY: Final = web.RequestKey("replicate_key", str)
_MAX_WAIT: Final = 60
_ACCOUNT: Final = {
    "type": "user",
    "username": "mock-user",
    "name": "Mock User",
    "github_url": None,
}


# ---------------------------------------------------------------- admission


def _presented_key(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "token") else ""


def _authorize(request: web.Request, config: MockConfig) -> None:
    key = _presented_key(request)
    if not key:
        raise MockError(
            401, "You did not pass an authentication token", "Unauthenticated", kind="unauthorized"
        )
    if not config.accepts(key):
        raise MockError(
            401,
            "You did not pass a valid authentication token",
            "Unauthenticated",
            kind="unauthorized",
        )
    request[_KEY] = key


def _charge_budget(request: web.Request, state: MockShared, tokens: int) -> None:
    if not state.limiter.enabled:
        return
    budget = state.limiter.take(request[_KEY], tokens)
    if not budget.allowed:
        wait = max(math.ceil(budget.retry_after), 1)
        detail = f"Request was throttled. Your rate limit resets in ~{wait}s."
        headers = {"Retry-After": str(wait)}
        raise MockError(429, detail, "Request was throttled", headers=headers, kind="rate_limited")


def _pick_fault(request: web.Request, state: MockShared, model: str | None) -> Fault | None:
    fault = state.pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        raise fault_error(fault)
    return fault


async def _interrupt_whole(request: web.Request, fault: Fault | None) -> None:
    """A stall or drop fault on an answer that is not a stream: before any byte."""
    if isinstance(fault, StallFault):
        await asyncio.sleep(fault.seconds)
    elif isinstance(fault, DropFault):
        await abort(request)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise MockError(400, "The request body is not valid JSON.", "Bad request") from None
    if not isinstance(body, dict):
        raise MockError(400, "The request body must be a JSON object.", "Bad request")
    return body


def _prefer_wait(request: web.Request) -> float | None:
    """Seconds `Prefer: wait` / `wait=N` holds the create (None: answer at once)."""
    for part in request.headers.get("Prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip()
        if not value:
            return _MAX_WAIT
        if value.isdigit():
            return min(max(int(value), 1), _MAX_WAIT)
    return None


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.json_response(payload, status=status)


# ---------------------------------------------------------------- creating predictions


async def _create_for_model(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    owner, name = request.match_info["owner"], request.match_info["name"]
    model = f"{owner}/{name}"
    if not (state.knows_model(model) or state.knows_model(name)):
        raise not_found(f"Model {model} not found")
    version = hashlib.blake2b(model.encode(), digest_size=32).hexdigest()
    return await _create(request, await _body(request), model, version, fault_key=model)


async def _create_for_version(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await _body(request)
    version = body.get("version")
    if not isinstance(version, str) or not version:
        raise invalid_input("version", "version is required")
    # `owner/name:id` is accepted as well as the bare id.
    version_id = version.rpartition(":")[2]
    if not state.knows_model(version_id):
        detail = (
            "The specified version does not exist (or perhaps you don't have permission to use it?)"
        )
        raise MockError(422, detail, INVALID_VERSION, kind="not_found")
    model = version.partition(":")[0] if ":" in version else f"mock/{version_id[:40]}"
    return await _create(request, body, model, version_id, fault_key=version_id)


async def _create(
    request: web.Request, body: dict[str, Any], model: str, version: str, *, fault_key: str
) -> web.StreamResponse:
    state = shared_state(request)
    config = state.config
    model_input = parse_input(body.get("input"))
    pieces = answer_pieces(model_input, config)
    prompt = model_input.prompt_tokens
    asked = model_input.max_tokens if model_input.max_tokens is not None else len(pieces)
    if prompt + asked > config.context_window:
        raise invalid_input(
            "prompt",
            f"prompt ({prompt} tokens) and max_tokens ({asked}) exceed the model's"
            f" context window of {config.context_window} tokens",
        )
    _charge_budget(request, state, prompt + len(pieces))
    fault = _pick_fault(request, state, fault_key)
    now, wall = clock()
    stream = body.get("stream") is True
    prediction = MockPrediction(
        id=_prediction_id(),
        model=model,
        version=version,
        key=request[_KEY],
        model_input=model_input,
        pieces=pieces,
        stream=stream,
        base_url=f"{request.url.origin()}/{MOCK.prefix}/v1",
        created=now,
        created_wall=wall,
        ttft=config.ttft_ms / 1000,
        interval=1 / config.tokens_per_sec if config.tokens_per_sec else 0.0,
    )
    if isinstance(fault, StreamErrorFault):
        _fail_after(prediction, fault)
    elif stream and isinstance(fault, StallFault | DropFault):
        prediction.interruption = fault
    request.config_dict[STORE].add(prediction)
    if not stream:
        try:
            await _interrupt_whole(request, fault)
        except Dropped:
            return web.Response()  # never sent: the transport is gone
    wait = _prefer_wait(request)
    if wait is None:
        return _json(prediction.as_json(now, status="starting"), status=201)
    loop = asyncio.get_running_loop()
    deadline = now + wait
    if prediction.ends_at <= deadline:
        await _until(prediction.ends_at)
        # A sleep may wake a clock tick early: the timeline says it has finished.
        return _json(prediction.as_json(max(loop.time(), prediction.ends_at)), status=201)
    await _until(deadline)
    return _json(prediction.as_json(loop.time(), status="starting"), status=201)


def _prediction_id() -> str:
    """26 lowercase base32 characters, the shape of Replicate's prediction ids."""
    return base64.b32encode(os.urandom(20)).decode().lower()[:26]


def _fail_after(prediction: MockPrediction, fault: StreamErrorFault) -> None:
    error = fault_error(fault.error)
    code = transient_code(fault.error.kind)
    prediction.fail_after = min(fault.after, len(prediction.pieces))
    prediction.error = f"{error.message} ({code})" if code else error.message
    prediction.error_event = {"detail": error.message, "status": error.status, "title": error.type}


async def _until(when: float) -> None:
    delay = when - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


# ---------------------------------------------------------------- reading predictions


def _find(request: web.Request) -> MockPrediction:
    return request.config_dict[STORE].find(request.match_info["prediction_id"], request[_KEY])


async def _get(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    prediction = _find(request)
    fault = _pick_fault(request, state, prediction.version)
    if isinstance(fault, StreamErrorFault):
        raise fault_error(fault.error)
    try:
        await _interrupt_whole(request, fault)
    except Dropped:
        return web.Response()
    now, _ = clock()
    return _json(prediction.as_json(now))


async def _cancel(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    prediction = _find(request)
    _pick_fault(request, state, prediction.version)
    now, _ = clock()
    before = prediction.canceled_at
    prediction.cancel(now)
    if before is None and prediction.canceled_at is not None:
        request.config_dict[STORE].cancels += 1
    return _json(prediction.as_json(now))


async def _stream(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    prediction = _find(request)
    fault = _pick_fault(request, state, prediction.version)
    interruption = fault if isinstance(fault, StallFault | DropFault) else prediction.interruption
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    with StreamCounter(state.stats):
        await write_stream(request, resp, prediction, interruption, state.config)
    return resp


async def _account(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    try:
        await _interrupt_whole(request, _pick_fault(request, state, None))
    except Dropped:
        return web.Response()
    return _json(_ACCOUNT)


async def _mock_predictions(request: web.Request) -> web.StreamResponse:
    """The mock's own view (not Replicate's API): cancels that stopped a prediction,
    and how many kept predictions are in each status, for tests."""
    store = request.config_dict[STORE]
    now, _ = clock()
    return _json({"cancels": store.cancels, "statuses": store.statuses(now)})


# ---------------------------------------------------------------- app plumbing


def build_app() -> web.Application:
    """Replicate's routes, to be mounted under `/replicate` by `providers.mock.app`."""
    app = web.Application(
        middlewares=[error_gate(_authorize, render_error, url_error)], client_max_size=MAX_BODY
    )
    app[STORE] = PredictionStore()
    app.router.add_post("/v1/models/{owner}/{name}/predictions", _create_for_model)
    app.router.add_post("/v1/predictions", _create_for_version)
    app.router.add_get("/v1/predictions/{prediction_id}", _get)
    app.router.add_post("/v1/predictions/{prediction_id}/cancel", _cancel)
    app.router.add_get("/v1/predictions/{prediction_id}/stream", _stream)
    app.router.add_get("/v1/account", _account)
    app.router.add_get("/_mock/predictions", _mock_predictions)
    return app


# The SDK's base URL is the host (it adds `/v1/…` itself); the fleet's includes `/v1`.
MOCK = MockProvider(
    prefix="replicate",
    build=build_app,
    sdk_path="",
    api_path="/v1",
    content_filter=False,
)

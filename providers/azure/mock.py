"""Azure OpenAI as a mock, under `/azure`: the adapter's endpoint is `{root}/azure`.

Routes, as Azure serves them (and `openai.AsyncAzureOpenAI(azure_endpoint=…)`
calls them):

* `POST /openai/deployments/{deployment}/chat/completions?api-version=…`,
  `…/embeddings`, `GET /openai/models?api-version=…`: the dated form; without
  a dated `api-version` Azure answers 404 "Resource not found";
* `POST /openai/v1/chat/completions`, `/openai/v1/embeddings`,
  `GET /openai/v1/models`: the v1 form, the deployment as the body's `model`;
* `POST /login/{tenant}/oauth2/v2.0/token`: Entra ID's token endpoint
  (`mock_entra`), whose tokens the routes above accept as bearer tokens.

What it reproduces (judged by the official `openai` SDK, checked against the
recorded Azure stream in shared/reference/transcripts/openai):

* sign-in by `api-key` (`MockConfig.api_keys`; on the v1 routes also sent as a
  bearer token, as OpenAI's own SDK sends it) or by an Entra bearer token it
  issued, refused in Azure's words (a missing or wrong key, an unknown or
  expired token); a deployment is any model the shared mock knows, others are
  404 `DeploymentNotFound`; api-versions before 2022-12-01 are 404s too;
* answers from the OpenAI mock's text engine in Azure's shape: filter verdicts
  on every choice, the filter-only first chunk, alphabetical keys (`mock_wire`);
* every fault of `providers.mock.faults` in Azure's error shapes and headers
  (`mock_errors`): `filtered` is the 400 `content_filter` with its
  `innererror`, `filtered-after:N` an answer stopped after N tokens with
  `finish_reason: content_filter`;
* `apim-request-id` and `x-request-id` on every answer, `x-ratelimit-remaining-
  requests`/`-tokens` on chat and embeddings, and the per-key rate limiter's 429
  with `retry-after` and `retry-after-ms`.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from providers.azure.mock_entra import (
    MOCK_CLIENT_ID,
    MOCK_CLIENT_SECRET,
    MOCK_TENANT,
    TOKENS,
    TokenBook,
    token_endpoint,
)
from providers.azure.mock_errors import (
    AzureError,
    deployment_not_found,
    fault_error,
    invalid_key,
    invalid_token,
    missing_key,
    prompt_filtered,
    rate_limited,
    render_error,
    resource_not_found,
)
from providers.azure.mock_wire import PROMPT_BLOCKED, completion, dumps, stream_answer
from providers.mock.app import (
    API_KEY_CREDENTIALS,
    MAX_BODY,
    Dropped,
    MockProvider,
    MockShared,
    delay_whole_response,
    error_gate,
    shared_state,
)
from providers.mock.config import MockConfig
from providers.mock.faults import ErrorFault, Fault, FilterFault, MockError, StreamErrorFault
from providers.openai.mock_answers import compose, filtered
from providers.openai.mock_errors import context_error
from providers.openai.mock_request import (
    chat_params,
    embedding_inputs,
    json_object,
    positive_int,
    require_model,
)
from providers.openai.mock_wire import embeddings_body

__all__ = ["ENTRA_CREDENTIALS", "MOCK", "build_app"]

_V1: Final = "v1"
_DATED: Final = re.compile(r"\d{4}-\d{2}-\d{2}(?:-preview)?")
_FIRST_VERSION: Final = "2022-12-01"  # Azure OpenAI's first GA version
# Route names: the dated routes need an api-version; the token route no sign-in.
_DATED_ROUTES: Final = frozenset({"chat", "embeddings", "models"})
_TOKEN_ROUTE: Final = "token"
_CHAT: Final = "ChatCompletions_Create"
_EMBED: Final = "Embeddings_Create"
_MODEL_CREATED: Final = 1_715_558_400
# What the mock reports left when it enforces no budget: an S0 deployment's limits.
_NOMINAL_RPM: Final = 1_000
_NOMINAL_TPM: Final = 150_000

_CALLER: Final = web.RequestKey("azure_caller", str)
_VERSION: Final = web.RequestKey("azure_api_version", str)
_RATE_HEADERS: Final = web.RequestKey("azure_rate_headers", dict[str, str])

# The app registration the mock's token endpoint knows, as a credential.
ENTRA_CREDENTIALS: Final = {
    "tenant_id": MOCK_TENANT,
    "client_id": MOCK_CLIENT_ID,
    "client_secret": MOCK_CLIENT_SECRET,
}


def _json(payload: Mapping[str, Any]) -> web.Response:
    return web.Response(body=dumps(payload), content_type="application/json")


# ---------------------------------------------------------------- request gates


def _authorize(request: web.Request, config: MockConfig) -> None:
    route = request.match_info.route.name
    if route is None or route == _TOKEN_ROUTE:
        return  # unknown routes answer 404; the token endpoint checks its own form
    version = request.query.get("api-version", "")
    if route in _DATED_ROUTES and not (_DATED.fullmatch(version) and version >= _FIRST_VERSION):
        raise resource_not_found()
    request[_VERSION] = version if route in _DATED_ROUTES else _V1
    key = request.headers.get("api-key", "").strip()
    if key:
        if not config.accepts(key):
            raise invalid_key()
        request[_CALLER] = key
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        # The v1 API also takes the key as OpenAI's SDK sends it, as a bearer token.
        key_as_token = route not in _DATED_ROUTES and token in config.api_keys
        if not (key_as_token or request.app[TOKENS].valid(token)):
            raise invalid_token()
        request[_CALLER] = token
        return
    raise missing_key()


def _deployment(request: web.Request, body: Mapping[str, Any]) -> str:
    """The deployment a call names: in the path, or the v1 body's `model`."""
    state = shared_state(request)
    deployment = request.match_info.get("deployment") or require_model(body)
    if not state.knows_model(deployment):
        raise deployment_not_found()
    return deployment


def _charge(request: web.Request, state: MockShared, operation: str, tokens: int) -> None:
    """Take this request from the caller's budget; a refusal is Azure's 429."""
    budget = state.limiter.take(request[_CALLER], tokens) if state.limiter.enabled else None
    if budget is not None and budget.limit_requests:
        requests = budget.remaining_requests
    else:
        requests = _NOMINAL_RPM - 1
    if budget is not None and budget.limit_tokens:
        left = budget.remaining_tokens
    else:
        left = _NOMINAL_TPM - min(tokens, _NOMINAL_TPM)
    request[_RATE_HEADERS] = {
        "x-ratelimit-remaining-requests": str(requests),
        "x-ratelimit-remaining-tokens": str(left),
    }
    if budget is not None and not budget.allowed:
        seconds = max(1, math.ceil(budget.retry_after))
        headers = {
            "retry-after": str(seconds),
            "retry-after-ms": str(max(1, math.ceil(budget.retry_after * 1000))),
        }
        raise rate_limited(operation, request[_VERSION], str(seconds), headers)


def _pick_fault(request: web.Request, model: str | None, operation: str) -> Fault | None:
    state = shared_state(request)
    fault = state.pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        error = fault_error(fault, operation, request[_VERSION], state.config.context_window)
        if error.kind == "rate_limited" and _RATE_HEADERS in request:
            request[_RATE_HEADERS]["x-ratelimit-remaining-requests"] = "0"
        raise error
    if isinstance(fault, FilterFault) and fault.after is None:
        raise prompt_filtered(PROMPT_BLOCKED)
    return fault


# ---------------------------------------------------------------- handlers


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await json_object(request)
    deployment = _deployment(request, body)
    params = chat_params(body, deployment)
    wanted = params.prompt_tokens + (params.max_tokens or 0)
    if wanted > state.config.context_window:
        raise context_error(state.config.context_window, params.prompt_tokens, params.max_tokens)
    limit = params.max_tokens or state.config.max_tokens_default
    _charge(request, state, _CHAT, params.prompt_tokens + limit)
    fault = _pick_fault(request, deployment, _CHAT)
    answer = filtered(compose(params, state.config), fault)
    if params.stream:
        return await stream_answer(request, state, params, answer, fault, request[_VERSION])
    if isinstance(fault, StreamErrorFault):
        # Without a stream to break, a failure mid-answer is the whole answer's.
        raise fault_error(fault.error, _CHAT, request[_VERSION], state.config.context_window)
    payload = completion(params, answer, state.config.stamp_tokens, fault)
    try:
        await delay_whole_response(request, state.config, fault, answer.visible_tokens)
    except Dropped:
        return web.Response()  # never sent: the transport is gone
    return _json(payload)


async def _embeddings(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await json_object(request)
    deployment = _deployment(request, body)
    inputs = embedding_inputs(body.get("input"))
    dims = positive_int(body, "dimensions") or state.config.embed_dims
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise AzureError(
            400,
            {
                "error": {
                    "code": "BadRequest",
                    "message": f"The encoding format '{encoding}' is not supported.",
                }
            },
            kind="bad_request",
        )
    tokens = sum(count for _, count in inputs)
    _charge(request, state, _EMBED, tokens)
    fault = _pick_fault(request, deployment, _EMBED)
    try:
        await delay_whole_response(request, state.config, fault, 1)
    except Dropped:
        return web.Response()
    return _json(embeddings_body(inputs, dims, encoding, deployment))


def _model(model: str) -> dict[str, Any]:
    """One entry of Azure's model list (its own shape, not OpenAI's)."""
    embeds = "embedding" in model
    return {
        "id": model,
        "object": "model",
        "created_at": _MODEL_CREATED,
        "status": "succeeded",
        "lifecycle_status": "generally-available",
        "capabilities": {
            "fine_tune": False,
            "inference": True,
            "completion": False,
            "chat_completion": not embeds,
            "embeddings": embeds,
        },
        "deprecation": {"inference": _MODEL_CREATED + 3 * 365 * 86_400},
    }


async def _models(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    _pick_fault(request, None, "Models_List")
    return _json({"object": "list", "data": [_model(m) for m in state.config.models]})


# ---------------------------------------------------------------- app plumbing


def _url_error(request: web.Request, exc: web.HTTPException) -> MockError:
    if exc.status == 404:
        return resource_not_found()
    body = {"error": {"code": str(exc.status), "message": exc.reason}}
    return AzureError(exc.status, body, kind="bad_request")


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    request_id = str(uuid.uuid4())
    headers.setdefault("apim-request-id", request_id)
    headers.setdefault("x-request-id", request_id)
    headers.setdefault("x-ms-region", "Mock Region")
    for name, value in request.get(_RATE_HEADERS, {}).items():
        headers.setdefault(name, value)


def build_app() -> web.Application:
    """Azure's routes, to be mounted under `/azure` by `providers.mock.app.build_app`."""
    app = web.Application(
        middlewares=[error_gate(_authorize, lambda error, _: render_error(error), _url_error)],
        client_max_size=MAX_BODY,
    )
    app[TOKENS] = TokenBook()
    app.on_response_prepare.append(_add_headers)
    routes = app.router
    deployment = "/openai/deployments/{deployment}"
    routes.add_post(f"{deployment}/chat/completions", _chat_completions, name="chat")
    routes.add_post(f"{deployment}/embeddings", _embeddings, name="embeddings")
    routes.add_get("/openai/models", _models, name="models")
    routes.add_post("/openai/v1/chat/completions", _chat_completions, name="v1-chat")
    routes.add_post("/openai/v1/embeddings", _embeddings, name="v1-embeddings")
    routes.add_get("/openai/v1/models", _models, name="v1-models")
    routes.add_post("/login/{tenant}/oauth2/v2.0/token", token_endpoint, name=_TOKEN_ROUTE)
    return app


MOCK = MockProvider(
    prefix="azure",
    build=build_app,
    credentials=API_KEY_CREDENTIALS,
    token_path="/login/{tenant_id}/oauth2/v2.0/token",
)

"""Vertex AI as a mock, mounted under `/vertex`: a token endpoint and the model routes.

Routes (the fleet's base URL is `/vertex/v1`, Google's SDK takes `/vertex` and adds
its API version, `v1` or `v1beta1`):

* `POST /token`: Google's OAuth2 token endpoint (`mock_token`), really checking the
  service account's signed JWT;
* `POST /{v1,v1beta1}/projects/{p}/locations/{l}/publishers/google/models/{m}:{method}`
  for `generateContent`, `streamGenerateContent` (Gemini's mock, mounted),
  `predict` (text embeddings) and `countTokens` (`mock_predict`).

Model routes want `Authorization: Bearer <a token this mock issued>` (none, unknown
or expired: 401 `UNAUTHENTICATED`, as Vertex says it) for the account's own project
(another project: 404). Any location is accepted: only real hosts tie the location
to the host. Errors are Google's `google.rpc.Status` bodies in Vertex's words
(`mock_errors`); the rate limiter's budgets are per token.

The `401` fault stands for a credential Google stopped accepting: the request gets
401 and the account's next token exchange is refused (`invalid_grant`) once, so the
refresh a client makes on a 401 fails too, as it would for a disabled account. The
mock forgets the refusal after that one exchange, so a fault never outlives its test.
"""

from __future__ import annotations

import time
from typing import Final

from aiohttp import web

from providers.gemini.mock_errors import GoogleError, budget_wait, render_error, url_error
from providers.gemini.mock_generate import generate_content
from providers.mock.app import (
    MAX_BODY,
    Dropped,
    MockCredentials,
    MockProvider,
    bearer_key,
    delay_whole_response,
    error_gate,
    shared_state,
)
from providers.mock.config import MockConfig
from providers.mock.faults import ErrorFault, MockError, StreamErrorFault
from providers.vertex.adapter import VERIFY_MODEL
from providers.vertex.mock_account import CANARIES, GOOD_ACCOUNT, WRONG_ACCOUNT
from providers.vertex.mock_errors import (
    fault_error,
    missing_token_error,
    project_not_found,
    rate_limit_error,
    unauthenticated_error,
)
from providers.vertex.mock_predict import count_tokens, predict
from providers.vertex.mock_token import (
    ACCOUNTS,
    REFUSED,
    MockAccount,
    RefusedGrants,
    account_of,
    token_endpoint,
)

__all__ = ["MOCK", "build_app", "model_not_found"]

_TOKEN_ROUTE: Final = "vertex-token"
_MODEL_ROUTE: Final = (
    "/{version:v1|v1beta1}/projects/{project}/locations/{location}"
    "/publishers/google/models/{model:[^/:]+}:{method:[A-Za-z]+}"
)
_ACCOUNT: Final = web.RequestKey("vertex_account", MockAccount)
_RETRY_INFO: Final = "type.googleapis.com/google.rpc.RetryInfo"


def model_not_found(request: web.Request, model: str) -> GoogleError:
    """Vertex's 404 for a model it does not have."""
    match = request.match_info
    name = (
        f"projects/{match['project']}/locations/{match['location']}"
        f"/publishers/google/models/{model}"
    )
    return GoogleError(
        404,
        f"Publisher Model `{name}` was not found or your project does not have access to it. "
        "Please ensure you are using a valid model version. For more information, see: "
        "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions",
        "NOT_FOUND",
        kind="not_found",
    )


def _refuse_next_grant(request: web.Request) -> None:
    account = request.get(_ACCOUNT)
    if account is not None:
        request.app[REFUSED].add(account.client_email)


def _vertex_error(request: web.Request, error: MockError, model: str) -> MockError:
    """One of Gemini's mock errors as Vertex says it (the kinds whose words differ)."""
    if error.kind == "unauthorized":
        _refuse_next_grant(request)
        return unauthenticated_error()
    if error.kind == "rate_limited":
        delays = [
            d.get("retryDelay")
            for d in getattr(error, "details", ())
            if isinstance(d, dict) and d.get("@type") == _RETRY_INFO
        ]
        vertex = rate_limit_error(model, None)
        if delays:
            vertex.details.append({"@type": _RETRY_INFO, "retryDelay": delays[-1]})
        return vertex
    if error.kind == "quota":
        return fault_error(ErrorFault("quota", 429), model)
    return error


# ---------------------------------------------------------------- handlers


async def _generate(request: web.Request, model: str, stream: bool) -> web.StreamResponse:
    try:
        return await generate_content(
            request, model, stream=stream, not_found=lambda m: model_not_found(request, m)
        )
    except MockError as error:
        raise _vertex_error(request, error, model) from None


async def _predict(request: web.Request, model: str) -> web.StreamResponse:
    state = shared_state(request)
    if not state.knows_model(model):
        raise model_not_found(request, model)
    tokens, answer = await predict(request, model, state.config.embed_dims)
    _charge(request, model, tokens)
    fault = state.pick_fault(request, model)
    if isinstance(fault, StreamErrorFault):
        fault = fault.error  # without a stream, a failure mid-answer is the whole answer's
    if isinstance(fault, ErrorFault):
        raise _vertex_error(request, fault_error(fault, model), model)
    try:
        await delay_whole_response(request, state.config, fault, 1)
    except Dropped:
        return web.Response()  # never sent: the transport is gone
    return web.json_response(answer)


async def _count_tokens(request: web.Request, model: str) -> web.StreamResponse:
    state = shared_state(request)
    # The model the fleet's verify counts with is always there, as it is at Google.
    if not (state.knows_model(model) or model == VERIFY_MODEL):
        raise model_not_found(request, model)
    answer = await count_tokens(request)
    fault = state.pick_fault(request, model)
    if isinstance(fault, StreamErrorFault):
        fault = fault.error
    if isinstance(fault, ErrorFault):
        raise _vertex_error(request, fault_error(fault, model), model)
    return web.json_response(answer)


def _charge(request: web.Request, model: str, tokens: int) -> None:
    limiter = shared_state(request).limiter
    if not limiter.enabled:
        return
    budget = limiter.take(bearer_key(request), tokens)
    if not budget.allowed:
        raise rate_limit_error(model, budget_wait(budget.retry_after))


async def _model_call(request: web.Request) -> web.StreamResponse:
    model, method = request.match_info["model"], request.match_info["method"]
    if method == "generateContent":
        return await _generate(request, model, stream=False)
    if method == "streamGenerateContent":
        if request.query.get("alt") != "sse":
            # Without alt=sse Google streams one JSON array; the fleet asks for SSE.
            raise GoogleError(400, "The mock streams with alt=sse only.", "INVALID_ARGUMENT")
        return await _generate(request, model, stream=True)
    if method == "predict":
        return await _predict(request, model)
    if method == "countTokens":
        return await _count_tokens(request, model)
    raise GoogleError(
        404,
        f"The requested URL {request.path} was not found on this server.",
        "NOT_FOUND",
        kind="not_found",
    )


# ---------------------------------------------------------------- app plumbing


def _admit(request: web.Request, config: MockConfig) -> None:
    if request.match_info.route.name == _TOKEN_ROUTE:
        return  # the token endpoint authenticates by the assertion it is given
    token = bearer_key(request)
    if not token:
        raise missing_token_error()
    account = account_of(token, time.time())
    if account is None and config.accept_any_key:
        account = next(iter(ACCOUNTS.values()))
    if account is None:
        raise unauthenticated_error()
    request[_ACCOUNT] = account
    project = request.match_info.get("project")
    if project is not None and project != account.project:
        raise project_not_found(project)


def build_app() -> web.Application:
    """Vertex's routes, to be mounted under `/vertex` by `providers.mock.app`."""
    app = web.Application(
        middlewares=[error_gate(_admit, render_error, url_error)], client_max_size=MAX_BODY
    )
    app[REFUSED] = RefusedGrants()
    app.router.add_post("/token", token_endpoint, name=_TOKEN_ROUTE)
    app.router.add_post(_MODEL_ROUTE, _model_call)
    return app


_CREDENTIALS: Final = MockCredentials(good=GOOD_ACCOUNT, wrong=WRONG_ACCOUNT, canaries=CANARIES)

# The SDK adds the API version (`http_options.api_version`) after the base URL.
MOCK = MockProvider(
    prefix="vertex",
    build=build_app,
    sdk_path="",
    api_path="/v1",
    credentials=_CREDENTIALS,
    token_path="/token",
)

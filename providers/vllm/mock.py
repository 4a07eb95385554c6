"""vLLM's OpenAI-compatible server as a mock, mounted under `/vllm`.

Routes: `POST /v1/chat/completions`, `POST /v1/embeddings`, `GET /v1/models`, the
rerank routes `POST /rerank`, `/v1/rerank` and `/v2/rerank` (Cohere's request
and vLLM's answer, `providers.mock.rerank` scores), and `GET /health` and
`GET /version`, which need no key. Requests are read and answered by the OpenAI
mock's engine (`providers.openai.mock_request`, `mock_answers`), written in
vLLM's own shapes (`mock_wire`) with vLLM's errors (`mock_errors`): the key of a
server started with `--api-key` as a Bearer token (401 `{"error":
"Unauthorized"}`), 404 "The model `x` does not exist." for an unknown model,
400 past `MockConfig.context_window`, and every fault of `providers.mock.faults`
(vLLM has no content filter: `filtered` faults change nothing).
"""

from __future__ import annotations

from typing import Final

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
from providers.mock.faults import ErrorFault, Fault, MockError, StreamErrorFault
from providers.openai.mock_answers import compose
from providers.openai.mock_request import (
    chat_params,
    embedding_inputs,
    json_object,
    positive_int,
    require_model,
)
from providers.openai.mock_wire import embeddings_body
from providers.vllm.mock_errors import (
    DETAIL,
    context_error,
    fault_error,
    model_not_found,
    rate_limit_error,
    render_error,
    unauthorized,
)
from providers.vllm.mock_wire import completion_body, rerank_body, stream_answer

__all__ = ["MOCK", "VERSION", "build_app"]

VERSION: Final = "0.11.0"
_CREATED: Final = 1_700_000_000
# Routes vLLM serves without a key even when started with --api-key.
_OPEN_PATHS: Final = ("/health", "/version")


# ---------------------------------------------------------------- gates


def _authorize(request: web.Request, config: MockConfig) -> None:
    if request.path.endswith(_OPEN_PATHS):
        return
    key = bearer_key(request)
    if not config.accepts(key):
        raise unauthorized()


def _require_known(state: MockShared, model: str) -> None:
    if not state.knows_model(model):
        raise model_not_found(model)


def _charge(request: web.Request, state: MockShared, tokens: int) -> None:
    if not state.limiter.enabled:
        return
    budget = state.limiter.take(bearer_key(request), tokens)
    if not budget.allowed:
        raise rate_limit_error(budget.retry_after)


def _pick_fault(request: web.Request, model: str | None, *, stream: bool = False) -> Fault | None:
    state = shared_state(request)
    fault = state.pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        raise fault_error(fault, model, state.config.context_window)
    if isinstance(fault, StreamErrorFault) and not stream:
        # Without a stream to break, a failure mid-answer is the whole answer's.
        raise fault_error(fault.error, model, state.config.context_window)
    return fault


# ---------------------------------------------------------------- handlers


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await json_object(request)
    model = require_model(body)
    _require_known(state, model)
    params = chat_params(body, model)
    completion = params.max_tokens or 0
    if params.prompt_tokens + completion > state.config.context_window:
        raise context_error(state.config.context_window, params.prompt_tokens, completion)
    _charge(
        request,
        state,
        params.prompt_tokens + (params.max_tokens or state.config.max_tokens_default),
    )
    fault = _pick_fault(request, model, stream=params.stream)
    answer = compose(params, state.config)
    if params.stream:
        return await stream_answer(request, state, params, answer, fault)
    try:
        await delay_whole_response(request, state.config, fault, answer.visible_tokens)
    except Dropped:
        return web.Response()  # never sent: the transport is gone
    return json_answer(completion_body(params, answer, state.config.stamp_tokens))


async def _embeddings(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await json_object(request)
    model = require_model(body)
    _require_known(state, model)
    inputs = embedding_inputs(body.get("input"))
    dims = positive_int(body, "dimensions") or state.config.embed_dims
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise MockError(400, f"Unsupported encoding_format {encoding!r}", "BadRequestError")
    _charge(request, state, sum(count for _, count in inputs))
    fault = _pick_fault(request, model)
    try:
        await delay_whole_response(request, state.config, fault, 1)
    except Dropped:
        return web.Response()
    return json_answer(embeddings_body(inputs, dims, encoding, model))


async def _rerank(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await json_object(request)
    model = require_model(body)
    _require_known(state, model)
    query, documents = body.get("query"), body.get("documents")
    if not isinstance(query, str):
        raise MockError(400, "query must be a string", "BadRequestError", param="query")
    if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        raise MockError(
            400, "documents must be a list of strings", "BadRequestError", param="documents"
        )
    top_n = body.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 0):
        raise MockError(
            400, "top_n must be a non-negative integer", "BadRequestError", param="top_n"
        )
    answer = rerank_body(model, query, documents, top_n)
    _charge(request, state, answer["usage"]["total_tokens"])
    fault = _pick_fault(request, model)
    try:
        await delay_whole_response(request, state.config, fault, 1)
    except Dropped:
        return web.Response()
    return json_answer(answer)


async def _models(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    _pick_fault(request, None)
    window = state.config.context_window
    data = [
        {
            "id": model,
            "object": "model",
            "created": _CREATED,
            "owned_by": "vllm",
            "root": model,
            "parent": None,
            "max_model_len": window,
        }
        for model in state.config.models
    ]
    return json_answer({"object": "list", "data": data})


async def _health(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200)


async def _version(request: web.Request) -> web.StreamResponse:
    return json_answer({"version": VERSION})


# ---------------------------------------------------------------- app plumbing


def _url_error(request: web.Request, exc: web.HTTPException) -> MockError:
    # FastAPI's own answers to a route or method it does not have.
    message = "Not Found" if exc.status == 404 else "Method Not Allowed"
    return MockError(exc.status, message, "NotFoundError", kind=DETAIL)


def build_app() -> web.Application:
    """vLLM's routes, to be mounted under `/vllm` by `providers.mock.app.build_app`."""
    app = web.Application(
        middlewares=[error_gate(_authorize, lambda error, _: render_error(error), _url_error)],
        client_max_size=MAX_BODY,
    )
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_get("/v1/models", _models)
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        app.router.add_post(path, _rerank)
    app.router.add_get("/health", _health)
    app.router.add_get("/version", _version)
    return app


# The fleet's adapter and the `openai` SDK take `/v1`; Cohere's SDK takes the root
# (it adds `/v2/rerank` itself).
MOCK = MockProvider(
    prefix="vllm", build=build_app, sdk_path="/v1", api_path="/v1", content_filter=False
)

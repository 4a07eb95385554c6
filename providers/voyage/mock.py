"""Voyage AI as a mock: `/voyage/v1/embeddings` and `/voyage/v1/rerank`.

What it reproduces (judged by the official `voyageai` SDK):

* the request schema as FastAPI checks it (422 with a `detail` list naming the
  field) and Voyage's own 400s: an unknown model ("Model X is not supported.
  Supported models are […]"), more than 1,000 inputs or documents, more tokens
  than the model takes in one request (`providers.voyage.limits`, counted with the
  mock's word counts), an `output_dimension` the model lacks;
* embeddings as float lists or, when `encoding_format: base64` (what the SDK
  asks for), little-endian float32 in base64; `usage.total_tokens`;
* rerank scored by `providers.mock.rerank`, best first, cut to `top_k`, with the
  documents when `return_documents`; usage as Voyage counts it (the query's
  tokens once per document plus the documents');
* every fault of `providers.mock.faults` in Voyage's error shape (`mock_wire`),
  and the per-key limiter's 429 with `retry-after`; unknown routes are
  FastAPI's 404/405 `{"detail": "Not Found"}`.

Models: Voyage's catalog below, plus `MockConfig.models` and any `mock-*` name.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from providers.mock.faults import ErrorFault, Fault, MockError, StreamErrorFault
from providers.mock.rerank import token_count
from providers.voyage.limits import (
    MAX_DOCUMENTS,
    MAX_INPUTS,
    embed_token_limit,
    rerank_token_limit,
)
from providers.voyage.mock_wire import (
    bad_request,
    context_error,
    embeddings_body,
    fault_error,
    invalid,
    invalid_key,
    rate_limit_error,
    render_error,
    rerank_body,
    unsupported_model,
)

__all__ = ["EMBEDDING_MODELS", "MOCK", "RERANK_MODELS", "build_app"]

EMBEDDING_MODELS: Final = (
    "voyage-4-large",
    "voyage-4",
    "voyage-4-lite",
    "voyage-3-large",
    "voyage-3.5",
    "voyage-3.5-lite",
    "voyage-code-3",
    "voyage-finance-2",
    "voyage-law-2",
    "voyage-multilingual-2",
)
RERANK_MODELS: Final = ("rerank-2.5", "rerank-2.5-lite", "rerank-2", "rerank-2-lite")
# Sizes Voyage's flexible-dimension models offer.
_DIMENSIONS: Final = (256, 512, 1024, 2048)
_SEPARATORS: Final = (",", ":")


def _authorize(request: web.Request, config: MockConfig) -> None:
    key = bearer_key(request)
    if not config.accepts(key):
        raise invalid_key(key)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise invalid("JSON decode error") from None
    if not isinstance(body, dict):
        raise invalid("Input should be a valid dictionary")
    return body


def _string(body: Mapping[str, Any], field: str) -> str:
    value = body.get(field)
    if value is None:
        raise invalid("Field required", field)
    if not isinstance(value, str):
        raise invalid("Input should be a valid string", field)
    return value


def _strings(body: Mapping[str, Any], field: str) -> list[str]:
    value = body.get(field)
    if isinstance(value, str):
        value = [value]
    if value is None:
        raise invalid("Field required", field)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid("Input should be a valid list of strings", field)
    if not value:
        raise bad_request(f"The {field} list cannot be empty.")
    return value


def _optional(body: Mapping[str, Any], field: str, kind: type, choices: tuple[Any, ...]) -> Any:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise invalid(f"Input should be a valid {kind.__name__}", field)
    if choices and value not in choices:
        raise invalid(f"Input should be {' or '.join(repr(c) for c in choices)}", field)
    return value


def _require_model(state: MockShared, model: str, catalog: tuple[str, ...]) -> None:
    if model not in catalog and not state.knows_model(model):
        raise unsupported_model(model, catalog)


def _charge(request: web.Request, state: MockShared, tokens: int) -> None:
    if state.limiter.enabled:
        budget = state.limiter.take(bearer_key(request), tokens)
        if not budget.allowed:
            raise rate_limit_error(budget)


def _pick_fault(request: web.Request, state: MockShared, model: str) -> Fault | None:
    fault = state.pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        raise fault_error(fault, model, state.config.context_window)
    if isinstance(fault, StreamErrorFault):
        # Nothing is streamed here: a failure partway is the whole answer's.
        raise fault_error(fault.error, model, state.config.context_window)
    return fault


async def _answer(
    request: web.Request, state: MockShared, fault: Fault | None, payload: Mapping[str, Any]
) -> web.Response:
    try:
        await delay_whole_response(request, state.config, fault, 1)
    except Dropped:
        return web.Response()  # never sent: the transport is gone
    return json_answer(payload)


async def _embeddings(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await _body(request)
    texts = _strings(body, "input")
    model = _string(body, "model")
    _optional(body, "input_type", str, ("query", "document"))
    _optional(body, "truncation", bool, ())
    dimension = _optional(body, "output_dimension", int, ())
    dtype = _optional(body, "output_dtype", str, ("float", "int8", "uint8", "binary", "ubinary"))
    encoding = _optional(body, "encoding_format", str, ("base64",))
    _require_model(state, model, EMBEDDING_MODELS)
    if dimension is not None and dimension not in _DIMENSIONS:
        raise bad_request(
            f"Value '{dimension}' supplied for argument 'output_dimension' is not valid. "
            f"Supported values are {list(_DIMENSIONS)}."
        )
    if dtype not in (None, "float"):
        raise bad_request(f"output_dtype '{dtype}': the mock serves float embeddings only.")
    if len(texts) > MAX_INPUTS:
        raise bad_request(f"The batch size limit is {MAX_INPUTS}. Your batch size is {len(texts)}.")
    tokens = sum(token_count(text) for text in texts)
    limit = embed_token_limit(model)
    if tokens > limit:
        raise context_error(model, limit, tokens)
    _charge(request, state, tokens)
    fault = _pick_fault(request, state, model)
    dims = dimension or state.config.embed_dims
    answer = embeddings_body(texts, dims, encoding == "base64", model, tokens)
    return await _answer(request, state, fault, answer)


async def _rerank(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await _body(request)
    query = _string(body, "query")
    documents = _strings(body, "documents")
    model = _string(body, "model")
    top_k = _optional(body, "top_k", int, ())
    return_documents = bool(_optional(body, "return_documents", bool, ()))
    _optional(body, "truncation", bool, ())
    _require_model(state, model, RERANK_MODELS)
    if top_k is not None and top_k < 1:
        raise bad_request("top_k must be a positive integer.")
    if len(documents) > MAX_DOCUMENTS:
        raise bad_request(
            f"The number of documents is limited to {MAX_DOCUMENTS}. "
            f"Your request has {len(documents)} documents."
        )
    tokens = token_count(query) * len(documents) + sum(token_count(d) for d in documents)
    limit = rerank_token_limit(model)
    if tokens > limit:
        raise context_error(model, limit, tokens)
    _charge(request, state, tokens)
    fault = _pick_fault(request, state, model)
    answer = rerank_body(query, documents, top_k, return_documents, model, tokens)
    return await _answer(request, state, fault, answer)


def _url_error(request: web.Request, exc: web.HTTPException) -> MockError:
    message = "Method Not Allowed" if exc.status == 405 else "Not Found"
    return MockError(exc.status, message, "not_found")


def build_app() -> web.Application:
    """Voyage's routes, to be mounted under `/voyage` by `providers.mock.app.build_app`."""
    app = web.Application(
        middlewares=[error_gate(_authorize, lambda error, _: render_error(error), _url_error)],
        client_max_size=MAX_BODY,
    )
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_post("/v1/rerank", _rerank)
    return app


MOCK = MockProvider(
    prefix="voyage", build=build_app, sdk_path="/v1", api_path="/v1", content_filter=False
)

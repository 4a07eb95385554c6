"""A Text Embeddings Inference server as a mock, under `/tei`.

Routes as TEI serves them: `POST /embed` (and `POST /`, where TEI serves an
embedding model's default task and where `huggingface_hub`'s `InferenceClient`
posts when given the server's URL as its model), `POST /rerank`, `GET /info`,
and the unauthenticated `GET /health`. One mock serves an embedding model and a
reranker at once, which a real server does not (its `/info` `model_type` says
which one it runs; this one reports the embedding model).

What it reproduces (judged by `huggingface_hub`'s `AsyncInferenceClient` and
TEI's OpenAPI shapes):

* `--api-key`: every route but `/health` wants `Authorization: Bearer <key>`,
  and a missing or wrong one is an empty 401;
* axum's plain-text rejections of a body it cannot read, and TEI's own errors
  (`mock_wire`): an empty batch, more than `max_client_batch_size` (32) inputs
  or texts ("batch size 40 > maximum allowed batch size 32", a 413), an input
  past 512 tokens without `truncate`, an unknown `prompt_name`, `dimensions`
  past the model's size;
* bare JSON answers: `[[float]]` for `/embed` (vectors from the text engine,
  after the model's prompt for `prompt_name`), `[{index, score, text?}]` best
  first for `/rerank` (scores from `providers.mock.rerank`, in 0..1, or their
  logits for `raw_scores`); `x-compute-tokens` and TEI's other timing headers;
* faults in TEI's shapes; the per-key limiter's refusal is TEI's 429
  `overloaded`. TEI takes no model in its bodies: a `model` field, which the
  fleet's adapter sends, only scopes the fault book.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from providers.mock.app import (
    MAX_BODY,
    Dropped,
    MockProvider,
    MockShared,
    delay_whole_response,
    error_gate,
    shared_state,
)
from providers.mock.config import MockConfig
from providers.mock.faults import ErrorFault, Fault, MockError, StreamErrorFault
from providers.mock.rerank import rank, token_count
from providers.mock.text import embedding_floats
from providers.tei.mock_wire import (
    EMPTY,
    TEXT,
    characters,
    compute_headers,
    fault_error,
    render_error,
    tei_error,
)

__all__ = ["MAX_CLIENT_BATCH_SIZE", "MAX_INPUT_LENGTH", "MOCK", "MODEL_ID", "PROMPTS", "build_app"]

MODEL_ID: Final = "mock/tei-embedding"
MAX_CLIENT_BATCH_SIZE: Final = 32
MAX_INPUT_LENGTH: Final = 512
# The served model's sentence-transformers prompts (`prompt_name` picks one).
PROMPTS: Final[Mapping[str, str]] = {"query": "query: ", "document": "passage: "}
_PUBLIC: Final = frozenset({"/health"})
_STARTED: Final = web.RequestKey("tei_started", float)


def _authorize(request: web.Request, config: MockConfig) -> None:
    request[_STARTED] = time.monotonic()
    if request.path.removeprefix("/tei") in _PUBLIC:
        return
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip() if scheme == "Bearer" else ""
    if not config.accepts(key):
        raise MockError(401, "", EMPTY, kind="unauthorized")


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object axum's `Json` extractor would accept, or its rejection."""
    if request.content_type != "application/json":
        raise MockError(415, "Expected request with `Content-Type: application/json`", TEXT)
    try:
        body = await request.json()
    except ValueError as exc:
        raise MockError(400, f"Failed to parse the request body as JSON: {exc}", TEXT) from None
    if not isinstance(body, dict):
        raise _shape("invalid type: expected a struct")
    return body


def _shape(problem: str) -> MockError:
    return MockError(
        422, f"Failed to deserialize the JSON body into the target type: {problem}", TEXT
    )


def _texts(body: Mapping[str, Any], field: str) -> list[str]:
    value = body.get(field)
    if value is None:
        raise _shape(f"missing field `{field}`")
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _shape(f"{field}: data did not match any variant of untagged enum Input")
    return value


def _flag(body: Mapping[str, Any], field: str, default: bool) -> bool:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _shape(f"{field}: invalid type: expected a boolean")
    return value


def _check_batch(texts: list[str], field: str) -> None:
    if not texts:
        raise tei_error("empty", f"`{field}` cannot be empty")
    if len(texts) > MAX_CLIENT_BATCH_SIZE:
        raise tei_error(
            "validation",
            f"batch size {len(texts)} > maximum allowed batch size {MAX_CLIENT_BATCH_SIZE}",
        )


def _check_length(tokens: int, truncate: bool) -> None:
    if tokens > MAX_INPUT_LENGTH and not truncate:
        raise tei_error(
            "validation", f"`inputs` must have less than {MAX_INPUT_LENGTH} tokens. Given: {tokens}"
        )


def _pick_fault(request: web.Request, state: MockShared, body: Mapping[str, Any]) -> Fault | None:
    model = body.get("model")
    fault = state.pick_fault(request, model if isinstance(model, str) else None)
    if isinstance(fault, ErrorFault):
        raise fault_error(fault, MAX_INPUT_LENGTH)
    if isinstance(fault, StreamErrorFault):
        raise fault_error(fault.error, MAX_INPUT_LENGTH)
    return fault


def _charge(request: web.Request, state: MockShared, tokens: int) -> None:
    if state.limiter.enabled:
        key = request.headers.get("Authorization", "")
        if not state.limiter.take(key, tokens).allowed:
            raise tei_error("overloaded", "Model is overloaded", "rate_limited")


async def _answer(
    request: web.Request,
    state: MockShared,
    fault: Fault | None,
    payload: Any,
    headers: Mapping[str, str],
) -> web.Response:
    try:
        await delay_whole_response(request, state.config, fault, 1)
    except Dropped:
        return web.Response()  # never sent: the transport is gone
    body = json.dumps(payload, separators=(",", ":")).encode()
    return web.Response(body=body, content_type="application/json", headers=headers)


async def _embed(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await _body(request)
    texts = _texts(body, "inputs")
    truncate = _flag(body, "truncate", False)
    _flag(body, "normalize", True)  # the text engine's vectors are unit vectors either way
    prompt_name = body.get("prompt_name")
    dims = body.get("dimensions") or state.config.embed_dims
    _check_batch(texts, "inputs")
    if prompt_name is not None and prompt_name not in PROMPTS:
        raise tei_error("validation", f"Prompt name `{prompt_name}` was not found in the prompts")
    if (
        not isinstance(dims, int)
        or isinstance(dims, bool)
        or not 0 < dims <= state.config.embed_dims
    ):
        raise tei_error(
            "validation", f"`dimensions` must be between 1 and {state.config.embed_dims}"
        )
    prompt = PROMPTS.get(prompt_name, "") if isinstance(prompt_name, str) else ""
    prompted = [prompt + text for text in texts]
    counts = [token_count(text) for text in prompted]
    for count in counts:
        _check_length(count, truncate)
    tokens = sum(min(count, MAX_INPUT_LENGTH) for count in counts)
    _charge(request, state, tokens)
    fault = _pick_fault(request, state, body)
    vectors = [embedding_floats(text, dims) for text in prompted]
    headers = compute_headers(request[_STARTED], characters(texts), tokens)
    return await _answer(request, state, fault, vectors, headers)


async def _rerank(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await _body(request)
    query = body.get("query")
    if not isinstance(query, str):
        raise _shape("missing field `query`" if query is None else "query: expected a string")
    texts = _texts(body, "texts")
    truncate = _flag(body, "truncate", False)
    raw_scores = _flag(body, "raw_scores", False)
    return_text = _flag(body, "return_text", False)
    _check_batch(texts, "texts")
    counts = [token_count(query) + token_count(text) for text in texts]
    for count in counts:
        _check_length(count, truncate)
    tokens = sum(min(count, MAX_INPUT_LENGTH) for count in counts)
    _charge(request, state, tokens)
    fault = _pick_fault(request, state, body)
    ranks: list[dict[str, Any]] = []
    for index, score in rank(query, texts):
        item: dict[str, Any] = {"index": index}
        if return_text:
            item["text"] = texts[index]
        item["score"] = math.log(score / (1 - score)) if raw_scores else score
        ranks.append(item)
    headers = compute_headers(
        request[_STARTED], len(query) * len(texts) + characters(texts), tokens
    )
    return await _answer(request, state, fault, ranks, headers)


async def _info(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    fault = _pick_fault(request, state, {})
    info = {
        "model_id": MODEL_ID,
        "model_sha": None,
        "model_dtype": "float16",
        "model_type": {"embedding": {"pooling": "cls"}},
        "max_concurrent_requests": 512,
        "max_input_length": MAX_INPUT_LENGTH,
        "max_batch_tokens": 16384,
        "max_batch_requests": None,
        "max_client_batch_size": MAX_CLIENT_BATCH_SIZE,
        "auto_truncate": False,
        "tokenization_workers": 4,
        "version": "1.8.0",
        "sha": None,
        "docker_label": None,
    }
    return await _answer(request, state, fault, info, {})


async def _health(request: web.Request) -> web.StreamResponse:
    return web.Response()


def _url_error(request: web.Request, exc: web.HTTPException) -> MockError:
    return MockError(exc.status, "", EMPTY, kind="not_found")


def build_app() -> web.Application:
    """TEI's routes, to be mounted under `/tei` by `providers.mock.app.build_app`."""
    app = web.Application(
        middlewares=[error_gate(_authorize, lambda error, _: render_error(error), _url_error)],
        client_max_size=MAX_BODY,
    )
    app.router.add_post("/", _embed)
    app.router.add_post("/embed", _embed)
    app.router.add_post("/rerank", _rerank)
    app.router.add_get("/info", _info)
    app.router.add_get("/health", _health)
    return app


MOCK = MockProvider(prefix="tei", build=build_app, retry_hints=False, content_filter=False)

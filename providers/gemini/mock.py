"""Gemini's API (Google AI Studio) as a mock, mounted under `/gemini`.

Routes, under `/v1beta` as the real API's (and `/v1`, the SDK's default):
`POST /models/{model}:generateContent`, `:streamGenerateContent?alt=sse`
(`mock_generate`), `:countTokens`, `:embedContent`, `:batchEmbedContents`,
`GET /models` (paged with `pageSize`/`pageToken`) and `GET /models/{model}`.
Reproduced from the real API:

* the key in `x-goog-api-key` or `?key=`: none is a 403 `PERMISSION_DENIED`, a wrong
  one the 400 `INVALID_ARGUMENT` with `ErrorInfo.reason: API_KEY_INVALID` Gemini
  sends (not a 401);
* 404 `NOT_FOUND` for an unknown model, Google's 400s for malformed requests
  (`mock_request`), every fault in Google's error shape (`mock_errors`), and the
  per-key rate limiter's 429 `RESOURCE_EXHAUSTED` with a `RetryInfo`;
* embeddings: one per `embedContent`, up to 100 per `batchEmbedContents` (each
  request naming the URL's model), `taskType`, `title` (retrieval documents only)
  and `outputDimensionality` checked as Google does; `usageMetadata.promptTokenCount`
  reported, as the SDK's own test fixtures show the API doing.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import msgspec
from aiohttp import web

from providers.gemini.adapter import TASK_TYPES
from providers.gemini.mock_errors import (
    GoogleError,
    fault_error,
    invalid_key_error,
    missing_key_error,
    model_not_found,
    render_error,
    url_error,
)
from providers.gemini.mock_generate import charge, generate_content
from providers.gemini.mock_request import (
    bad_request,
    json_object,
    parse_generate,
    prompt_words,
)
from providers.mock.app import (
    MAX_BODY,
    MockProvider,
    MockShared,
    delay_whole_response,
    error_gate,
    shared_state,
)
from providers.mock.config import MockConfig
from providers.mock.faults import ErrorFault, StreamErrorFault
from providers.mock.text import embedding_floats

__all__ = ["MOCK", "build_app"]

_encode: Final = msgspec.json.Encoder().encode
_BATCH_LIMIT: Final = 100
_PAGE_DEFAULT: Final = 50
_PAGE_MAX: Final = 1000
_TASK_TYPES: Final = TASK_TYPES | {"TASK_TYPE_UNSPECIFIED"}

Method = Callable[[web.Request, str], Awaitable[web.StreamResponse]]


def _json(payload: Mapping[str, Any]) -> web.Response:
    return web.Response(body=_encode(payload), content_type="application/json", charset="UTF-8")


def _known(state: MockShared, model: str, method: str) -> None:
    if not state.knows_model(model):
        raise model_not_found(model, method)


def _fault(request: web.Request, state: MockShared, model: str | None) -> None:
    """Faults for calls that are not streamed: errors only (others do not apply)."""
    fault = state.pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        raise fault_error(fault, model)
    if isinstance(fault, StreamErrorFault):
        raise fault_error(fault.error, model)


# ---------------------------------------------------------------- model methods


async def _generate(request: web.Request, model: str) -> web.StreamResponse:
    return await generate_content(request, model, stream=False)


async def _stream_generate(request: web.Request, model: str) -> web.StreamResponse:
    if request.query.get("alt") != "sse":
        # Without alt=sse the API streams one JSON array; the mock speaks only SSE.
        raise bad_request("The mock serves streamGenerateContent with alt=sse only.")
    return await generate_content(request, model, stream=True)


async def _count_tokens(request: web.Request, model: str) -> web.StreamResponse:
    state = shared_state(request)
    body = await json_object(request)
    inner = body.get("generateContentRequest")
    if inner is not None:
        if not isinstance(inner, Mapping):
            raise bad_request("Invalid value at 'generate_content_request'.")
        body = {k: v for k, v in inner.items() if k != "model"}
    req = parse_generate(body)
    _known(state, model, "countTokens")
    _fault(request, state, model)
    tokens = prompt_words(req)
    return _json(
        {"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]}
    )


def _embed_text(request: Mapping[str, Any], where: str) -> str:
    content = request.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    if not isinstance(parts, list) or not parts:
        raise bad_request(f"* {where}.content.parts: contents.parts must not be empty.")
    texts = [p.get("text") for p in parts if isinstance(p, Mapping)]
    if not all(isinstance(t, str) for t in texts):
        raise bad_request(f"* {where}.content: only text parts can be embedded by the mock.")
    return " ".join(t for t in texts if isinstance(t, str))


def _embed_dims(request: Mapping[str, Any], config: MockConfig, where: str) -> int:
    task = request.get("taskType", request.get("task_type"))
    if task is not None and task not in _TASK_TYPES:
        raise bad_request(
            f"Invalid value at '{where}.task_type' "
            f'(type.googleapis.com/google.ai.generativelanguage.v1beta.TaskType), "{task}"'
        )
    if request.get("title") and task != "RETRIEVAL_DOCUMENT":
        raise bad_request(
            f"* {where}.title: Title is only applicable when task_type is RETRIEVAL_DOCUMENT."
        )
    dims = request.get("outputDimensionality", request.get("output_dimensionality"))
    if dims is None:
        return config.embed_dims
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= config.embed_dims:
        raise bad_request(
            f"* {where}.output_dimensionality: must be between 1 and {config.embed_dims}."
        )
    return dims


async def _embed(
    request: web.Request, model: str, items: list[Mapping[str, Any]], where: str
) -> tuple[list[dict[str, Any]], int]:
    state = shared_state(request)
    _known(state, model, "embedContent")
    rows: list[tuple[str, int]] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]" if where == "requests" else where
        rows.append((_embed_text(item, at), _embed_dims(item, state.config, at)))
    tokens = max(sum(len(text.split()) for text, _ in rows), 1)
    charge(request, state, model, tokens)
    _fault(request, state, model)
    await delay_whole_response(request, state.config, None, 1)
    return [{"values": embedding_floats(text, dims)} for text, dims in rows], tokens


async def _embed_content(request: web.Request, model: str) -> web.StreamResponse:
    body = await json_object(request)
    named = body.get("model")
    if named is not None and named != f"models/{model}":
        raise bad_request(f"Model name in the request ({named}) does not match the URL.")
    embeddings, tokens = await _embed(request, model, [body], "embed_content_request")
    return _json({"embedding": embeddings[0], "usageMetadata": {"promptTokenCount": tokens}})


async def _batch_embed(request: web.Request, model: str) -> web.StreamResponse:
    body = await json_object(request)
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise bad_request("* BatchEmbedContentsRequest.requests: requests must not be empty.")
    if len(requests) > _BATCH_LIMIT:
        raise bad_request(
            f"* BatchEmbedContentsRequest.requests: at most {_BATCH_LIMIT} requests can be in "
            "one batch"
        )
    for i, item in enumerate(requests):
        if not isinstance(item, Mapping) or item.get("model") != f"models/{model}":
            raise bad_request(
                f"* BatchEmbedContentsRequest.requests[{i}].model: the model of each request "
                f"must be models/{model}, the model of the batch."
            )
    embeddings, tokens = await _embed(request, model, requests, "requests")
    return _json({"embeddings": embeddings, "usageMetadata": {"promptTokenCount": tokens}})


_METHODS: Final[Mapping[str, Method]] = {
    "generateContent": _generate,
    "streamGenerateContent": _stream_generate,
    "countTokens": _count_tokens,
    "embedContent": _embed_content,
    "batchEmbedContents": _batch_embed,
}


async def _model_method(request: web.Request) -> web.StreamResponse:
    model, colon, method = request.match_info["target"].partition(":")
    handler = _METHODS.get(method) if colon else None
    if handler is None:
        raise GoogleError(
            404,
            f"The requested URL {request.path} was not found on this server.",
            "NOT_FOUND",
            kind="not_found",
        )
    return await handler(request, model)


# ---------------------------------------------------------------- models


def _model_info(model: str) -> dict[str, Any]:
    embedding = "embedding" in model
    methods = (
        ["embedContent", "batchEmbedContents"]
        if embedding
        else [
            "generateContent",
            "countTokens",
        ]
    )
    info: dict[str, Any] = {
        "name": f"models/{model}",
        "version": "001",
        "displayName": model.replace("-", " ").title(),
        "description": f"{model}, served by the fleet's mock.",
        "inputTokenLimit": 1_048_576 if not embedding else 2048,
        "outputTokenLimit": 65_536 if not embedding else 1,
        "supportedGenerationMethods": methods,
    }
    if not embedding:
        info.update({"temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2})
    return info


def _page(request: web.Request) -> tuple[int, int]:
    raw_size = request.query.get("pageSize", str(_PAGE_DEFAULT))
    if not raw_size.lstrip("-").isdigit():
        raise bad_request(f"Invalid value at 'page_size' (TYPE_INT32), \"{raw_size}\"")
    size = min(int(raw_size), _PAGE_MAX) if int(raw_size) > 0 else _PAGE_DEFAULT
    token = request.query.get("pageToken", "")
    start = 0
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode())
        except ValueError:
            raise bad_request("Invalid page token.") from None
    return start, size


async def _models(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    _fault(request, state, None)
    start, size = _page(request)
    models = list(state.config.models)
    page = models[start : start + size]
    body: dict[str, Any] = {"models": [_model_info(m) for m in page]}
    if start + size < len(models):
        body["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
    return _json(body)


async def _model(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    model = request.match_info["target"]
    if ":" in model:
        raise GoogleError(
            404,
            f"The requested URL {request.path} was not found on this server.",
            "NOT_FOUND",
            kind="not_found",
        )
    _fault(request, state, model)
    if not state.knows_model(model):
        raise GoogleError(404, f"models/{model} is not found.", "NOT_FOUND", kind="not_found")
    return _json(_model_info(model))


# ---------------------------------------------------------------- app plumbing


def _authorize(request: web.Request, config: MockConfig) -> None:
    key = request.headers.get("x-goog-api-key", "").strip() or request.query.get("key", "").strip()
    if not key:
        raise missing_key_error()
    if not config.accepts(key):
        raise invalid_key_error()


def build_app() -> web.Application:
    """Gemini's routes, to be mounted under `/gemini` by `providers.mock.app.build_app`."""
    app = web.Application(
        middlewares=[error_gate(_authorize, render_error, url_error)], client_max_size=MAX_BODY
    )
    # The fleet calls v1beta; the SDK (3.x) defaults to v1, which the API also serves.
    for version in ("/v1beta", "/v1"):
        app.router.add_post(version + "/models/{target}", _model_method)
        app.router.add_get(version + "/models", _models)
        app.router.add_get(version + "/models/{target}", _model)
    return app


# The SDK appends `/v1beta/…` to its base URL itself; the fleet's adapter does not.
MOCK = MockProvider(prefix="gemini", build=build_app, sdk_path="", api_path="/v1beta")

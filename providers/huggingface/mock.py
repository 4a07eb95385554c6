"""Hugging Face's router as a mock, under `/huggingface`.

Routes (what follows the prefix):

* `POST /v1/chat/completions`: the router's OpenAI-compatible chat, answered as TGI
  writes it (`mock_wire`). A model may carry a provider or policy suffix
  (`mock-model:together`, `:fastest`, `:cheapest`); the answer names the model
  without it and says who served it in `x-inference-provider`. Requests are read
  and checked by the OpenAI mock (`providers.openai.mock_request`), answers
  composed by it (`providers.openai.mock_answers`): same text, same tool calls.
* `GET /v1/models`: the router's model list, each model with its providers.
* `POST /hf-inference/models/{model}/pipeline/feature-extraction`: HF Inference's
  embeddings, `{"inputs": str | [str], "normalize"?, "truncate"?, "prompt_name"?}` →
  a bare `[[float]]`, with TEI's `x-compute-*` headers; at most 32 inputs (TEI's
  default batch limit, a 413 beyond); `prompt_name` `query` or `document` prefixes
  the text as a Sentence Transformers prompt would, any other is a 422.
* `GET /api/whoami-v2`: the Hub's account answer for the token: a fine-grained
  token allowed to call Inference Providers. A `403` fault answers instead for a
  token without that permission (still a 200, as the Hub does).

Faults render in the router's shapes (`mock_errors`). The router has no content
filter of its own, so `filtered` faults change nothing; `interleave` mixes
parallel tool calls' fragments.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from providers.huggingface.mock_errors import (
    context_error,
    fault_error,
    flat_error,
    invalid_token,
    model_not_found,
    render_error,
    validation_error,
)
from providers.huggingface.mock_wire import completion_body, stream_answer
from providers.mock.app import (
    MAX_BODY,
    Dropped,
    MockProvider,
    MockShared,
    bearer_key,
    delay_whole_response,
    error_gate,
    shared_state,
)
from providers.mock.config import MockConfig
from providers.mock.faults import ErrorFault, Fault, MockError, StreamErrorFault
from providers.mock.text import embedding_floats
from providers.openai.mock_answers import compose
from providers.openai.mock_request import chat_params, json_object, require_model

__all__ = ["MOCK", "PROMPTS", "build_app"]

_SEPARATORS: Final = (",", ":")
_DEFAULT_PROVIDER: Final = "hf-inference"
_POLICIES: Final = frozenset({"fastest", "cheapest", "preferred"})
_MAX_BATCH: Final = 32
# The Sentence Transformers prompts every mock embedding model is configured with.
PROMPTS: Final[Mapping[str, str]] = {"query": "query: ", "document": "document: "}
_SERVED_BY: Final = web.RequestKey("served_by", str)
_STARTED: Final = web.RequestKey("started", float)
_CREATED: Final = 1_700_000_000


def _json_response(payload: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    body = json.dumps(payload, separators=_SEPARATORS, ensure_ascii=False).encode()
    return web.Response(body=body, content_type="application/json", headers=headers)


# ---------------------------------------------------------------- request gates


def _authorize(request: web.Request, config: MockConfig) -> None:
    request[_STARTED] = time.monotonic()
    token = bearer_key(request)
    if not config.accepts(token):
        raise invalid_token(token)


def _served_model(request: web.Request, state: MockShared, model: str) -> str:
    """The model without its suffix, once known; who serves it is noted for the headers."""
    repo, colon, suffix = model.partition(":")
    if colon and not suffix:
        raise validation_error(f"Invalid model id '{model}': empty provider", status=400)
    if not state.knows_model(repo):
        raise model_not_found(repo)
    request[_SERVED_BY] = _DEFAULT_PROVIDER if not colon or suffix in _POLICIES else suffix
    return repo


def _charge(request: web.Request, state: MockShared, tokens: int) -> None:
    if not state.limiter.enabled:
        return
    budget = state.limiter.take(bearer_key(request), tokens)
    if not budget.allowed:
        wait = max(1, math.ceil(budget.retry_after))
        message = "Rate limit reached. You reached the request limit; please retry later."
        raise flat_error(429, message, kind="rate_limited", headers={"retry-after": str(wait)})


def _pick_fault(request: web.Request, model: str | None) -> Fault | None:
    state = shared_state(request)
    fault = state.pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        raise fault_error(fault, model, state.config.context_window)
    return fault


# ---------------------------------------------------------------- chat


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await json_object(request)
    model = _served_model(request, state, require_model(body))
    params = chat_params(body, model)
    limit = params.max_tokens or state.config.max_tokens_default
    window = state.config.context_window
    if params.prompt_tokens + (params.max_tokens or 0) > window:
        raise context_error(window, params.prompt_tokens, params.max_tokens or 0)
    _charge(request, state, params.prompt_tokens + limit)
    fault = _pick_fault(request, model)
    answer = compose(params, state.config)
    if params.stream:
        return await stream_answer(request, state, params, answer, fault)
    if isinstance(fault, StreamErrorFault):
        # Without a stream to break, a failure mid-answer is the whole answer's.
        raise fault_error(fault.error, model, window)
    completion = completion_body(model, answer, state.config.stamp_tokens)
    try:
        await delay_whole_response(request, state.config, fault, answer.visible_tokens)
    except Dropped:
        return web.Response()  # never sent: the transport is gone
    return _json_response(completion)


async def _models(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    _pick_fault(request, None)
    return _json_response({"object": "list", "data": [_model(m) for m in state.config.models]})


def _model(model: str) -> dict[str, Any]:
    owner = model.split("/", 1)[0] if "/" in model else "mock"
    provider = {
        "provider": _DEFAULT_PROVIDER,
        "status": "live",
        "context_length": 128_000,
        "supports_tools": True,
        "supports_structured_output": True,
    }
    return {
        "id": model,
        "object": "model",
        "created": _CREATED,
        "owned_by": owner,
        "providers": [provider],
    }


# ---------------------------------------------------------------- embeddings


def _inputs(body: Mapping[str, Any]) -> list[str]:
    raw = body.get("inputs")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
        raise validation_error("`inputs` must be a string or a list of strings")
    if not inputs:
        raise flat_error(400, "`inputs` cannot be empty", kind="bad_request", error_type="Empty")
    if len(inputs) > _MAX_BATCH:
        message = f"batch size {len(inputs)} > maximum allowed batch size {_MAX_BATCH}"
        raise flat_error(413, message, kind="bad_request", error_type="Validation")
    return inputs


def _prompt(body: Mapping[str, Any]) -> str:
    name = body.get("prompt_name")
    if name is None:
        return ""
    if name not in PROMPTS:
        message = f"Prompt name `{name}` was not found in the configured prompts"
        raise flat_error(422, message, kind="bad_request", error_type="Validation")
    return PROMPTS[name]


async def _feature_extraction(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    model = request.match_info["model"]
    if not state.knows_model(model):
        raise flat_error(404, f"Model {model} does not exist", kind="not_found")
    body = await json_object(request)
    texts = [_prompt(body) + text for text in _inputs(body)]
    tokens = sum(max(len(text.split()), 1) for text in texts)
    _charge(request, state, tokens)
    fault = _pick_fault(request, model)
    try:
        await delay_whole_response(request, state.config, fault, 1)
    except Dropped:
        return web.Response()
    dims = state.config.embed_dims
    headers = {
        "x-compute-type": "gpu",
        "x-compute-tokens": str(tokens),
        "x-compute-characters": str(sum(len(t) for t in texts)),
        "x-compute-time": "0.004",
    }
    return _json_response([embedding_floats(text, dims) for text in texts], headers)


# ---------------------------------------------------------------- the Hub


async def _whoami(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    fault = state.pick_fault(request, None)
    forbidden = isinstance(fault, ErrorFault) and fault.kind == "forbidden"
    if isinstance(fault, ErrorFault) and not forbidden:
        raise fault_error(fault, None, state.config.context_window)
    permissions = ["discussion.write"] if forbidden else ["inference.serverless.write"]
    return _json_response(
        {
            "type": "user",
            "id": "64f0c0ffee0000000000mock",
            "name": "mock-user",
            "fullname": "Mock User",
            "isPro": False,
            "canPay": False,
            "orgs": [],
            "auth": {
                "type": "access_token",
                "accessToken": {
                    "displayName": "fleet",
                    "role": "fineGrained",
                    "createdAt": "2025-01-01T00:00:00.000Z",
                    "fineGrained": {
                        "canReadGatedRepos": False,
                        "global": permissions,
                        "scoped": [],
                    },
                },
            },
        }
    )


# ---------------------------------------------------------------- app plumbing


def _url_error(request: web.Request, exc: web.HTTPException) -> MockError:
    message = f"Cannot {request.method} {request.path}"
    return flat_error(exc.status, message, kind="not_found" if exc.status == 404 else "bad_request")


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("x-request-id", os.urandom(16).hex())
    started = request.get(_STARTED)
    if started is not None:
        headers.setdefault("x-total-time", str(round((time.monotonic() - started) * 1000)))
    served_by = request.get(_SERVED_BY)
    if served_by is not None:
        headers.setdefault("x-inference-provider", served_by)


def build_app() -> web.Application:
    """The router's and the Hub's routes, mounted under `/huggingface`."""
    app = web.Application(
        middlewares=[error_gate(_authorize, render_error, _url_error)], client_max_size=MAX_BODY
    )
    app.on_response_prepare.append(_add_headers)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_post(
        "/hf-inference/models/{model:.+}/pipeline/feature-extraction", _feature_extraction
    )
    app.router.add_get("/api/whoami-v2", _whoami)
    return app


MOCK = MockProvider(
    prefix="huggingface", build=build_app, sdk_path="/v1", api_path="/v1", content_filter=False
)

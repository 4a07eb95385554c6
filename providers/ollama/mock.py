"""Ollama's native API as a mock, mounted under `/ollama`.

Routes, as a server reached through ollama.com (or a proxy wanting a key) has
them: `POST /api/chat` (an NDJSON stream unless `"stream": false`),
`POST /api/embed` (and the older `POST /api/embeddings`), `GET /api/tags`,
`POST /api/show`, `GET /api/ps`, and `GET /api/version`, which alone needs no key
(the adapter's reachability check without a credential). Reproduced:

* a Bearer key (`MockConfig.api_keys`; 401 `unauthorized` otherwise);
* answers from the shared answer engine (`providers.openai.mock_answers`) in
  Ollama's shapes (`mock_wire`): tool calls whole with object arguments and no
  ids, `done_reason` `stop` after tool calls, reasoning in `message.thinking`
  when `think` is asked;
* Ollama's refusals and every fault of `providers.mock.faults` in Ollama's
  words (`mock_errors`): 404 `model "x" not found, try pulling it first` for an
  unknown model, ollama.com's usage-limit 429 for `quota`, a 429 with
  `retry-after` for throttling (and the per-key limiter), an `{"error": ...}`
  line inside a stream. Ollama has no content filter: `filtered` faults change
  nothing.
"""

from __future__ import annotations

import hashlib
import math
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
from providers.mock.text import embedding_floats
from providers.ollama.mock_errors import (
    ROUTE_NOT_FOUND,
    context_error,
    fault_error,
    model_not_found,
    rate_limit_error,
    render_error,
    unauthorized,
)
from providers.ollama.mock_request import embed_inputs, json_object, native_chat, require_model
from providers.ollama.mock_wire import Reply, chat_body, stream_reply
from providers.openai.mock_answers import compose

__all__ = ["MOCK", "VERSION", "build_app"]

VERSION: Final = "0.12.6"
_MODIFIED: Final = "2025-01-01T00:00:00Z"
_OPEN_PATH: Final = "/api/version"  # a reachability check, asked without a key


# ---------------------------------------------------------------- gates


def _authorize(request: web.Request, config: MockConfig) -> None:
    if request.path.endswith(_OPEN_PATH):
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
        raise rate_limit_error({"retry-after": str(max(1, math.ceil(budget.retry_after)))})


def _pick_fault(request: web.Request, model: str | None, *, stream: bool = False) -> Fault | None:
    fault = shared_state(request).pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        raise fault_error(fault, model)
    if isinstance(fault, StreamErrorFault) and not stream:
        # Without a stream to break, a failure mid-answer is the whole answer's.
        raise fault_error(fault.error, model)
    return fault


# ---------------------------------------------------------------- handlers


async def _chat(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await json_object(request)
    model = require_model(body)
    _require_known(state, model)
    chat = native_chat(body, model)
    params = chat.params
    if params.prompt_tokens + (params.max_tokens or 0) > state.config.context_window:
        raise context_error()
    limit = params.max_tokens or state.config.max_tokens_default
    _charge(request, state, params.prompt_tokens + limit)
    fault = _pick_fault(request, model, stream=params.stream)
    reply = Reply.of(model, compose(params, state.config), chat.think)
    if params.stream:
        return await stream_reply(request, state, reply, fault)
    try:
        await delay_whole_response(request, state.config, fault, reply.eval_count)
    except Dropped:
        return web.Response()  # never sent: the transport is gone
    return json_answer(chat_body(reply, state.config.stamp_tokens))


async def _embed_vectors(
    request: web.Request, model: str, texts: list[str], dims: int
) -> list[list[float]]:
    state = shared_state(request)
    _require_known(state, model)
    tokens = sum(max(len(t.split()), 1) for t in texts)
    _charge(request, state, tokens)
    fault = _pick_fault(request, model)
    await delay_whole_response(request, state.config, fault, 1)
    return [embedding_floats(text, dims) for text in texts]


async def _embed(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await json_object(request)
    model = require_model(body)
    texts = embed_inputs(body.get("input"))
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise MockError(400, "dimensions must be a positive integer", "bad_request")
    try:
        vectors = await _embed_vectors(request, model, texts, dims or state.config.embed_dims)
    except Dropped:
        return web.Response()
    tokens = sum(max(len(t.split()), 1) for t in texts)
    return json_answer(
        {
            "model": model,
            "embeddings": vectors,
            "total_duration": 1_000_000 + tokens * 100_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": tokens,
        }
    )


async def _embeddings(request: web.Request) -> web.StreamResponse:
    """The older single-text endpoint: `{model, prompt}` → `{embedding}`."""
    state = shared_state(request)
    body = await json_object(request)
    model = require_model(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise MockError(400, "prompt is required", "bad_request")
    try:
        vectors = await _embed_vectors(request, model, [prompt], state.config.embed_dims)
    except Dropped:
        return web.Response()
    return json_answer({"embedding": vectors[0]})


def _details() -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "8.0B",
        "quantization_level": "Q4_K_M",
    }


def _listed(model: str) -> dict[str, Any]:
    return {
        "name": model,
        "model": model,
        "modified_at": _MODIFIED,
        "size": 4_920_753_328,
        "digest": hashlib.sha256(model.encode()).hexdigest(),
        "details": _details(),
    }


async def _tags(request: web.Request) -> web.StreamResponse:
    _pick_fault(request, None)
    models = shared_state(request).config.models
    return json_answer({"models": [_listed(m) for m in models]})


async def _ps(request: web.Request) -> web.StreamResponse:
    _pick_fault(request, None)
    return json_answer({"models": []})


async def _show(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await json_object(request)
    model = require_model(body)
    _pick_fault(request, model)
    _require_known(state, model)
    embedding = "embed" in model
    return json_answer(
        {
            "modelfile": f"FROM {model}\n",
            "parameters": 'stop "<|eot_id|>"',
            "template": "{{ .Prompt }}",
            "details": _details(),
            "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
            "capabilities": ["embedding"] if embedding else ["completion", "tools"],
            "modified_at": _MODIFIED,
        }
    )


async def _version(request: web.Request) -> web.StreamResponse:
    _pick_fault(request, None)
    return json_answer({"version": VERSION})


# ---------------------------------------------------------------- app plumbing


def _url_error(request: web.Request, exc: web.HTTPException) -> MockError:
    # Ollama's router answers an unknown route (or method) with Go's plain-text 404.
    return MockError(404, "404 page not found", "not_found", kind=ROUTE_NOT_FOUND)


def build_app() -> web.Application:
    """Ollama's routes, to be mounted under `/ollama` by `providers.mock.app.build_app`."""
    app = web.Application(
        middlewares=[error_gate(_authorize, lambda error, _: render_error(error), _url_error)],
        client_max_size=MAX_BODY,
    )
    app.router.add_post("/api/chat", _chat)
    app.router.add_post("/api/embed", _embed)
    app.router.add_post("/api/embeddings", _embeddings)
    app.router.add_get("/api/tags", _tags)
    app.router.add_get("/api/ps", _ps)
    app.router.add_post("/api/show", _show)
    app.router.add_get("/api/version", _version)
    return app


# The adapter and the official SDK both take the server's root and add `/api/...`.
MOCK = MockProvider(
    prefix="ollama", build=build_app, sdk_path="", api_path="", content_filter=False
)

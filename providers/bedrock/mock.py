"""Amazon Bedrock as a mock, mounted under `/bedrock` (all three services at one base,
as boto3's `endpoint_url` and the fleet's overridden address put them).

Routes: `POST /model/{id}/converse`, `POST /model/{id}/converse-stream`
(`application/vnd.amazon.eventstream`), `POST /model/{id}/invoke` (Titan and
Cohere embedding bodies), `GET /foundation-models`, `POST /rerank`. Reproduced:

* SigV4 checked for real with botocore, or a Bedrock API key (`mock_auth`);
* Converse's request rules, answers and streams (`mock_converse`), errors and
  event-stream frames (`mock_wire`), an `x-amzn-RequestId` on every answer;
* model ids as Bedrock takes them: bare, with a cross-region prefix (`us.…`), or
  as a foundation-model or inference-profile ARN (`/` encoded as `%2F`); an
  unknown one is a 404 `ResourceNotFoundException`, an embedding or rerank model
  asked to converse a `ValidationException`;
* a prompt past `MockConfig.context_window` → `ValidationException` "Input is
  too long for requested model."; the per-key limiter's `ThrottlingException`
  (no retry hint: Bedrock gives none); unknown routes → 404
  `UnknownOperationException`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from providers.bedrock import mock_auth
from providers.bedrock.mock_converse import (
    StreamWriter,
    compose,
    parse_converse,
    response_body,
)
from providers.bedrock.mock_embed import invoke_answer, rerank_answer
from providers.bedrock.mock_wire import (
    REQUEST_ID,
    fault_error,
    json_response,
    new_request_id,
    render_error,
    validation,
)
from providers.mock.app import (
    MAX_BODY,
    Dropped,
    MockCredentials,
    MockProvider,
    MockShared,
    StreamCounter,
    delay_whole_response,
    error_gate,
    shared_state,
)
from providers.mock.config import MockConfig
from providers.mock.faults import ErrorFault, Fault, MockError, StreamErrorFault

__all__ = ["BEDROCK_MODELS", "MOCK", "build_app", "resolve_model"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Bedrock model ids the mock serves besides `MockConfig.models` and `mock-*`.
BEDROCK_MODELS: Final[dict[str, str]] = {
    "anthropic.claude-3-haiku-20240307-v1:0": "TEXT",
    "anthropic.claude-3-5-sonnet-20240620-v1:0": "TEXT",
    "amazon.nova-micro-v1:0": "TEXT",
    "amazon.titan-embed-text-v2:0": "EMBEDDING",
    "amazon.titan-embed-text-v1": "EMBEDDING",
    "cohere.embed-english-v3": "EMBEDDING",
    "cohere.embed-multilingual-v3": "EMBEDDING",
    "cohere.embed-v4:0": "EMBEDDING",
    "amazon.rerank-v1:0": "RERANK",
    "cohere.rerank-v3-5:0": "RERANK",
}
_GEO_PREFIXES: Final = ("us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.")
_STREAM_HEADERS: Final = {"Content-Type": "application/vnd.amazon.eventstream"}
_IDENTITY: Final = web.RequestKey("bedrock_identity", mock_auth.Identity)
_NOT_FOUND: Final = "Could not resolve the foundation model from the provided model identifier."


def resolve_model(model_id: str) -> str:
    """The foundation model an id, a cross-region profile or an ARN stands for."""
    if model_id.startswith("arn:"):
        parts = model_id.split(":", 5)
        resource = parts[5] if len(parts) == 6 else ""
        kind, _, model_id = resource.partition("/")
        if kind not in ("foundation-model", "inference-profile"):
            return ""
    for prefix in _GEO_PREFIXES:
        if model_id.startswith(prefix):
            return model_id.removeprefix(prefix)
    return model_id


def _known(state: MockShared, model: str) -> bool:
    return bool(model) and (state.knows_model(model) or model in BEDROCK_MODELS)


def _model(request: web.Request, state: MockShared, *, purpose: str) -> str:
    model = resolve_model(request.match_info["model_id"])
    if not _known(state, model):
        raise MockError(404, _NOT_FOUND, "ResourceNotFoundException", kind="not_found")
    kind = BEDROCK_MODELS.get(model, "ANY")
    if kind not in ("ANY", purpose):
        raise validation("The provided model doesn't support this operation.")
    return model


def _pick_fault(
    request: web.Request, state: MockShared, model: str | None, stream: bool
) -> Fault | None:
    fault = state.pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        raise fault_error(fault)
    if isinstance(fault, StreamErrorFault) and not stream:
        raise fault_error(fault.error)
    return fault


def _charge(request: web.Request, state: MockShared, tokens: int) -> None:
    if not state.limiter.enabled:
        return
    if not state.limiter.take(request[_IDENTITY].principal, tokens).allowed:
        raise MockError(
            429,
            "Too many requests, please wait before trying again.",
            "ThrottlingException",
            kind="rate_limited",
        )


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise MockError(
            400, "Unexpected character: was expecting a JSON value", "SerializationException"
        ) from None


# ---------------------------------------------------------------- handlers


async def _converse(request: web.Request, *, stream: bool) -> web.StreamResponse:
    started = time.monotonic()
    state = shared_state(request)
    model = _model(request, state, purpose="TEXT")
    req = parse_converse(await _json_body(request))
    prompt = req.prompt_tokens()
    window = state.config.context_window
    if prompt > window or prompt + (req.max_tokens or 0) > window:
        raise validation("Input is too long for requested model.")
    fault = _pick_fault(request, state, model, stream)
    answer = compose(req, state.config, fault)
    _charge(request, state, prompt + answer.output_tokens)
    if stream:
        resp = web.StreamResponse(headers=_STREAM_HEADERS)
        await resp.prepare(request)
        with StreamCounter(state.stats):
            await StreamWriter(request, resp, fault, state.config).send(answer, started)
        return resp
    try:
        await delay_whole_response(request, state.config, fault, answer.output_tokens)
    except Dropped:
        return web.Response()  # never sent: the transport is gone
    return json_response(response_body(answer, state.config, started))


async def _converse_whole(request: web.Request) -> web.StreamResponse:
    return await _converse(request, stream=False)


async def _converse_stream(request: web.Request) -> web.StreamResponse:
    return await _converse(request, stream=True)


async def _invoke(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    model = _model(request, state, purpose="EMBEDDING")
    body = await _json_body(request)
    fault = _pick_fault(request, state, model, False)
    answer = invoke_answer(model, body, state.config)
    _charge(request, state, answer.input_tokens)
    try:
        await delay_whole_response(request, state.config, fault, 1)
    except Dropped:
        return web.Response()
    headers = {
        "X-Amzn-Bedrock-Input-Token-Count": str(answer.input_tokens),
        "X-Amzn-Bedrock-Invocation-Latency": "1",
    }
    return json_response(answer.payload, headers)


async def _rerank(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    body = await _json_body(request)
    answer = rerank_answer(body, lambda model: _known(state, model), resolve_model)
    _pick_fault(request, state, answer.model, False)
    _charge(request, state, answer.input_tokens)
    return json_response(answer.payload)


async def _foundation_models(request: web.Request) -> web.StreamResponse:
    state = shared_state(request)
    _pick_fault(request, state, None, False)
    by_provider = request.query.get("byProvider", "").lower()
    by_output = request.query.get("byOutputModality", "").upper()
    region = request[_IDENTITY].region
    summaries = []
    for model, output in {**dict.fromkeys(state.config.models, "TEXT"), **BEDROCK_MODELS}.items():
        provider = model.split(".", 1)[0] if "." in model else "mock"
        if by_provider and provider != by_provider:
            continue
        if by_output and output != by_output:
            continue
        summaries.append(
            {
                "modelArn": f"arn:aws:bedrock:{region}::foundation-model/{model}",
                "modelId": model,
                "modelName": model.split(".", 1)[-1],
                "providerName": provider.title(),
                "inputModalities": ["TEXT"],
                "outputModalities": [output if output != "RERANK" else "TEXT"],
                "responseStreamingSupported": output == "TEXT",
                "customizationsSupported": [],
                "inferenceTypesSupported": ["ON_DEMAND"],
                "modelLifecycle": {"status": "ACTIVE"},
            }
        )
    return json_response({"modelSummaries": summaries})


# ---------------------------------------------------------------- app plumbing


def _admit(request: web.Request, config: MockConfig) -> None:
    request[REQUEST_ID] = new_request_id()


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """SigV4 needs the body, so it is checked here rather than in the gate's `authorize`."""
    body = await request.read()
    request[_IDENTITY] = mock_auth.authenticate(request, body, shared_state(request).config)
    return await handler(request)


def _url_error(request: web.Request, exc: web.HTTPException) -> MockError:
    return MockError(404, "Unknown operation", "UnknownOperationException", kind="not_found")


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("x-amzn-RequestId", request.get(REQUEST_ID) or new_request_id())


def build_app() -> web.Application:
    """Bedrock's routes, to be mounted under `/bedrock` by `providers.mock.app`."""
    app = web.Application(
        middlewares=[error_gate(_admit, render_error, _url_error), _authenticate],
        client_max_size=MAX_BODY,
    )
    app.on_response_prepare.append(_add_headers)
    # `.+`: an inference-profile ARN's `%2F` is decoded to `/` before routes match.
    app.router.add_post("/model/{model_id:.+}/converse", _converse_whole)
    app.router.add_post("/model/{model_id:.+}/converse-stream", _converse_stream)
    app.router.add_post("/model/{model_id:.+}/invoke", _invoke)
    app.router.add_post("/rerank", _rerank)
    app.router.add_get("/foundation-models", _foundation_models)
    return app


MOCK = MockProvider(
    prefix="bedrock",
    build=build_app,
    sdk_path="",
    api_path="",
    credentials=MockCredentials(
        good={
            "access_key_id": mock_auth.ACCESS_KEY_ID,
            "secret_access_key": mock_auth.SECRET_ACCESS_KEY,
            "region": mock_auth.MOCK_REGION,
        },
        wrong={
            "access_key_id": mock_auth.ACCESS_KEY_ID,
            "secret_access_key": mock_auth.WRONG_SECRET,
            "region": mock_auth.MOCK_REGION,
        },
        canaries=(mock_auth.SECRET_ACCESS_KEY, mock_auth.WRONG_SECRET),
    ),
    retry_hints=False,
)

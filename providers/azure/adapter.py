"""Adapter for Azure OpenAI (and Azure AI Foundry's OpenAI-compatible v1 API).

Azure speaks OpenAI's Chat Completions dialect, so requests are built and
answers read by `providers.openai` (`chat_body`, its parsers); what is Azure's
is where a call goes (`target`), how it signs in (`auth`), its error codes and
content filter verdicts (`errors`, `parse`).

Credential fields:

* `endpoint`: the resource, e.g. `https://myres.openai.azure.com` (or
  `https://myres.services.ai.azure.com`; a trailing `/openai` or `/openai/v1` is
  understood). `base_url` means the same; without either, the operator's
  address for the provider (FLEET_PROVIDER_URLS) is used.
* `api_version`: a dated version (default `2024-10-21`; the `azure-foundry`
  spec defaults to `v1`), or `v1` for `/openai/v1/chat/completions` with the
  deployment as the body's `model` and no `api-version` query.
* `deployment` (optional): the deployment to call; by default the job's
  `model` is the deployment name.
* Sign-in, one of: `api_key` (sent as the `api-key` header), or Entra ID client
  credentials `tenant_id`, `client_id`, `client_secret`, with optional
  `token_url` (default: the operator's FLEET_PROVIDER_TOKEN_URLS entry, else
  `https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token`) and
  `scope` (default `https://cognitiveservices.azure.com/.default`).

What differs from OpenAI itself:

* The answer's token limit goes as `max_completion_tokens` from api-version
  2024-09-01 on and with v1 (o-series deployments refuse `max_tokens`, and a
  deployment name says nothing of its model), as `max_tokens` before.
* `EmbedRequest.input_type` goes as Azure's `input_type`.
* A 404 says which deployment and api-version were asked for: it is Azure's
  answer to a wrong deployment, a wrong api-version and a wrong endpoint path alike.
* `verify` lists the resource's models; a refused key, or client credentials the
  token endpoint refuses, is `ok=False`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx

from contracts.errors import FleetError, Forbidden, InternalError, NotFound, Unauthorized
from providers.azure.auth import AzureAuth, secret_fields
from providers.azure.errors import ERRORS, reworded
from providers.azure.parse import AzureStreamState, parse_azure_chat
from providers.azure.target import DEFAULT_API_VERSION, V1, Route, route_for
from providers.core.api import ApiClient, sse_chat_stream
from providers.core.spec import ProviderContext
from providers.core.types import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    Secret,
    StreamEvent,
    VerifyResult,
)
from providers.openai.adapter import chat_body
from providers.openai.parse import parse_embeddings

__all__ = ["AzureFoundry", "AzureOpenAI"]


class _Call(Secret):
    """One call's credential as `ApiClient` sees it: only the secret values (what
    messages are scrubbed of), with the call's route, deployment and sign-in."""

    __slots__ = ("auth", "deployment", "route")

    def __init__(
        self, secrets: Mapping[str, str], route: Route, deployment: str | None, auth: httpx.Auth
    ) -> None:
        super().__init__(secrets)
        self.route = route
        self.deployment = deployment
        self.auth = auth


def _call_auth(secret: Secret) -> httpx.Auth:
    if not isinstance(secret, _Call):
        raise InternalError("azure: request built without its route")
    return secret.auth


class _AzureApi(ApiClient):
    """`ApiClient` with the call's endpoint, and 404s that say what was looked for."""

    def url(self, secret: Secret, path: str) -> str:
        if not isinstance(secret, _Call):
            raise InternalError(f"{self.name}: request built without its route")
        return secret.route.endpoint + path

    def error(self, response: httpx.Response, secret: Secret) -> FleetError:
        error = super().error(response, secret)
        if isinstance(error, NotFound) and isinstance(secret, _Call):
            hint = secret.route.not_found_hint(secret.deployment)
            return reworded(error, f"{error.message} {hint}")
        return error


class AzureOpenAI:
    """Azure OpenAI chat, streaming, tools, embeddings and credential checks.

    See the module docstring for the credential fields.

        adapter = AzureOpenAI(ProviderContext("azure", pool, None))
        await adapter.chat(request, Secret({"endpoint": "https://myres.openai.azure.com",
                                            "api_key": "…"}))
    """

    default_api_version = DEFAULT_API_VERSION

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._endpoint = context.base_url
        self._auth = AzureAuth(context.name, context.http, context.token_url)
        self._api = _AzureApi(context.name, context.http, None, _call_auth, ERRORS)

    def _call(self, secret: Secret, model: str | None) -> _Call:
        route = route_for(self.name, secret, self._endpoint, self.default_api_version)
        deployment = None if model is None else route.deployment_for(self.name, model)
        secrets = secret_fields(secret)
        auth = self._auth.for_credential(secret, Secret(secrets))
        return _Call(secrets, route, deployment, auth)

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        call = self._call(secret, req.model)
        body = self._chat_body(call, req, stream=False)
        path = call.route.chat_path(_deployment(call))
        payload = await self._api.json("POST", path, call, body)
        if payload.get("error"):
            raise ERRORS.from_payload(self.name, payload["error"], call, context="error body")
        return parse_azure_chat(self.name, payload)

    def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncGenerator[StreamEvent, None]:
        try:
            call = self._call(secret, req.model)
        except FleetError as exc:
            # Raised where the caller consumes the stream, like every other stream error.
            return _failing(exc)
        return sse_chat_stream(
            self._api,
            call.route.chat_path(_deployment(call)),
            call,
            lambda: self._chat_body(call, req, stream=True),
            AzureStreamState(self.name, call),
            end_marker="[DONE]",
        )

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        call = self._call(secret, req.model)
        deployment = _deployment(call)
        body: dict[str, Any] = {"input": req.inputs, "encoding_format": "base64"}
        if call.route.v1:
            body["model"] = deployment
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        if req.input_type is not None:
            body["input_type"] = req.input_type
        payload = await self._api.json("POST", call.route.embeddings_path(deployment), call, body)
        return parse_embeddings(self.name, payload, expected=len(req.inputs))

    async def verify(self, secret: Secret) -> VerifyResult:
        call = self._call(secret, None)
        try:
            return await self._api.verify(call.route.models_path(), call, _models_visible)
        except (Unauthorized, Forbidden) as exc:
            # Only the token endpoint gets here (the API's own 401/403 are answers):
            # client credentials it refuses are a wrong credential too.
            return VerifyResult(ok=False, detail=exc.message)

    def _chat_body(self, call: _Call, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
        body = chat_body(self.name, req, stream=stream)
        if call.route.v1:
            body["model"] = _deployment(call)
        else:
            del body["model"]  # the path names the deployment
        if call.route.completion_tokens and "max_tokens" in body:
            body["max_completion_tokens"] = body.pop("max_tokens")
        return body


class AzureFoundry(AzureOpenAI):
    """Azure AI Foundry's OpenAI-compatible API: the v1 form unless told otherwise."""

    default_api_version = V1


def _deployment(call: _Call) -> str:
    if call.deployment is None:
        raise InternalError("azure: a model call without its deployment")
    return call.deployment


def _models_visible(payload: dict[str, Any]) -> str:
    data = payload.get("data")
    return f"{len(data) if isinstance(data, list) else 0} models visible"


async def _failing(error: FleetError) -> AsyncGenerator[StreamEvent, None]:
    raise error
    yield  # pragma: no cover  (makes this an async generator)

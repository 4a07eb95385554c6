"""Adapter for Amazon Bedrock: Converse, ConverseStream, InvokeModel (embeddings),
Rerank and ListFoundationModels (credential check).

Credential fields: `access_key_id`, `secret_access_key`, optional `session_token`
(temporary credentials), `region` (required) — signed with SigV4 by botocore
(`sigv4`) — or `api_key`, a Bedrock API key sent as `Authorization: Bearer`
(with `region` still naming where to go); optional `base_url` (see `endpoints`
for how the three hosts follow from it). Request and answer mapping: `mapping`;
event streams: `stream`; embeddings: `embed`; rerank: `rerank`; errors: `errors`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx

from contracts.errors import ProviderUnavailable
from providers.bedrock import embed as embedding
from providers.bedrock import rerank as reranking
from providers.bedrock.endpoints import Endpoints, is_known_region, model_path, resolve
from providers.bedrock.errors import ERRORS
from providers.bedrock.mapping import converse_body, parse_converse
from providers.bedrock.sigv4 import SigV4Auth, credentials_of
from providers.bedrock.stream import ConverseStreamState, event_stream_chat
from providers.core.api import ApiClient, decode_object
from providers.core.auth import HeaderAuth, header_value
from providers.core.spec import ProviderContext
from providers.core.types import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    RerankRequest,
    RerankResult,
    Secret,
    StreamEvent,
    VerifyResult,
)

__all__ = ["ERRORS", "Bedrock"]

_TOKEN_COUNT = "x-amzn-bedrock-input-token-count"


class _AwsApi(ApiClient):
    """`ApiClient` given absolute URLs: one credential's requests go to three hosts."""

    def url(self, secret: Secret, path: str) -> str:
        return path


class Bedrock:
    """Chat, stream, tools, embeddings, rerank and verify over Bedrock's APIs."""

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._base_url = context.base_url
        self._api = _AwsApi(context.name, context.http, context.base_url, self._auth, ERRORS)

    def _auth(self, secret: Secret) -> httpx.Auth:
        api_key = (secret.get("api_key") or "").strip()
        if api_key:
            token = header_value(self.name, "api_key", api_key)
            return HeaderAuth({"Authorization": f"Bearer {token}"})
        region = self._endpoints(secret).region
        return SigV4Auth(credentials_of(self.name, secret), region)

    def _endpoints(self, secret: Secret) -> Endpoints:
        return resolve(self.name, self._base_url, secret)

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        url = self._endpoints(secret).runtime + model_path(req.model, "converse")
        payload = await self._api.json("POST", url, secret, converse_body(self.name, req))
        return parse_converse(self.name, payload)

    def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncGenerator[StreamEvent, None]:
        def prepare() -> tuple[str, dict[str, Any]]:
            url = self._endpoints(secret).runtime + model_path(req.model, "converse-stream")
            return url, converse_body(self.name, req)

        return event_stream_chat(self._api, prepare, secret, ConverseStreamState(self.name, secret))

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        url = self._endpoints(secret).runtime + model_path(req.model, "invoke")

        async def invoke(body: dict[str, Any]) -> embedding.InvokeAnswer:
            response = await self._api.send("POST", url, secret, body)
            if not 200 <= response.status_code < 300:
                raise self._api.error(response, secret)
            count = response.headers.get(_TOKEN_COUNT, "")
            return embedding.InvokeAnswer(
                decode_object(self.name, response.content),
                int(count) if count.isdigit() else None,
            )

        return await embedding.embed(self.name, req, invoke)

    async def rerank(self, req: RerankRequest, secret: Secret) -> RerankResult:
        endpoints = self._endpoints(secret)

        async def post(body: dict[str, Any]) -> dict[str, Any]:
            return await self._api.json("POST", endpoints.agent + "/rerank", secret, body)

        return await reranking.rerank(self.name, req, endpoints.region, post)

    async def verify(self, secret: Secret) -> VerifyResult:
        endpoints = self._endpoints(secret)
        try:
            result = await self._api.verify(
                endpoints.control + "/foundation-models",
                secret,
                lambda payload: _models_visible(payload, endpoints.region),
            )
        except ProviderUnavailable:
            if endpoints.control.endswith(".amazonaws.com") and not is_known_region(
                endpoints.region
            ):
                return VerifyResult(
                    ok=False,
                    detail=f"{self.name}: {endpoints.region!r} is not an AWS region "
                    f"({endpoints.control} is unreachable)",
                )
            raise
        if not result.ok and "region" in result.detail:
            # AWS's "Credential should be scoped to a valid region" never names it.
            reason = result.detail.removeprefix(f"{self.name}: ")
            detail = f"{self.name}: region {endpoints.region!r} refused: {reason}"
            return VerifyResult(ok=False, detail=detail)
        return result


def _models_visible(payload: dict[str, Any], region: str) -> str:
    models = payload.get("modelSummaries")
    return f"{len(models) if isinstance(models, list) else 0} foundation models in {region}"

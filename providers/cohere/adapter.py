"""Adapter for Cohere's API v2: chat (`/v2/chat`, whole or streamed), embeddings
(`/v2/embed`), rerank (`/v2/rerank`) and the key check (`/v1/check-api-key`).

The request mapping is `mapping`, the reading of answers and streams `parse`,
embeddings `embed`, rerank `rerank`, the error vocabulary `errors`; each says
what it chose where Cohere differs from the fleet's terms. The key travels as
`Authorization: Bearer`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx

from providers.cohere import embed as embeddings
from providers.cohere.errors import ERRORS
from providers.cohere.mapping import chat_body
from providers.cohere.parse import StreamState, parse_chat_response
from providers.cohere.rerank import parse_rerank, rerank_body
from providers.core.api import ApiClient, decode_object, sse_chat_stream
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

__all__ = ["Cohere"]

# Statuses that mean "this key is refused", an answer for `verify` rather than a failure.
_REFUSED = (401, 403, 498)


class Cohere:
    """Chat, stream, tools, embed, rerank and verify over Cohere's API v2.

    Credential fields: `api_key` (sent as a Bearer token), optional `base_url`
    (replaces the operator's address, e.g. a private deployment).
    """

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._api = ApiClient(context.name, context.http, context.base_url, self._auth, ERRORS)

    def _auth(self, secret: Secret) -> httpx.Auth:
        key = secret.api_key
        if not key.strip():
            return HeaderAuth({})
        return HeaderAuth({"Authorization": f"Bearer {header_value(self.name, 'api_key', key)}"})

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        body = chat_body(self.name, req, stream=False)
        payload = await self._api.json("POST", "/v2/chat", secret, body)
        return parse_chat_response(self.name, payload, secret)

    def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncGenerator[StreamEvent, None]:
        return sse_chat_stream(
            self._api,
            "/v2/chat",
            secret,
            lambda: chat_body(self.name, req, stream=True),
            StreamState(self.name, secret),
            end_marker="message-end",
            raw_json=True,
        )

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        async def post(body: dict[str, Any]) -> dict[str, Any]:
            return await self._api.json("POST", "/v2/embed", secret, body)

        return await embeddings.embed(self.name, req, post)

    async def rerank(self, req: RerankRequest, secret: Secret) -> RerankResult:
        payload = await self._api.json("POST", "/v2/rerank", secret, rerank_body(self.name, req))
        return parse_rerank(self.name, payload)

    async def verify(self, secret: Secret) -> VerifyResult:
        """`POST /v1/check-api-key`: `{"valid": true, …}`; a refused key, or
        `valid: false`, is `ok=False`; any other failure is raised."""
        response = await self._api.send("POST", "/v1/check-api-key", secret)
        if response.status_code == 200:
            payload = decode_object(self.name, response.content)
            if payload.get("valid") is True:
                return VerifyResult(ok=True, detail=_describe(payload))
            return VerifyResult(ok=False, detail=f"{self.name}: Cohere says the key is not valid")
        error = self._api.error(response, secret)
        if response.status_code in _REFUSED:
            return VerifyResult(ok=False, detail=error.message)
        raise error


def _describe(payload: dict[str, Any]) -> str:
    organization = payload.get("organization_id")
    # An organisation id names the account, not the key: safe to show.
    return f"valid key of organization {organization}" if organization else "valid key"

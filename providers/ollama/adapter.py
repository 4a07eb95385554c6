"""Adapter for Ollama's native API (`/api/chat`, `/api/embed`, `/api/version`, `/api/tags`).

A local Ollama takes no credential; ollama.com (and proxies in front of a
server) take an API key as a Bearer token, sent when the credential has one.
Chat streams are NDJSON (`providers.ollama.stream`), request mapping and answer
reading are in `providers.ollama.mapping`, errors in `providers.ollama.errors`.

Embeddings: `POST /api/embed` with every input in one request (Ollama documents
no batch limit), `dimensions` when asked; `input_type` has no Ollama
counterpart (models wanting a prefix such as `search_query:` get it from the
caller's text). Usage is `prompt_eval_count`.

Verify: without an API key, `GET /api/version` says whether the server answers;
with one, `GET /api/tags` says whether the key is taken (401 → `ok=False`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx

from contracts.errors import InternalError
from contracts.frames import Usage
from providers.core.api import ApiClient
from providers.core.auth import HeaderAuth, header_value
from providers.core.packing import pack_floats, pack_rows
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
from providers.ollama.errors import ERRORS
from providers.ollama.mapping import chat_body, parse_chat_response, usage_of
from providers.ollama.stream import OllamaStreamState, ndjson_chat_stream

__all__ = ["Ollama"]


class Ollama:
    """Chat, stream, tools, embeddings and a reachability/credential check.

    Credential fields: `api_key` (optional; a Bearer token for ollama.com),
    `base_url` (optional; replaces the operator's address).
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
        payload = await self._api.json("POST", "/api/chat", secret, body)
        if payload.get("error"):
            raise ERRORS.from_payload(self.name, payload, secret, context="error body")
        return parse_chat_response(self.name, payload)

    def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncGenerator[StreamEvent, None]:
        return ndjson_chat_stream(
            self._api,
            "/api/chat",
            secret,
            lambda: chat_body(self.name, req, stream=True),
            OllamaStreamState(self.name, secret),
        )

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        body: dict[str, Any] = {"model": req.model, "input": req.inputs}
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        payload = await self._api.json("POST", "/api/embed", secret, body)
        vectors = payload.get("embeddings")
        if not isinstance(vectors, list):
            raise InternalError(f"{self.name}: expected {len(req.inputs)} embeddings, got 0")
        rows = [pack_floats(self.name, v if isinstance(v, list) else []) for v in vectors]
        tokens = usage_of(payload).input_tokens
        usage = Usage(input_tokens=tokens, total_tokens=tokens)
        return pack_rows(self.name, rows, expected=len(req.inputs), usage=usage)

    async def verify(self, secret: Secret) -> VerifyResult:
        if secret.api_key.strip():
            return await self._api.verify("/api/tags", secret, _models_listed)
        return await self._api.verify("/api/version", secret, _version)


def _models_listed(payload: dict[str, Any]) -> str:
    models = payload.get("models")
    return f"{len(models) if isinstance(models, list) else 0} models available"


def _version(payload: dict[str, Any]) -> str:
    version = payload.get("version")
    return f"Ollama {version}" if isinstance(version, str) else "Ollama answers"

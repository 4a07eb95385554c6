"""Adapter for vLLM's OpenAI-compatible server: chat, streams, tools, embeddings, rerank.

Chat, embeddings and the credential check are OpenAI's dialect, served by the
OpenAI adapter (`providers.openai.adapter.OpenAICompatible`) with `max_tokens`
under its old name, which every vLLM version knows. vLLM takes
`response_format` (`json_object`, `json_schema`) itself, so the fleet needs
none of its older `guided_json` / newer `structured_outputs` extras; its
sampling extras (`top_k`, `min_p`, `repetition_penalty`) have no `model.*` key.

What vLLM adds (checked against shared/reference/transcripts/openai/
vllm-stream-tool-call): tool-call headers without `arguments` and `stop_reason`
beside `finish_reason`, both read by the OpenAI stream parser; errors named by
exception class with the status as a number (`{"error": {"type":
"BadRequestError", "code": 400}}`), and from servers before 0.10 the same
fields flat with `"object": "error"`, which this adapter's stream parser also
takes as an error (the OpenAI one would skip it as a chunk without choices).
A wrong key on a server started with `--api-key` is a 401 `{"error":
"Unauthorized"}`. Rerank: `providers.vllm.rerank`.

Credential fields: `api_key` (optional, a Bearer token), `base_url`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx

from providers.core.api import ApiClient, sse_chat_stream
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
from providers.openai.adapter import OpenAICompatible, chat_body
from providers.openai.errors import ERRORS
from providers.openai.parse import StreamState
from providers.vllm.rerank import parse_rerank, rerank_body

__all__ = ["Vllm", "VllmStreamState"]


class VllmStreamState(StreamState):
    """OpenAI's stream reading, plus the flat error objects of older vLLM servers."""

    __slots__ = ()

    def _chunk(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if chunk.get("object") == "error":
            raise ERRORS.from_payload(self._provider, chunk, self._secret)
        return super()._chunk(chunk)


class Vllm:
    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._openai = OpenAICompatible(context)
        self._api = ApiClient(context.name, context.http, context.base_url, self._auth, ERRORS)

    def _auth(self, secret: Secret) -> httpx.Auth:
        key = secret.api_key
        if not key.strip():
            return HeaderAuth({})
        return HeaderAuth({"Authorization": f"Bearer {header_value(self.name, 'api_key', key)}"})

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        return await self._openai.chat(req, secret)

    def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncGenerator[StreamEvent, None]:
        return sse_chat_stream(
            self._api,
            "/chat/completions",
            secret,
            lambda: chat_body(self.name, req, stream=True),
            VllmStreamState(self.name, secret),
            end_marker="[DONE]",
        )

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        return await self._openai.embed(req, secret)

    async def rerank(self, req: RerankRequest, secret: Secret) -> RerankResult:
        payload = await self._api.json("POST", "/rerank", secret, rerank_body(req))
        return parse_rerank(self.name, payload)

    async def verify(self, secret: Secret) -> VerifyResult:
        return await self._openai.verify(secret)

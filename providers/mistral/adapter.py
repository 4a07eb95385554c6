"""Adapter for Mistral's API (La Plateforme): chat, streaming, tools, embeddings.

Mistral speaks OpenAI's dialect with differences in every part: the request
(`mapping`), the answers and streams (`parse`), embeddings limits (`embed`) and
errors (`errors`). Each module's docstring says what differs and what is done.

Credential fields:

* `api_key`, sent as `Authorization: Bearer`;
* `base_url` (optional), replacing the operator's address;
* `safe_prompt` (optional, `true`/`false`, default false): whether Mistral
  prepends its safety system prompt to every conversation on this key. It is a
  policy of the key's owner, and jobs have no option for it, so it lives with the
  key; it is no secret and is never used to scrub messages.

`verify` lists the models the key may use (`GET /models`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Final

import httpx

from contracts.errors import BadRequest, FleetError
from providers.core.api import ApiClient, sse_chat_stream
from providers.core.auth import HeaderAuth, header_value
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
from providers.mistral.embed import embed_all
from providers.mistral.errors import ERRORS
from providers.mistral.mapping import chat_body
from providers.mistral.parse import MistralStreamState, parse_mistral_chat

__all__ = ["Mistral"]

# Credential fields whose values are secrets (what messages are scrubbed of); the
# base URL is kept with them because `ApiClient` reads it from the same object.
_CALL_FIELDS: Final = ("api_key", "base_url")
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off", ""})


class Mistral:
    """Mistral chat, streaming, tools, embeddings and credential checks.

    adapter = Mistral(ProviderContext("mistral", pool, "https://api.mistral.ai/v1"))
    result = await adapter.chat(request, Secret({"api_key": "…"}))
    """

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._api = ApiClient(context.name, context.http, context.base_url, self._auth, ERRORS)

    def _auth(self, secret: Secret) -> httpx.Auth:
        key = (secret.api_key or "").strip()
        if not key:
            return HeaderAuth({})  # Mistral answers 401, in its own words
        return HeaderAuth({"Authorization": f"Bearer {header_value(self.name, 'api_key', key)}"})

    def _call(self, secret: Secret) -> tuple[Secret, bool]:
        """The credential as requests use it, and its `safe_prompt` setting."""
        fields = {name: value for name in _CALL_FIELDS if (value := secret.get(name))}
        raw = (secret.get("safe_prompt") or "").strip().lower()
        if raw not in _TRUE | _FALSE:
            raise BadRequest(f"{self.name}: credential field 'safe_prompt' must be true or false")
        return Secret(fields), raw in _TRUE

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        call, safe_prompt = self._call(secret)
        body = chat_body(self.name, req, stream=False, safe_prompt=safe_prompt)
        payload = await self._api.json("POST", "/chat/completions", call, body)
        return parse_mistral_chat(self.name, payload)

    def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncGenerator[StreamEvent, None]:
        try:
            call, safe_prompt = self._call(secret)
        except FleetError as exc:
            # Raised where the caller consumes the stream, like every other stream error.
            return _failing(exc)
        return sse_chat_stream(
            self._api,
            "/chat/completions",
            call,
            lambda: chat_body(self.name, req, stream=True, safe_prompt=safe_prompt),
            MistralStreamState(self.name, call),
            end_marker="[DONE]",
        )

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        call, _ = self._call(secret)

        async def send(body: dict[str, Any]) -> dict[str, Any]:
            return await self._api.json("POST", "/embeddings", call, body)

        return await embed_all(self.name, req, send)

    async def verify(self, secret: Secret) -> VerifyResult:
        call, _ = self._call(secret)
        return await self._api.verify("/models", call, _models_visible)


def _models_visible(payload: dict[str, Any]) -> str:
    data = payload.get("data")
    return f"{len(data) if isinstance(data, list) else 0} models visible"


async def _failing(error: FleetError) -> AsyncGenerator[StreamEvent, None]:
    raise error
    yield  # pragma: no cover  (makes this an async generator)

"""Adapter for Hugging Face Inference Providers through the router.

Chat and streams are OpenAI's dialect (`providers.openai` builds the bodies and
reads the answers); embeddings go to the HF Inference feature-extraction
pipeline (`embed`), and credential checks to the Hub's whoami (`whoami`). Where
each goes is `endpoints`; the router's error shapes are `errors`.

Credential fields: `api_key` (an `hf_…` token, sent as a Bearer token), optional
`base_url` (replaces the operator's address; see `endpoints` for what else is
derived from it) and `bill_to` (an organisation to bill, sent as `X-HF-Bill-To`).

Model options: everything OpenAI's mapping sends except what only OpenAI's own
API means and no router upstream reads: `metadata` and `user` (labels for
OpenAI's dashboards, which do not change the answer) are left out; a
`service_tier` other than `auto`/`default` is refused, as the router has no
tiers to honour it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any, Final

import httpx

from contracts.errors import BadRequest, ProviderUnavailable
from providers.core.api import ApiClient, decode_object, sse_chat_stream
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
from providers.huggingface.embed import FeatureAnswer, embed
from providers.huggingface.endpoints import pipeline_model, resolve, router_model
from providers.huggingface.errors import ERRORS
from providers.huggingface.parse import HuggingFaceStreamState, parse_chat
from providers.huggingface.whoami import verdict
from providers.openai.adapter import chat_body

__all__ = ["HuggingFace"]

_OPENAI_ONLY: Final = ("metadata", "user")
_NO_TIER: Final = frozenset({"auto", "default"})
_COMPUTE_TOKENS: Final = "x-compute-tokens"


class _Api(ApiClient):
    """`ApiClient` taking whole URLs: three hosts serve one token (`endpoints`)."""

    def url(self, secret: Secret, path: str) -> str:
        return path


class HuggingFace:
    """Hugging Face router chat, streaming, tools, embeddings and credential checks.

    See the module docstring for the credential fields.

        adapter = HuggingFace(ProviderContext("huggingface", pool, None))
        await adapter.chat(ChatRequest("openai/gpt-oss-20b:fastest", messages),
                           Secret({"api_key": "hf_…"}))
    """

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._base_url = context.base_url
        self._api = _Api(context.name, context.http, None, self._auth, ERRORS)

    def _auth(self, secret: Secret) -> httpx.Auth:
        headers: dict[str, str] = {}
        token = secret.api_key
        if token.strip():
            headers["Authorization"] = "Bearer " + header_value(self.name, "api_key", token)
        bill_to = secret.get("bill_to") or ""
        if bill_to.strip():
            headers["X-HF-Bill-To"] = header_value(self.name, "bill_to", bill_to)
        return HeaderAuth(headers)

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        url = resolve(self._base_url, secret).chat
        payload = await self._api.json("POST", url, secret, self._chat_body(req, stream=False))
        return parse_chat(self.name, payload, secret)

    def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncGenerator[StreamEvent, None]:
        return sse_chat_stream(
            self._api,
            resolve(self._base_url, secret).chat,
            secret,
            lambda: self._chat_body(req, stream=True),
            HuggingFaceStreamState(self.name, secret),
            end_marker="[DONE]",
        )

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        model = pipeline_model(self.name, req.model)
        url = resolve(self._base_url, secret).feature_extraction(model)

        async def post(body: dict[str, Any]) -> FeatureAnswer:
            response = await self._api.send("POST", url, secret, body)
            if not 200 <= response.status_code < 300:
                raise self._api.error(response, secret)
            return FeatureAnswer(_decode(self.name, response.content), _tokens(response))

        return await embed(self.name, req, post)

    async def verify(self, secret: Secret) -> VerifyResult:
        response = await self._api.send("GET", resolve(self._base_url, secret).whoami, secret)
        if response.status_code == 200:
            return verdict(decode_object(self.name, response.content))
        error = self._api.error(response, secret)
        if response.status_code in (401, 403):
            return VerifyResult(ok=False, detail=error.message)
        raise error

    def _chat_body(self, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
        router_model(self.name, req.model)
        tier = req.options.service_tier
        if tier is not None and tier not in _NO_TIER:
            raise BadRequest(f"{self.name}: the router has no service tiers ({tier!r} asked)")
        body = chat_body(self.name, req, stream=stream)
        for name in (*_OPENAI_ONLY, "service_tier"):
            body.pop(name, None)
        return body


def _decode(provider: str, content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        # A 2xx with a broken body is usually a proxy or a cut connection.
        raise ProviderUnavailable(f"{provider}: response is not valid JSON") from None


def _tokens(response: httpx.Response) -> int | None:
    value = response.headers.get(_COMPUTE_TOKENS, "").strip()
    return int(value) if value.isdigit() else None

"""Adapter for Vertex AI's Gemini models: Gemini's wire under Google Cloud URLs.

The bodies, answers, streams and error vocabulary are Gemini's (`providers.gemini`:
`mapping`, `parse`, `errors`); what is Vertex's own is the credential (a service
account, `account`), its OAuth2 tokens (`auth`), the URLs (`urls`), embeddings by
`:predict` (`embed`) and the credential check.

* Chat: `POST …/publishers/google/models/{m}:generateContent`; streams:
  `:streamGenerateContent?alt=sse` (SSE, no end marker: the body's end ends it).
* Verify: `POST …/models/{VERIFY_MODEL}:countTokens` for a one-word prompt. It
  costs nothing and needs what chat needs: a token for the key (a refused key is
  `ok=False`), and access to Vertex AI in the credential's project and location
  (refused, that is a `Forbidden` or `NotFound` naming them, raised).
* Messages name the project, location and account where they help, never the
  private key (errors are scrubbed of it).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Final, TypeVar

import httpx

from contracts.errors import BadRequest, FleetError, Forbidden, NotFound, Unauthorized
from contracts.frames import Usage
from providers.core.api import ApiClient, sse_chat_stream
from providers.core.errors import ErrorTable
from providers.core.fanout import in_order
from providers.core.http import HttpClientPool
from providers.core.packing import pack_rows
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
from providers.gemini.errors import ERRORS
from providers.gemini.mapping import generate_body
from providers.gemini.parse import GenerateStream, parse_generate_response
from providers.vertex.account import ServiceAccount, open_account
from providers.vertex.auth import ServiceAccountTokens
from providers.vertex.embed import SINGLES_IN_FLIGHT, batches, parse_predictions, predict_body
from providers.vertex.urls import base_url, model_path

__all__ = ["VERIFY_MODEL", "Vertex"]

# The model `verify` counts tokens with: generally available in every Gemini region.
VERIFY_MODEL: Final = "gemini-2.5-flash"
_VERIFY_BODY: Final = {"contents": [{"role": "user", "parts": [{"text": "ping"}]}]}
# Embedding requests of one job in flight at once, for models taking many inputs each.
_BATCHES_IN_FLIGHT: Final = 4

_R = TypeVar("_R")


class _VertexApi(ApiClient):
    """`ApiClient` whose address follows each credential's location, and whose error
    messages are scrubbed of the private key only (the project may be named)."""

    def __init__(
        self,
        name: str,
        http: HttpClientPool,
        configured: str | None,
        auth: Callable[[Secret], httpx.Auth],
        errors: ErrorTable,
    ) -> None:
        super().__init__(name, http, configured, auth, errors)
        self._configured = configured

    def url(self, secret: Secret, path: str) -> str:
        return base_url(self._configured, open_account(self.name, secret).location) + path

    def error(self, response: httpx.Response, secret: Secret) -> FleetError:
        redact = open_account(self.name, secret).redact
        return self.errors.from_response(
            self.name, response.status_code, response.headers, response.content, redact
        )


class Vertex:
    """Chat, stream, tools, embeddings and verify on Vertex AI.

    Credential fields: a service-account key file's (`private_key`, `client_email`,
    `private_key_id`, `project_id`, `token_uri`, optional `quota_project_id`), plus
    optional `location` (default `us-central1`) and `project` (default `project_id`).
    """

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._tokens = ServiceAccountTokens(context.name, context.http, context.token_url)
        self._api = _VertexApi(context.name, context.http, context.base_url, self._auth, ERRORS)

    def _auth(self, secret: Secret) -> httpx.Auth:
        return self._tokens.auth(open_account(self.name, secret))

    def _path(self, account: ServiceAccount, model: str, method: str) -> str:
        return model_path(self.name, account, model, method)

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        account = open_account(self.name, secret)
        path = self._path(account, req.model, "generateContent")
        payload = await self._api.json("POST", path, secret, generate_body(self.name, req))
        return parse_generate_response(self.name, payload, account.redact)

    def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncGenerator[StreamEvent, None]:
        try:
            account = open_account(self.name, secret)
            path = self._path(account, req.model, "streamGenerateContent") + "?alt=sse"
        except FleetError as exc:
            # Raised where the stream is read, like every other failure of a stream.
            return _failing(exc)
        return sse_chat_stream(
            self._api,
            path,
            secret,
            lambda: generate_body(self.name, req),
            GenerateStream(self.name, account.redact),
            end_marker=None,
            raw_json=True,  # Google writes a mid-stream error as bare JSON between events
        )

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        account = open_account(self.name, secret)
        if not req.inputs:
            raise BadRequest(f"{self.name}: nothing to embed")
        path = self._path(account, req.model, "predict")
        ranges = batches(req.model, len(req.inputs))

        async def predict(inputs: range) -> tuple[list[bytes], int]:
            body = predict_body(self.name, req, req.inputs[inputs.start : inputs.stop])
            payload = await self._api.json("POST", path, secret, body)
            return parse_predictions(self.name, payload, len(inputs))

        if len(ranges) == 1:
            answers = [await predict(ranges[0])]
        else:
            width = SINGLES_IN_FLIGHT if len(ranges[0]) == 1 else _BATCHES_IN_FLIGHT
            answers = await in_order(predict, ranges, limit=width)
        rows = [row for batch_rows, _ in answers for row in batch_rows]
        tokens = sum(count for _, count in answers)
        usage = Usage(input_tokens=tokens, total_tokens=tokens)
        return pack_rows(self.name, rows, expected=len(req.inputs), usage=usage)

    async def verify(self, secret: Secret) -> VerifyResult:
        account = open_account(self.name, secret)
        path = self._path(account, VERIFY_MODEL, "countTokens")
        try:
            response = await self._api.send("POST", path, secret, _VERIFY_BODY)
        except Unauthorized as exc:  # the token endpoint refused the key
            return VerifyResult(ok=False, detail=exc.message)
        where = f"project {account.project!r}, location {account.location!r}"
        if response.status_code == 200:
            return VerifyResult(
                ok=True,
                detail=f"service account {account.client_email} may use Vertex AI in {where}",
            )
        error = self._api.error(response, secret)
        if isinstance(error, Unauthorized):  # a fresh token refused too
            return VerifyResult(ok=False, detail=error.message)
        if isinstance(error, Forbidden | NotFound):
            # The key is good (it got a token): the place it was sent to is not.
            detail = error.message.removeprefix(f"{self.name}: ")
            raise type(error)(
                f"{self.name}: Vertex AI in {where} refused {account.client_email}: {detail}",
                provider_status=error.provider_status,
                provider_request_id=error.provider_request_id,
            )
        raise error


async def _failing(error: FleetError) -> AsyncGenerator[StreamEvent, None]:
    raise error
    yield  # pragma: no cover  (makes this an async generator)

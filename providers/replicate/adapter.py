"""Adapter for Replicate's predictions API (`api.replicate.com/v1`).

A chat is a prediction: created on the model's route (`owner/name`) or on
`/predictions` with a version id (`owner/name:version`, or the bare id), with the
conversation as the model's `input` (`mapping`); then waited for, with
`Prefer: wait` and polling (`predictions`), or streamed from its stream URL
(`stream`). Predictions we stop following before they finish are cancelled.
Errors: RFC 7807 problem bodies and failed predictions (`errors`). The credential
check is `GET /account`.

Credential fields: `api_key` (an `r8_…` API token, sent as `Authorization: Bearer`)
and optional `base_url`. No tools (Replicate has no chat schema to carry them) and
no embeddings: each embedding model there takes and returns its own shapes
(`text`/`texts`/`inputs`, a list or a JSON string), so there is no general call to
map `EmbedRequest` onto.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx

from providers.core.auth import HeaderAuth, header_value
from providers.core.spec import ProviderContext
from providers.core.types import (
    ChatRequest,
    ChatResult,
    Secret,
    StreamEvent,
    VerifyResult,
)
from providers.replicate.errors import ERRORS
from providers.replicate.mapping import Target, prediction_input, target_of
from providers.replicate.predictions import TERMINAL, PredictionApi, Predictions, prefer_wait
from providers.replicate.stream import prediction_stream, settle

__all__ = ["ERRORS", "Replicate"]


class Replicate:
    """Chat, stream and verify over Replicate's predictions API."""

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._api = PredictionApi(context.name, context.http, context.base_url, self._auth, ERRORS)
        self._predictions = Predictions(self._api, prefer_wait(context.http.settings.read_timeout))

    def _auth(self, secret: Secret) -> httpx.Auth:
        token = secret.api_key
        if not token.strip():
            return HeaderAuth({})  # answered 401 by the API, in its words
        return HeaderAuth({"Authorization": f"Bearer {header_value(self.name, 'api_key', token)}"})

    def _prepare(self, req: ChatRequest) -> tuple[Target, dict[str, Any]]:
        return target_of(self.name, req.model), prediction_input(self.name, req)

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        target, model_input = self._prepare(req)
        prediction = await self._predictions.create(target, model_input, secret, stream=False)
        if prediction.get("status") not in TERMINAL:
            try:
                prediction = await self._predictions.until_finished(prediction, secret)
            except BaseException as exc:
                prediction_id = self._predictions.id_of(prediction)
                await self._predictions.cancel_quietly(prediction_id, secret, exc)
                raise
        return settle(self.name, prediction, secret, req.options.max_tokens)

    def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncGenerator[StreamEvent, None]:
        return prediction_stream(
            self._api,
            self._predictions,
            lambda: self._prepare(req),
            secret,
            req.options.max_tokens,
        )

    async def verify(self, secret: Secret) -> VerifyResult:
        return await self._api.verify("/account", secret, _account)


def _account(payload: dict[str, Any]) -> str:
    username = payload.get("username")
    kind = payload.get("type")
    label = f" ({kind})" if isinstance(kind, str) and kind else ""
    return f"account {username if isinstance(username, str) else '?'}{label}"

"""Adapter for the Gemini API (Google AI Studio, `generativelanguage.googleapis.com`).

Chat is `POST /models/{model}:generateContent`, streams are
`:streamGenerateContent?alt=sse` (no end marker: see `parse`), embeddings
`:embedContent` for one input and `:batchEmbedContents` for more, the credential
check `GET /models?pageSize=1`. The key travels in `x-goog-api-key`. Model names
are taken with or without their `models/` prefix and URL-quoted.

Request mapping, answer parsing and the error table are shared with Vertex AI,
which speaks the same body under other URLs (`mapping`, `parse`, `errors`).

Embeddings: `EmbedRequest.input_type` becomes `taskType` (`query` is
RETRIEVAL_QUERY, `document` RETRIEVAL_DOCUMENT; Gemini's own names pass as they
are), `dimensions` `outputDimensionality`; more than 100 inputs go out as several
batches, in order. Usage is what the API reports in `usageMetadata.promptTokenCount`
when it does, summed over batches; when it does not, the counts stay 0 (not
reported) rather than being estimated.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Final
from urllib.parse import quote

import httpx

from contracts.errors import BadRequest, Forbidden, InternalError, Unauthorized
from contracts.frames import Usage
from providers.core.api import ApiClient, decode_object, sse_chat_stream
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
from providers.gemini.errors import ERRORS
from providers.gemini.mapping import generate_body, model_path
from providers.gemini.parse import GenerateStream, parse_generate_response

__all__ = ["BATCH_LIMIT", "TASK_TYPES", "Gemini", "task_type"]

# Requests one `batchEmbedContents` call may carry.
BATCH_LIMIT: Final = 100
TASK_TYPES: Final = frozenset(
    {
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    }
)
_INPUT_TYPES: Final = {"query": "RETRIEVAL_QUERY", "document": "RETRIEVAL_DOCUMENT"}


def task_type(provider: str, input_type: str | None) -> str | None:
    """Gemini's `taskType` for the fleet's `input_type`; unknown types are refused."""
    if input_type is None:
        return None
    name = _INPUT_TYPES.get(input_type.lower(), input_type.upper())
    if name not in TASK_TYPES:
        raise BadRequest(f"{provider}: input_type {input_type!r} has no Gemini task type")
    return name


class Gemini:
    """Chat, stream, tools, embeddings and verify over the Gemini API.

    Credential fields: `api_key` (sent as `x-goog-api-key`), optional `base_url`.
    """

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._api = ApiClient(context.name, context.http, context.base_url, self._auth, ERRORS)

    def _auth(self, secret: Secret) -> httpx.Auth:
        headers: dict[str, str] = {}
        if secret.api_key.strip():
            headers["x-goog-api-key"] = header_value(self.name, "api_key", secret.api_key)
        return HeaderAuth(headers)

    def _path(self, model: str, method: str) -> str:
        if not model.strip():
            raise BadRequest(f"{self.name}: model name is empty")
        return "/" + quote(model_path(model), safe="/") + ":" + method

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        path = self._path(req.model, "generateContent")
        payload = await self._api.json("POST", path, secret, generate_body(self.name, req))
        return parse_generate_response(self.name, payload, secret)

    def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncGenerator[StreamEvent, None]:
        return sse_chat_stream(
            self._api,
            self._path(req.model, "streamGenerateContent") + "?alt=sse",
            secret,
            lambda: generate_body(self.name, req),
            GenerateStream(self.name, secret),
            end_marker=None,
            # Google writes a mid-stream error as bare JSON between the events.
            raw_json=True,
        )

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        options: dict[str, Any] = {}
        task = task_type(self.name, req.input_type)
        if task is not None:
            options["taskType"] = task
        if req.dimensions is not None:
            options["outputDimensionality"] = req.dimensions
        rows: list[bytes] = []
        tokens = 0
        if len(req.inputs) == 1:
            body = {"content": {"parts": [{"text": req.inputs[0]}]}, **options}
            payload = await self._api.json(
                "POST", self._path(req.model, "embedContent"), secret, body
            )
            rows.append(self._vector(payload.get("embedding")))
            tokens += _prompt_tokens(payload)
        else:
            name = model_path(req.model)
            path = self._path(req.model, "batchEmbedContents")
            for start in range(0, len(req.inputs), BATCH_LIMIT):
                batch = req.inputs[start : start + BATCH_LIMIT]
                requests = [
                    {"model": name, "content": {"parts": [{"text": text}]}, **options}
                    for text in batch
                ]
                payload = await self._api.json("POST", path, secret, {"requests": requests})
                embeddings = payload.get("embeddings")
                if not isinstance(embeddings, list) or len(embeddings) != len(batch):
                    got = len(embeddings) if isinstance(embeddings, list) else 0
                    raise InternalError(f"{self.name}: expected {len(batch)} embeddings, got {got}")
                rows.extend(self._vector(e) for e in embeddings)
                tokens += _prompt_tokens(payload)
        usage = Usage(input_tokens=tokens, total_tokens=tokens)
        return pack_rows(self.name, rows, expected=len(req.inputs), usage=usage)

    def _vector(self, embedding: Any) -> bytes:
        values = embedding.get("values") if isinstance(embedding, dict) else None
        if not isinstance(values, list):
            raise InternalError(f"{self.name}: embedding missing from response")
        return pack_floats(self.name, values)

    async def verify(self, secret: Secret) -> VerifyResult:
        # Not ApiClient.verify: Gemini refuses a bad key with a 400 (API_KEY_INVALID),
        # which is as much an answer as a 401 or 403.
        response = await self._api.send("GET", "/models", secret, params={"pageSize": "1"})
        if response.status_code == 200:
            return VerifyResult(
                ok=True, detail=_models_visible(decode_object(self.name, response.content))
            )
        error = self._api.error(response, secret)
        if isinstance(error, Unauthorized | Forbidden):
            return VerifyResult(ok=False, detail=error.message)
        raise error


def _prompt_tokens(payload: dict[str, Any]) -> int:
    usage = payload.get("usageMetadata")
    count = usage.get("promptTokenCount") if isinstance(usage, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def _models_visible(payload: dict[str, Any]) -> str:
    models = payload.get("models")
    more = "+" if payload.get("nextPageToken") else ""  # the list is paged
    return f"{len(models) if isinstance(models, list) else 0}{more} models visible"

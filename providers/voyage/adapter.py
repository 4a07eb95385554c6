"""Voyage AI: embeddings (`POST /embeddings`), rerank (`POST /rerank`), a key check.

* Embeddings are asked for as float32 in base64 (`output_dtype: float`,
  `encoding_format: base64`, what Voyage's own SDK asks for), so vectors are
  copied, not parsed; `truncation: true` (Voyage's default, said out loud) cuts an
  input past the model's context instead of failing the job. `dimensions` is
  `output_dimension` (Voyage refuses a size the model lacks).
* The fleet's `input_type` `query`/`document` (or Cohere's `search_query`/
  `search_document`) is Voyage's; `classification`, `clustering` and none at all
  are Voyage's `null`, the mode Voyage documents for anything but retrieval.
  Anything else is refused rather than dropped.
* A job past Voyage's per-request limits is sent as several requests, one after
  the other (`limits`); rows come back in input order and usage is their sum.
  A rerank split over several requests asks each for `top_k` and keeps the best
  `top_n` of them all: a reranker scores each document against the query alone,
  so the split changes no score.
* `verify` embeds one word with the cheapest model (Voyage has no endpoint that
  only checks a key); a 401, or a 403 for the caller's address, is `ok=False`.
"""

from __future__ import annotations

from typing import Any, Final

import httpx

from contracts.errors import BadRequest, InternalError
from contracts.frames import RerankItem, Usage
from providers.core.api import ApiClient, decode_object
from providers.core.auth import HeaderAuth, header_value
from providers.core.packing import pack_rows, vector_bytes
from providers.core.spec import ProviderContext
from providers.core.types import (
    EmbedRequest,
    EmbedResult,
    RerankRequest,
    RerankResult,
    Secret,
    VerifyResult,
)
from providers.voyage.errors import ERRORS, error_from_response
from providers.voyage.limits import (
    embed_batches,
    embed_token_limit,
    rerank_batches,
    rerank_token_limit,
)

__all__ = ["VERIFY_MODEL", "Voyage", "input_type"]

# The cheapest embedding model, for the key check.
VERIFY_MODEL: Final = "voyage-3.5-lite"
_INPUT_TYPES: Final[dict[str, str | None]] = {
    "query": "query",
    "search_query": "query",
    "document": "document",
    "search_document": "document",
    "classification": None,
    "clustering": None,
}


def input_type(provider: str, value: str | None) -> str | None:
    """Voyage's `input_type` for the fleet's."""
    if value is None:
        return None
    try:
        return _INPUT_TYPES[value]
    except KeyError:
        known = ", ".join(sorted(_INPUT_TYPES))
        raise BadRequest(
            f"{provider}: unsupported input_type {value!r} (Voyage takes {known})"
        ) from None


class Voyage:
    """Adapter for Voyage AI (embed, rerank, verify).

    Credential fields: `api_key` (a Bearer token), optional `base_url`.
    """

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._api = ApiClient(context.name, context.http, context.base_url, self._auth, ERRORS)

    def _auth(self, secret: Secret) -> httpx.Auth:
        key = header_value(self.name, "api_key", secret.api_key)
        if not key:
            raise BadRequest(f"{self.name}: the credential has no api_key")
        return HeaderAuth({"Authorization": f"Bearer {key}"})

    async def _post(self, path: str, secret: Secret, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._api.send("POST", path, secret, body)
        if not 200 <= response.status_code < 300:
            raise error_from_response(self.name, response, secret)
        return decode_object(self.name, response.content)

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        if not req.inputs:
            raise BadRequest(f"{self.name}: nothing to embed")
        base: dict[str, Any] = {
            "model": req.model,
            "truncation": True,
            "output_dtype": "float",
            "encoding_format": "base64",
        }
        kind = input_type(self.name, req.input_type)
        if kind is not None:
            base["input_type"] = kind
        if req.dimensions is not None:
            base["output_dimension"] = req.dimensions
        rows: list[bytes] = []
        tokens = 0
        for batch in embed_batches(req.inputs, embed_token_limit(req.model)):
            payload = await self._post(
                "/embeddings", secret, {"input": req.inputs[batch.start : batch.stop], **base}
            )
            rows.extend(_vectors(self.name, payload, len(batch)))
            tokens += _total_tokens(payload)
        usage = Usage(input_tokens=tokens, total_tokens=tokens)
        return pack_rows(self.name, rows, expected=len(req.inputs), usage=usage)

    async def rerank(self, req: RerankRequest, secret: Secret) -> RerankResult:
        if not req.documents:
            raise BadRequest(f"{self.name}: nothing to rerank")
        base: dict[str, Any] = {
            "query": req.query,
            "model": req.model,
            "return_documents": False,
            "truncation": True,
        }
        items: list[RerankItem] = []
        tokens = 0
        batches = rerank_batches(req.query, req.documents, rerank_token_limit(req.model))
        for batch in batches:
            body = {**base, "documents": req.documents[batch.start : batch.stop]}
            if req.top_n is not None:
                body["top_k"] = min(req.top_n, len(batch))
            payload = await self._post("/rerank", secret, body)
            items.extend(_ranking(self.name, payload, batch))
            tokens += _total_tokens(payload)
        if len(batches) > 1:
            items.sort(key=lambda item: (-item.score, item.index))
            if req.top_n is not None:
                items = items[: req.top_n]
        return RerankResult(items=items, usage=Usage(input_tokens=tokens, total_tokens=tokens))

    async def verify(self, secret: Secret) -> VerifyResult:
        body = {"input": ["ping"], "model": VERIFY_MODEL, "truncation": True}
        response = await self._api.send("POST", "/embeddings", secret, body)
        if response.status_code == 200:
            decode_object(self.name, response.content)
            return VerifyResult(ok=True, detail=f"key accepted ({VERIFY_MODEL} embedded a word)")
        error = error_from_response(self.name, response, secret)
        if response.status_code in (401, 403):
            return VerifyResult(ok=False, detail=error.message)
        raise error


# -- answers ------------------------------------------------------------------------


def _vectors(provider: str, payload: dict[str, Any], expected: int) -> list[bytes]:
    data = payload.get("data")
    if not isinstance(data, list) or len(data) != expected:
        count = len(data) if isinstance(data, list) else 0
        raise InternalError(f"{provider}: expected {expected} embeddings, got {count}")
    rows: list[bytes | None] = [None] * expected
    for position, item in enumerate(data):
        index = item.get("index", position) if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < expected or rows[index] is not None:
            raise InternalError(f"{provider}: embedding with a bad or repeated index")
        rows[index] = vector_bytes(provider, item.get("embedding"))
    return [row for row in rows if row is not None]


def _ranking(provider: str, payload: dict[str, Any], batch: range) -> list[RerankItem]:
    data = payload.get("data")
    if not isinstance(data, list):
        raise InternalError(f"{provider}: rerank answer has no data")
    items = []
    for result in data:
        index = result.get("index") if isinstance(result, dict) else None
        score = result.get("relevance_score") if isinstance(result, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(batch):
            raise InternalError(f"{provider}: rerank result with a bad index")
        if not isinstance(score, int | float) or isinstance(score, bool):
            raise InternalError(f"{provider}: rerank result without a relevance_score")
        items.append(RerankItem(index=batch.start + index, score=float(score)))
    return items


def _total_tokens(payload: dict[str, Any]) -> int:
    # Vectors or a ranking are worth more than their bill: a missing count is 0.
    usage = payload.get("usage")
    tokens = usage.get("total_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else 0

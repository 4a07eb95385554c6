"""Embeddings through InvokeModel (`POST /model/{id}/invoke`), whose body is the model's own.

* Cohere on Bedrock (`cohere.embed-*`): `{texts (≤96 a call), input_type,
  embedding_types: ["float"], output_dimension?}` → `embeddings` (`{float: […]}`,
  or a bare list from servers that ignore `embedding_types`). The fleet's
  `input_type` `query`/`document` becomes `search_query`/`search_document`
  (the default); `classification` and `clustering` pass through. Only Embed v4
  takes `output_dimension`.
* Titan text (`amazon.titan-embed-*`) and every other model id (the mock's
  `mock-*` models speak Titan's body): one text a call, `{inputText,
  dimensions?, normalize: true}` (Titan v1 takes `inputText` alone), fanned out
  with bounded concurrency and put back in input order; usage is the sum of
  `inputTextTokenCount`. Titan has no `input_type`: it embeds queries and
  documents alike, so the hint is not sent.

Usage comes from the body where the model reports it, else from the
`X-Amzn-Bedrock-Input-Token-Count` header every InvokeModel answer carries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from contracts.errors import BadRequest, InternalError
from contracts.frames import Usage
from providers.core.fanout import in_order
from providers.core.packing import pack_floats, pack_rows
from providers.core.types import EmbedRequest, EmbedResult

__all__ = ["COHERE_BATCH", "FAN_OUT", "Invoke", "InvokeAnswer", "embed"]

COHERE_BATCH: Final = 96
# Concurrent InvokeModel calls per embedding job (Titan takes one text a call).
FAN_OUT: Final = 8
_COHERE_INPUT_TYPES: Final[Mapping[str, str]] = {
    "query": "search_query",
    "document": "search_document",
    "search_query": "search_query",
    "search_document": "search_document",
    "classification": "classification",
    "clustering": "clustering",
}


@dataclass(frozen=True, slots=True)
class InvokeAnswer:
    payload: dict[str, Any]
    input_tokens: int | None  # from the X-Amzn-Bedrock-Input-Token-Count header


Invoke = Callable[[dict[str, Any]], Awaitable[InvokeAnswer]]


async def embed(provider: str, req: EmbedRequest, invoke: Invoke) -> EmbedResult:
    """`req` embedded through `invoke` (one InvokeModel call per body)."""
    if not req.inputs:
        raise BadRequest(f"{provider}: nothing to embed")
    model = req.model.rsplit("/", 1)[-1]  # an ARN's last part names the model
    if "cohere.embed-" in model:
        batches = _cohere_bodies(provider, req, model)
        answers = await in_order(invoke, batches, limit=FAN_OUT)
        rows: list[bytes] = []
        tokens = 0
        for batch, answer in zip(batches, answers, strict=True):
            vectors = _cohere_vectors(provider, answer.payload, len(batch["texts"]))
            rows.extend(pack_floats(provider, v) for v in vectors)
            tokens += _cohere_tokens(answer) or 0
    else:
        bodies = [_titan_body(provider, req, model, text) for text in req.inputs]
        answers = await in_order(invoke, bodies, limit=FAN_OUT)
        rows = [pack_floats(provider, _titan_vector(provider, a.payload)) for a in answers]
        tokens = sum(_titan_tokens(a) or 0 for a in answers)
    usage = Usage(input_tokens=tokens, total_tokens=tokens)
    return pack_rows(provider, rows, expected=len(req.inputs), usage=usage)


# -- Titan ----------------------------------------------------------------------------


def _titan_v1(model: str) -> bool:
    return "titan-embed-text-v1" in model or "titan-embed-g1" in model


def _titan_body(provider: str, req: EmbedRequest, model: str, text: str) -> dict[str, Any]:
    if _titan_v1(model):
        if req.dimensions is not None:
            raise BadRequest(f"{provider}: {model} has a fixed size; dimensions is not supported")
        return {"inputText": text}
    body: dict[str, Any] = {"inputText": text, "normalize": True}
    if req.dimensions is not None:
        body["dimensions"] = req.dimensions
    return body


def _titan_vector(provider: str, payload: Mapping[str, Any]) -> Any:
    vector = payload.get("embedding")
    if not isinstance(vector, list):
        by_type = payload.get("embeddingsByType")
        vector = by_type.get("float") if isinstance(by_type, dict) else None
    if not isinstance(vector, list):
        raise InternalError(f"{provider}: InvokeModel answer has no embedding")
    return vector


def _titan_tokens(answer: InvokeAnswer) -> int | None:
    count = answer.payload.get("inputTextTokenCount")
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    return answer.input_tokens


# -- Cohere ---------------------------------------------------------------------------


def _cohere_bodies(provider: str, req: EmbedRequest, model: str) -> list[dict[str, Any]]:
    input_type = _COHERE_INPUT_TYPES.get(req.input_type or "document")
    if input_type is None:
        raise BadRequest(f"{provider}: unsupported input_type {req.input_type!r} for {model}")
    base: dict[str, Any] = {"input_type": input_type, "embedding_types": ["float"]}
    if req.dimensions is not None:
        if "embed-v4" not in model:
            raise BadRequest(f"{provider}: {model} has a fixed size; dimensions is not supported")
        base["output_dimension"] = req.dimensions
    return [
        {"texts": req.inputs[i : i + COHERE_BATCH], **base}
        for i in range(0, len(req.inputs), COHERE_BATCH)
    ]


def _cohere_vectors(provider: str, payload: Mapping[str, Any], expected: int) -> list[Any]:
    embeddings = payload.get("embeddings")
    if isinstance(embeddings, dict):
        embeddings = embeddings.get("float")
    if not isinstance(embeddings, list) or len(embeddings) != expected:
        raise InternalError(f"{provider}: InvokeModel answer has no float embeddings")
    return embeddings


def _cohere_tokens(answer: InvokeAnswer) -> int | None:
    meta = answer.payload.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, dict) else None
    count = billed.get("input_tokens") if isinstance(billed, dict) else None
    if isinstance(count, int) and not isinstance(count, bool):
        return count
    return answer.input_tokens

"""Embeddings through `POST /v2/embed`, 96 texts a request at most.

* More texts are split into batches sent a few at a time (`FAN_OUT`) and put back
  in input order; the first failure cancels the rest and is raised.
* `input_type` is required by every v3+ model: the fleet's `query` and `document`
  are `search_query` and `search_document`, Cohere's own names (`classification`,
  `clustering`, `image`, `search_*`) pass through, anything else is `BadRequest`.
  Unset, it is `search_document`: what is embedded without saying is most often
  stored to be searched, and a query embedded as a document still matches.
* `embedding_types: ["float"]` (the v2 API wants the types named); `dimensions`
  is `output_dimension` (Embed v4 takes 256, 512, 1024 or 1536).
* Usage is `meta.billed_units.input_tokens` summed over the batches (or
  `meta.tokens.input_tokens` where billed units are missing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from contracts.errors import BadRequest, InternalError
from contracts.frames import Usage
from providers.core.fanout import in_order
from providers.core.packing import pack_floats, pack_rows
from providers.core.types import EmbedRequest, EmbedResult

__all__ = ["BATCH", "FAN_OUT", "embed", "embed_bodies"]

BATCH: Final = 96
# Batches of one job in flight at once: quick for large jobs without taking a
# key's whole per-minute budget at a stroke.
FAN_OUT: Final = 4
DEFAULT_INPUT_TYPE: Final = "search_document"
_INPUT_TYPES: Final[Mapping[str, str]] = {
    "query": "search_query",
    "document": "search_document",
    "search_query": "search_query",
    "search_document": "search_document",
    "classification": "classification",
    "clustering": "clustering",
    "image": "image",
}

Post = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def embed_bodies(provider: str, req: EmbedRequest) -> list[dict[str, Any]]:
    """One request body per batch of at most `BATCH` texts, in input order."""
    if not req.inputs:
        raise BadRequest(f"{provider}: nothing to embed")
    wanted = req.input_type or DEFAULT_INPUT_TYPE
    input_type = _INPUT_TYPES.get(wanted.strip().lower())
    if input_type is None:
        known = ", ".join(sorted(_INPUT_TYPES))
        raise BadRequest(f"{provider}: input_type {wanted!r} is not one of {known}")
    head: dict[str, Any] = {
        "model": req.model,
        "input_type": input_type,
        "embedding_types": ["float"],
    }
    if req.dimensions is not None:
        head["output_dimension"] = req.dimensions
    return [
        {**head, "texts": req.inputs[start : start + BATCH]}
        for start in range(0, len(req.inputs), BATCH)
    ]


async def embed(provider: str, req: EmbedRequest, post: Post) -> EmbedResult:
    bodies = embed_bodies(provider, req)
    answers = await in_order(post, bodies, limit=FAN_OUT)
    rows: list[bytes] = []
    tokens = 0
    for body, answer in zip(bodies, answers, strict=True):
        vectors = _vectors(provider, answer, len(body["texts"]))
        rows.extend(pack_floats(provider, vector) for vector in vectors)
        tokens += _input_tokens(answer)
    usage = Usage(input_tokens=tokens, total_tokens=tokens)
    return pack_rows(provider, rows, expected=len(req.inputs), usage=usage)


def _vectors(provider: str, payload: Mapping[str, Any], expected: int) -> list[Any]:
    embeddings = payload.get("embeddings")
    # `{"float": [[…]]}` as asked; a bare list is the untyped v1 answer.
    vectors = embeddings.get("float") if isinstance(embeddings, Mapping) else embeddings
    if not isinstance(vectors, list) or not all(isinstance(v, list) for v in vectors):
        raise InternalError(f"{provider}: embed answer has no float embeddings")
    if len(vectors) != expected:
        raise InternalError(f"{provider}: expected {expected} embeddings, got {len(vectors)}")
    return vectors


def _input_tokens(payload: Mapping[str, Any]) -> int:
    meta = payload.get("meta")
    if not isinstance(meta, Mapping):
        return 0
    for group in ("billed_units", "tokens"):
        counts = meta.get(group)
        value = counts.get("input_tokens") if isinstance(counts, Mapping) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return 0

"""Embeddings through the HF Inference feature-extraction pipeline.

`POST {root}/hf-inference/models/{model}/pipeline/feature-extraction` with
`{"inputs": [text, …], "prompt_name"?}` answers a bare JSON array, one entry per
input:

* a vector (`[float]`): what sentence-embedding models (Sentence Transformers, TEI)
  answer, already pooled;
* a matrix (`[[float]]`, one row per token): what a plain transformer answers
  (`feature-extraction` without a pooling layer). Its sentence vector is the mean of
  the token rows: the pooling most sentence-embedding models are trained with. A
  model trained for CLS pooling is better served by its Sentence Transformers
  version, which the Hub answers pooled;
* either of those wrapped in a batch dimension of one (`[[[float]]]`), as the
  transformers pipeline writes a single input's output.

Requests carry at most `BATCH` texts (TEI's default `--max-client-batch-size`, which
HF Inference runs on), `FAN_OUT` of them at a time; rows come back in input order.

Options: `EmbedRequest.input_type` is sent as `prompt_name`, the name of a prompt in
the model's Sentence Transformers configuration (`query`, `document`, `passage`, …:
the model defines them; one it lacks is the server's 4xx, not silently ignored).
`dimensions` is refused: the pipeline has no such parameter, and cutting vectors
client-side is right only for models trained for it.

Usage is the sum of TEI's `x-compute-tokens` headers; where a batch lacks it, its
per-token answer's row count, else nothing (the router reports no other).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from contracts.errors import BadRequest, InternalError
from contracts.frames import Usage
from providers.core.fanout import in_order
from providers.core.packing import pack_floats, pack_rows
from providers.core.types import EmbedRequest, EmbedResult

__all__ = ["BATCH", "FAN_OUT", "FeatureAnswer", "Post", "embed"]

BATCH: Final = 32
FAN_OUT: Final = 4


@dataclass(frozen=True, slots=True)
class FeatureAnswer:
    payload: Any  # the decoded JSON array
    tokens: int | None  # the `x-compute-tokens` header, when sent


Post = Callable[[dict[str, Any]], Awaitable[FeatureAnswer]]


async def embed(provider: str, req: EmbedRequest, post: Post) -> EmbedResult:
    """`req` embedded through `post` (one pipeline call per body)."""
    if not req.inputs:
        raise BadRequest(f"{provider}: nothing to embed")
    if req.dimensions is not None:
        raise BadRequest(
            f"{provider}: the feature-extraction pipeline has no dimensions parameter; "
            "the model's own size is what it answers"
        )
    extra: dict[str, Any] = {} if req.input_type is None else {"prompt_name": req.input_type}
    batches = [req.inputs[i : i + BATCH] for i in range(0, len(req.inputs), BATCH)]
    answers = await in_order(post, [{"inputs": batch, **extra} for batch in batches], limit=FAN_OUT)
    rows: list[bytes] = []
    tokens = 0
    for batch, answer in zip(batches, answers, strict=True):
        vectors, token_rows = _sentence_vectors(provider, answer.payload, len(batch))
        rows.extend(pack_floats(provider, v) for v in vectors)
        tokens += answer.tokens if answer.tokens is not None else token_rows
    usage = Usage(input_tokens=tokens, total_tokens=tokens)
    return pack_rows(provider, rows, expected=len(req.inputs), usage=usage)


def _sentence_vectors(provider: str, payload: Any, expected: int) -> tuple[list[Any], int]:
    """One vector per input, and how many token rows were pooled to make them."""
    if expected == 1 and _depth(payload) == 1:
        payload = [payload]  # a lone input answered as a bare vector
    if not isinstance(payload, list) or len(payload) != expected:
        got = len(payload) if isinstance(payload, list) else 0
        raise InternalError(f"{provider}: expected {expected} embeddings, got {got}")
    vectors: list[Any] = []
    pooled = 0
    for item in payload:
        while _depth(item) > 2 and len(item) == 1:
            item = item[0]  # the pipeline's batch dimension of one
        depth = _depth(item)
        if depth == 1:
            vectors.append(item)
        elif depth == 2 and item:
            vectors.append(_mean(provider, item))
            pooled += len(item)
        else:
            raise InternalError(f"{provider}: feature-extraction answer is not a vector")
    return vectors, pooled


def _depth(value: Any) -> int:
    """How deeply lists nest at the start of `value` (a number is 0)."""
    depth = 0
    while isinstance(value, list):
        depth += 1
        if not value:
            break
        value = value[0]
    return depth


def _mean(provider: str, tokens: list[Any]) -> list[float]:
    width = len(tokens[0]) if isinstance(tokens[0], list) else 0
    if not width or any(not isinstance(t, list) or len(t) != width for t in tokens):
        raise InternalError(f"{provider}: token embeddings have inconsistent dimensions")
    try:
        return [math.fsum(column) / len(tokens) for column in zip(*tokens, strict=True)]
    except TypeError:
        raise InternalError(f"{provider}: embedding holds non-numbers") from None

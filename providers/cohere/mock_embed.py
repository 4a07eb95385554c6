"""The Cohere mock's embeddings and rankings, from the shared engines.

Vectors are `providers.mock.text.embedding_floats` (equal texts embed equally,
in every dialect's mock), `output_dimension` long or the model's size, given in
every `embedding_types` asked for: `float`, `int8`/`uint8` (each value scaled
to the type's range), `binary`/`ubinary` (sign bits packed eight to a byte, as
Cohere documents) and `base64` (the float32 values, little-endian). Rankings are
`providers.mock.rerank.rank`, billed as Cohere bills: one search unit per 100
documents.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable, Mapping
from typing import Any, Final

from providers.cohere.mock_catalog import CohereModel
from providers.cohere.mock_errors import cohere_id
from providers.cohere.mock_request import EmbedParams, RerankParams, invalid
from providers.mock.rerank import rank, token_count
from providers.mock.text import embedding_floats

__all__ = ["embed_answer", "embed_tokens", "rerank_answer", "search_units"]

_META_VERSION: Final = {"version": "2"}
DOCUMENTS_PER_UNIT: Final = 100


def _int8(vector: list[float]) -> list[int]:
    return [max(-128, min(127, round(v * 127))) for v in vector]


def _uint8(vector: list[float]) -> list[int]:
    return [max(0, min(255, round((v + 1) * 127.5))) for v in vector]


def _bits(vector: list[float]) -> list[int]:
    """Sign bits, eight dimensions to an unsigned byte (positive is 1)."""
    out = []
    for start in range(0, len(vector), 8):
        byte = 0
        for value in vector[start : start + 8]:
            byte = (byte << 1) | (value > 0)
        out.append(byte << (8 - len(vector[start : start + 8])))
    return out


def _binary(vector: list[float]) -> list[int]:
    return [b - 128 for b in _bits(vector)]


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


_RENDER: Final[Mapping[str, Callable[[list[float]], Any]]] = {
    "float": lambda vector: vector,
    "int8": _int8,
    "uint8": _uint8,
    "binary": _binary,
    "ubinary": _bits,
    "base64": _base64,
}


def _size(model: CohereModel, params: EmbedParams) -> int:
    if model.dims is None:
        raise invalid(f"model '{model.name}' does not support embeddings")
    asked = params.output_dimension
    if asked is None:
        return model.dims
    if not model.accepts_dimension(asked):
        if not model.output_dimensions and not model.any_dimension:
            raise invalid(f"output_dimension is not supported for model '{model.name}'")
        raise invalid(f"output_dimension {asked} is not supported for model '{model.name}'")
    return asked


def embed_tokens(params: EmbedParams) -> int:
    return sum(token_count(text) for text in params.texts)


def embed_answer(model: CohereModel, params: EmbedParams) -> dict[str, Any]:
    """An `EmbedByTypeResponse` body for `POST /v2/embed`."""
    size = _size(model, params)
    vectors = [embedding_floats(text, size) for text in params.texts]
    return {
        "id": cohere_id(),
        "embeddings": {
            kind: [_RENDER[kind](vector) for vector in vectors] for kind in params.embedding_types
        },
        "texts": params.texts,
        "meta": {
            "api_version": _META_VERSION,
            "billed_units": {"input_tokens": embed_tokens(params)},
        },
        "response_type": "embeddings_by_type",
    }


def search_units(params: RerankParams) -> int:
    return math.ceil(len(params.documents) / DOCUMENTS_PER_UNIT)


def rerank_answer(params: RerankParams) -> dict[str, Any]:
    """A `V2RerankResponse` body: best first, cut to `top_n`."""
    ranked = rank(params.query, params.documents)
    if params.top_n is not None:
        ranked = ranked[: params.top_n]
    return {
        "id": cohere_id(),
        "results": [{"index": index, "relevance_score": score} for index, score in ranked],
        "meta": {
            "api_version": _META_VERSION,
            "billed_units": {"search_units": search_units(params)},
        },
    }

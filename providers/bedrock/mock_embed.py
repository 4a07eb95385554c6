"""InvokeModel embedding bodies and Rerank for the Bedrock mock.

Titan text (`amazon.titan-embed-*` and the `mock-*` models): one `inputText`,
`dimensions` (256, 512 or 1024 for Titan v2, default 1024; any up to
`MockConfig.embed_dims` for mock models, default that), `normalize` →
`{embedding, embeddingsByType?, inputTextTokenCount}`; Titan v1 takes
`inputText` alone (1536 values). Cohere (`cohere.embed-*`): `texts` (1 to 96),
a required `input_type`, `embedding_types`, `truncate` → `{id, texts,
embeddings: {float: […]}, response_type: "embeddings_by_type"}` (a bare list
without `embedding_types`); `output_dimension` only for Embed v4. Vectors are the
shared engine's (`providers.mock.text.embedding_floats`), so equal texts embed
equally in every dialect.

Rerank: one TEXT query, INLINE TEXT sources, a `BEDROCK_RERANKING_MODEL` naming
a known model's ARN. Scores favour documents sharing the query's words (ties kept
in input order), best first, `numberOfResults` of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from providers.bedrock.mock_wire import validation
from providers.mock.app import new_id
from providers.mock.config import MockConfig
from providers.mock.faults import MockError
from providers.mock.rerank import rank
from providers.mock.text import embedding_floats

__all__ = ["InvokeAnswer", "RerankAnswer", "invoke_answer", "rerank_answer"]

_TITAN_DIMS: Final = (256, 512, 1024)
_COHERE_TYPES: Final = ("search_document", "search_query", "classification", "clustering", "image")
_WORD: Final = re.compile(r"\w+")
_REFORMAT: Final = ", please reformat your input and try again."


@dataclass(frozen=True, slots=True)
class InvokeAnswer:
    payload: dict[str, Any]
    input_tokens: int


def _extraneous(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for name in body:
        if name not in allowed:
            raise validation(
                f"Malformed input request: extraneous key [{name}] is not permitted{_REFORMAT}"
            )


def _tokens(text: str) -> int:
    return max(len(text.split()), 1)


def invoke_answer(model: str, body: Any, config: MockConfig) -> InvokeAnswer:
    if not isinstance(body, dict):
        raise validation("Malformed input request, please reformat your input and try again.")
    if model.startswith("cohere."):
        return _cohere(model, body, config)
    return _titan(model, body, config)


def _titan(model: str, body: Mapping[str, Any], config: MockConfig) -> InvokeAnswer:
    v1 = "titan-embed-text-v1" in model or "titan-embed-g1" in model
    _extraneous(
        body, ("inputText",) if v1 else ("inputText", "dimensions", "normalize", "embeddingTypes")
    )
    text = body.get("inputText")
    if not isinstance(text, str) or not text:
        raise validation(
            "Malformed input request: #: required key [inputText] not found" + _REFORMAT
        )
    mock = not model.startswith("amazon.")
    default = config.embed_dims if mock else (1536 if v1 else 1024)
    dims = body.get("dimensions", default)
    allowed = isinstance(dims, int) and not isinstance(dims, bool)
    allowed = allowed and (
        0 < dims <= config.embed_dims if mock else dims in _TITAN_DIMS or dims == default
    )
    if not allowed:
        raise validation(
            f"Malformed input request: #/dimensions: {dims} is not a valid enum value{_REFORMAT}"
        )
    vector = embedding_floats(text, dims)
    payload: dict[str, Any] = {"embedding": vector, "inputTextTokenCount": _tokens(text)}
    if not v1:
        payload["embeddingsByType"] = {"float": vector}
    return InvokeAnswer(payload, _tokens(text))


def _cohere(model: str, body: Mapping[str, Any], config: MockConfig) -> InvokeAnswer:
    _extraneous(
        body,
        (
            "texts",
            "images",
            "input_type",
            "truncate",
            "embedding_types",
            "output_dimension",
            "max_tokens",
            "inputs",
        ),
    )
    texts = body.get("texts")
    if (
        not isinstance(texts, list)
        or not 1 <= len(texts) <= 96
        or not all(isinstance(t, str) and t for t in texts)
    ):
        raise validation(
            "Malformed input request: #/texts: expected between 1 and 96 non-empty strings"
            + _REFORMAT
        )
    if body.get("input_type") not in _COHERE_TYPES:
        raise validation(
            "Malformed input request: #: required key [input_type] not found" + _REFORMAT
        )
    dims = body.get("output_dimension")
    if dims is not None and ("embed-v4" not in model or dims not in (256, 512, 1024, 1536)):
        raise validation(
            "Malformed input request: #: extraneous key [output_dimension] is not permitted"
            + _REFORMAT
        )
    size = dims or (1536 if "embed-v4" in model else 1024)
    vectors = [embedding_floats(t, size) for t in texts]
    types = body.get("embedding_types")
    embeddings: Any = {"float": vectors} if types else vectors
    payload = {
        "id": new_id(""),
        "texts": texts,
        "embeddings": embeddings,
        "response_type": "embeddings_by_type" if types else "embeddings_floats",
    }
    return InvokeAnswer(payload, sum(_tokens(t) for t in texts))


# -- rerank ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RerankAnswer:
    model: str
    payload: dict[str, Any]
    input_tokens: int


def _text_of(item: Any, kind: str, key: str) -> str:
    inner = item.get(key) if isinstance(item, dict) else None
    text = inner.get("text") if isinstance(inner, dict) else None
    if not isinstance(item, dict) or item.get("type") != kind or not isinstance(text, str):
        raise validation(f"Malformed input request: every {key} needs type {kind} and a text.")
    return text


def rerank_answer(
    body: Any, known: Callable[[str], bool], resolve: Callable[[str], str]
) -> RerankAnswer:
    if not isinstance(body, dict):
        raise validation("Malformed input request, please reformat your input and try again.")
    queries, sources = body.get("queries"), body.get("sources")
    if not isinstance(queries, list) or len(queries) != 1:
        raise validation(
            "1 validation error detected: Value at 'queries' failed to satisfy constraint: "
            "Member must have length less than or equal to 1"
        )
    if not isinstance(sources, list) or not 1 <= len(sources) <= 1000:
        raise validation(
            "1 validation error detected: Value at 'sources' failed to satisfy constraint: "
            "Member must have length between 1 and 1000"
        )
    query = _text_of(queries[0], "TEXT", "textQuery")
    documents = []
    for source in sources:
        inline = source.get("inlineDocumentSource") if isinstance(source, dict) else None
        if not isinstance(source, dict) or source.get("type") != "INLINE":
            raise validation("Malformed input request: every source needs type INLINE.")
        documents.append(_text_of(inline, "TEXT", "textDocument"))
    config = body.get("rerankingConfiguration")
    bedrock = config.get("bedrockRerankingConfiguration") if isinstance(config, dict) else None
    if (
        not isinstance(config, dict)
        or config.get("type") != "BEDROCK_RERANKING_MODEL"
        or not isinstance(bedrock, dict)
    ):
        raise validation(
            "Malformed input request: rerankingConfiguration must be a "
            "BEDROCK_RERANKING_MODEL configuration."
        )
    model_config = bedrock.get("modelConfiguration")
    arn = model_config.get("modelArn") if isinstance(model_config, dict) else None
    if not isinstance(arn, str) or not arn.startswith("arn:"):
        raise validation(
            "Malformed input request: modelConfiguration.modelArn must be a model ARN."
        )
    model = resolve(arn)
    if not known(model):
        raise MockError(
            404,
            "The requested reranking model could not be found.",
            "ResourceNotFoundException",
            kind="not_found",
        )
    count = bedrock.get("numberOfResults", len(documents))
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1000:
        raise validation("numberOfResults must be between 1 and 1000.")
    ranked = rank(query, documents)[:count]
    results = [{"index": index, "relevanceScore": score} for index, score in ranked]
    tokens = _tokens(query) + sum(_tokens(d) for d in documents)
    return RerankAnswer(model, {"results": results}, tokens)

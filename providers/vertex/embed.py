"""Text embeddings through `:predict`: request bodies, batching, answers.

`{instances:[{content, task_type?}], parameters:{outputDimensionality?}}` →
`predictions[i].embeddings.{values, statistics.{token_count, truncated}}`, one
prediction per instance in order. The text-embedding models take up to 250
instances a request; `gemini-embedding-001` takes one, so its inputs go one per
request, a few at a time. Input usage is the sum of the `token_count`s.

`autoTruncate` is left to Google's default (on): an input past the model's limit
is embedded from its start, and `truncated` says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from contracts.errors import BadRequest, InternalError
from providers.core.packing import pack_floats
from providers.core.types import EmbedRequest

__all__ = [
    "MAX_INSTANCES",
    "SINGLES_IN_FLIGHT",
    "batches",
    "parse_predictions",
    "predict_body",
    "task_type",
]

MAX_INSTANCES: Final = 250
# Requests of one embedding job in flight at once, when each carries one instance.
SINGLES_IN_FLIGHT: Final = 8
# Models whose `:predict` takes a single instance.
_SINGLE_INSTANCE: Final = ("gemini-embedding-001",)

# The fleet's (and Cohere's) input types in Google's words.
_TASK_TYPES: Final[Mapping[str, str]] = {
    "query": "RETRIEVAL_QUERY",
    "search_query": "RETRIEVAL_QUERY",
    "document": "RETRIEVAL_DOCUMENT",
    "search_document": "RETRIEVAL_DOCUMENT",
    "classification": "CLASSIFICATION",
    "clustering": "CLUSTERING",
    "similarity": "SEMANTIC_SIMILARITY",
    "semantic_similarity": "SEMANTIC_SIMILARITY",
    "question_answering": "QUESTION_ANSWERING",
    "fact_verification": "FACT_VERIFICATION",
    "code_retrieval_query": "CODE_RETRIEVAL_QUERY",
}
_GOOGLE_TASK_TYPES: Final = frozenset(_TASK_TYPES.values())


def task_type(provider: str, input_type: str | None) -> str | None:
    """Google's `task_type` for the fleet's `input_type` (Google's own names pass)."""
    if input_type is None or not input_type.strip():
        return None
    name = input_type.strip()
    if name.upper() in _GOOGLE_TASK_TYPES:
        return name.upper()
    try:
        return _TASK_TYPES[name.lower()]
    except KeyError:
        # Sent as something else, the vectors would silently be of another kind.
        known = ", ".join(sorted(_TASK_TYPES))
        raise BadRequest(f"{provider}: unsupported input_type {name!r}; known: {known}") from None


def batches(model: str, count: int) -> list[range]:
    """Index ranges of the inputs, one per request, in order."""
    size = 1 if model.strip().startswith(_SINGLE_INSTANCE) else MAX_INSTANCES
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def predict_body(provider: str, req: EmbedRequest, texts: Sequence[str]) -> dict[str, Any]:
    kind = task_type(provider, req.input_type)
    instances: list[dict[str, Any]] = [
        {"content": text} if kind is None else {"content": text, "task_type": kind}
        for text in texts
    ]
    body: dict[str, Any] = {"instances": instances}
    if req.dimensions is not None:
        body["parameters"] = {"outputDimensionality": req.dimensions}
    return body


def parse_predictions(
    provider: str, payload: Mapping[str, Any], expected: int
) -> tuple[list[bytes], int]:
    """Packed rows and the input tokens they cost, from one `:predict` answer."""
    predictions = payload.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != expected:
        got = len(predictions) if isinstance(predictions, list) else 0
        raise InternalError(f"{provider}: expected {expected} predictions, got {got}")
    rows: list[bytes] = []
    tokens = 0
    for prediction in predictions:
        embeddings = prediction.get("embeddings") if isinstance(prediction, dict) else None
        if not isinstance(embeddings, dict) or not isinstance(embeddings.get("values"), list):
            raise InternalError(f"{provider}: prediction without embeddings.values")
        rows.append(pack_floats(provider, embeddings["values"]))
        statistics = embeddings.get("statistics")
        count = statistics.get("token_count") if isinstance(statistics, dict) else None
        if isinstance(count, int | float) and not isinstance(count, bool):
            tokens += int(count)
    return rows, tokens

"""vLLM's rerank API: `{model, query, documents, top_n?}` in, scored indices out.

vLLM serves the same ranking at `/rerank`, `/v1/rerank` and `/v2/rerank`; the
adapter's base URL ends in `/v1` (where the chat routes are), so it calls
`{base}/rerank`, which is `/v1/rerank` there and vLLM's own `/rerank` when a
credential names the server's root instead. The answer:
`{id, model, usage: {total_tokens}, results: [{index, document: {text},
relevance_score}]}`, best first; usage is in tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.errors import InternalError
from contracts.frames import RerankItem, Usage
from providers.core.types import RerankRequest, RerankResult

__all__ = ["parse_rerank", "rerank_body"]


def rerank_body(req: RerankRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model, "query": req.query, "documents": req.documents}
    if req.top_n is not None:
        body["top_n"] = req.top_n  # vLLM's default (0) ranks every document
    return body


def parse_rerank(provider: str, payload: Mapping[str, Any]) -> RerankResult:
    results = payload.get("results")
    if not isinstance(results, list):
        raise InternalError(f"{provider}: rerank answer has no results")
    items = [_item(provider, result) for result in results]
    usage = payload.get("usage")
    tokens = 0
    if isinstance(usage, dict):
        tokens = _count(usage.get("total_tokens")) or _count(usage.get("prompt_tokens"))
    return RerankResult(items=items, usage=Usage(input_tokens=tokens, total_tokens=tokens))


def _item(provider: str, result: Any) -> RerankItem:
    index = result.get("index") if isinstance(result, dict) else None
    score = result.get("relevance_score") if isinstance(result, dict) else None
    if not isinstance(index, int) or isinstance(index, bool):
        raise InternalError(f"{provider}: rerank result without an index")
    if not isinstance(score, int | float) or isinstance(score, bool):
        raise InternalError(f"{provider}: rerank result without a relevance_score")
    return RerankItem(index=index, score=float(score))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

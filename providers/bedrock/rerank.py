"""Rerank through the agent runtime (`POST /rerank`, bedrock-agent-runtime).

One text query, the documents as inline text sources, a reranking model named by
its ARN (a bare model id becomes `arn:aws:bedrock:{region}::foundation-model/{id}`).
`numberOfResults` is always sent (`top_n`, else every document): left out, the
service picks its own default. Results are `{index, relevanceScore}`, best first;
a `nextToken` asks for the same request again to get the rest.

The answer carries no usage. AWS bills a rerank by queries, one per started 100
documents, so that is the `search_units` reported (as Cohere counts its own).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from contracts.errors import BadRequest, InternalError
from contracts.frames import RerankItem, Usage
from providers.bedrock.endpoints import foundation_model_arn
from providers.core.types import RerankRequest, RerankResult

__all__ = ["MAX_PAGES", "rerank", "rerank_body"]

# More pages than 1000 documents could ever need: a server that keeps sending
# tokens is broken, not slow.
MAX_PAGES: Final = 100
# Documents one billed query covers.
DOCUMENTS_PER_QUERY: Final = 100

Post = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def rerank_body(provider: str, req: RerankRequest, region: str) -> dict[str, Any]:
    if not req.documents:
        raise BadRequest(f"{provider}: nothing to rerank")
    count = min(req.top_n or len(req.documents), len(req.documents))
    return {
        "queries": [{"type": "TEXT", "textQuery": {"text": req.query}}],
        "sources": [
            {
                "type": "INLINE",
                "inlineDocumentSource": {"type": "TEXT", "textDocument": {"text": d}},
            }
            for d in req.documents
        ],
        "rerankingConfiguration": {
            "type": "BEDROCK_RERANKING_MODEL",
            "bedrockRerankingConfiguration": {
                "numberOfResults": count,
                "modelConfiguration": {"modelArn": foundation_model_arn(req.model, region)},
            },
        },
    }


async def rerank(provider: str, req: RerankRequest, region: str, post: Post) -> RerankResult:
    body = rerank_body(provider, req, region)
    items: list[RerankItem] = []
    for _ in range(MAX_PAGES):
        payload = await post(body)
        items.extend(_items(provider, payload, len(req.documents)))
        token = payload.get("nextToken")
        if not isinstance(token, str) or not token:
            return RerankResult(items=items, usage=Usage(search_units=_queries(req)))
        body = {**body, "nextToken": token}
    raise InternalError(f"{provider}: rerank kept paging past {MAX_PAGES} pages")


def _queries(req: RerankRequest) -> int:
    return -(-len(req.documents) // DOCUMENTS_PER_QUERY)


def _items(provider: str, payload: dict[str, Any], documents: int) -> list[RerankItem]:
    results = payload.get("results")
    if not isinstance(results, list):
        raise InternalError(f"{provider}: rerank answer has no results")
    items = []
    for result in results:
        index = result.get("index") if isinstance(result, dict) else None
        score = result.get("relevanceScore") if isinstance(result, dict) else None
        if not isinstance(index, int) or not 0 <= index < documents:
            raise InternalError(f"{provider}: rerank result with a bad index")
        if not isinstance(score, int | float) or isinstance(score, bool):
            raise InternalError(f"{provider}: rerank result without a relevanceScore")
        items.append(RerankItem(index=index, score=float(score)))
    return items

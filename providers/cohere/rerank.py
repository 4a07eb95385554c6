"""Rerank through `POST /v2/rerank`: `{model, query, documents, top_n?}`.

Results are `{index, relevance_score}`, best first, passed on as they come (the
worker sorts and cuts them again). Cohere bills a rerank in search units (one
query with up to 100 documents; longer documents count as several), which the
answer states in `meta.billed_units.search_units`: that is the usage reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from contracts.errors import BadRequest, InternalError
from contracts.frames import RerankItem, Usage
from providers.core.types import RerankRequest, RerankResult

__all__ = ["parse_rerank", "rerank_body"]


def rerank_body(provider: str, req: RerankRequest) -> dict[str, Any]:
    if not req.documents:
        raise BadRequest(f"{provider}: nothing to rerank")
    body: dict[str, Any] = {"model": req.model, "query": req.query, "documents": req.documents}
    if req.top_n is not None:
        body["top_n"] = req.top_n
    return body


def parse_rerank(provider: str, payload: Mapping[str, Any]) -> RerankResult:
    results = payload.get("results")
    if not isinstance(results, list):
        raise InternalError(f"{provider}: rerank answer has no results")
    items: list[RerankItem] = []
    for result in results:
        index = result.get("index") if isinstance(result, Mapping) else None
        score = result.get("relevance_score") if isinstance(result, Mapping) else None
        if not isinstance(index, int) or isinstance(index, bool):
            raise InternalError(f"{provider}: rerank result without an index")
        if not isinstance(score, int | float) or isinstance(score, bool):
            raise InternalError(f"{provider}: rerank result without a relevance_score")
        items.append(RerankItem(index=index, score=float(score)))
    return RerankResult(items=items, usage=Usage(search_units=_search_units(payload)))


def _search_units(payload: Mapping[str, Any]) -> int | None:
    meta = payload.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, Mapping) else None
    units = billed.get("search_units") if isinstance(billed, Mapping) else None
    if isinstance(units, bool) or not isinstance(units, int | float) or not math.isfinite(units):
        return None
    return math.ceil(units)

"""Rerank: a ranking of the documents sent, in the mocks' deterministic order, with usage."""

from __future__ import annotations

from typing import Final

from contracts.errors import RateLimited, Unauthorized
from providers.core.rerank import checked_ranking
from providers.core.spec import Capability
from providers.core.types import RerankRequest
from providers.registry import Provider
from tests.conformance.support import MockAdmin, check_error, require, secret, wrong_secret

QUERY: Final = "durable queue"
# The mocks score by the share of the query's words a document holds.
DOCUMENTS: Final = [
    "cats and dogs",
    "the queue is durable",
    "a durable queue of jobs",
    "one queue",
    "nothing relevant here",
]


async def test_ranking_of_every_document(provider: Provider, model: str) -> None:
    require(provider, Capability.RERANK)
    req = RerankRequest(model=model, query=QUERY, documents=DOCUMENTS)
    result = await provider.reranker().rerank(req, secret(provider))
    ranked = checked_ranking(provider.name, result.items, len(DOCUMENTS), None)
    assert len(ranked) == len(DOCUMENTS), "every document is ranked when top_n is not set"
    order = [item.index for item in ranked]
    assert set(order[:2]) == {1, 2} and order[2] == 3, order
    assert all(0 <= item.score <= 1 for item in ranked)
    usage = result.usage
    assert (usage.search_units or 0) > 0 or usage.total_tokens > 0, usage


async def test_top_n(provider: Provider, model: str) -> None:
    require(provider, Capability.RERANK)
    req = RerankRequest(model=model, query=QUERY, documents=DOCUMENTS, top_n=2)
    result = await provider.reranker().rerank(req, secret(provider))
    ranked = checked_ranking(provider.name, result.items, len(DOCUMENTS), 2)
    assert len(result.items) == 2, "the provider was asked for two"
    assert {item.index for item in ranked} == {1, 2}


async def test_rerank_errors(provider: Provider, model: str, admin: MockAdmin) -> None:
    require(provider, Capability.RERANK)
    req = RerankRequest(model=model, query=QUERY, documents=DOCUMENTS)
    try:
        await provider.reranker().rerank(req, wrong_secret(provider))
    except Unauthorized as exc:
        check_error(exc, provider, Unauthorized, retryable=False)
    else:
        raise AssertionError("a wrong key was accepted for rerank")
    await admin.fault("429", model)
    try:
        await provider.reranker().rerank(req, secret(provider))
    except RateLimited as exc:
        check_error(exc, provider, RateLimited, retryable=True, status=429)
    else:
        raise AssertionError("a 429 fault did not reach the caller")

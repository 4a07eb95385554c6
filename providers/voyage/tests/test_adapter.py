"""The Voyage adapter against `httpx.MockTransport` fakes (no network), and its limits."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from contracts.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.testing import Handler, Recorder
from providers.core.types import EmbedRequest, RerankRequest, Secret
from providers.voyage.adapter import VERIFY_MODEL, Voyage
from providers.voyage.limits import (
    MAX_INPUTS,
    embed_batches,
    embed_token_limit,
    estimate_tokens,
    rerank_batches,
    rerank_token_limit,
)

KEY = "pa-secret-key-0123456789"
SECRET = Secret({"api_key": KEY})
BASE = "https://api.voyageai.test/v1"


@pytest.fixture
def adapter(pools: list[HttpClientPool]) -> Callable[[Handler], tuple[Voyage, Recorder]]:
    def make(handler: Handler) -> tuple[Voyage, Recorder]:
        recorder = Recorder(handler)
        pool = HttpClientPool(transport=httpx.MockTransport(recorder))
        pools.append(pool)
        return Voyage(ProviderContext("voyage", pool, BASE)), recorder

    return make


def b64(*values: float) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def embeddings(request: httpx.Request) -> httpx.Response:
    """Voyage's answer: one vector per input holding its position, listed backwards."""
    texts = json.loads(request.content)["input"]
    data = [
        {"object": "embedding", "embedding": b64(float(len(t)), 1.0), "index": i}
        for i, t in reversed(list(enumerate(texts)))
    ]
    usage = {"total_tokens": 10 * len(texts)}
    return httpx.Response(200, json={"object": "list", "data": data, "usage": usage})


def detail(status: int, text: Any, **headers: str) -> Handler:
    return lambda request: httpx.Response(status, json={"detail": text}, headers=headers)


# -- limits ------------------------------------------------------------------------------


def test_estimate_never_undercounts_a_byte_level_tokenizer() -> None:
    assert estimate_tokens("") == 2
    assert estimate_tokens("héllo") == len("héllo".encode()) + 2


def test_token_limits_by_model() -> None:
    assert embed_token_limit("voyage-3.5-lite") == 1_000_000
    assert embed_token_limit("voyage-4") == 320_000
    assert embed_token_limit("voyage-3-large") == 120_000
    assert embed_token_limit("some-future-model") == 120_000
    assert rerank_token_limit("rerank-2.5") == 600_000
    assert rerank_token_limit("rerank-lite-1") == 300_000


def test_embed_batches_split_by_count_and_by_tokens() -> None:
    assert embed_batches(["a"] * (MAX_INPUTS + 1), 10**9) == [range(1000), range(1000, 1001)]
    # 8 bytes + 2 per text: three texts make 30 tokens.
    assert embed_batches(["x" * 8] * 7, 30) == [range(3), range(3, 6), range(6, 7)]
    # A text past the limit on its own still goes, alone.
    assert embed_batches(["small", "y" * 100, "small"], 30) == [
        range(1),
        range(1, 2),
        range(2, 3),
    ]


def test_rerank_batches_count_the_query_once_per_document() -> None:
    # The query is 10 tokens, each document 10: n documents cost 20 n.
    assert rerank_batches("q" * 8, ["d" * 8] * 5, 40) == [range(2), range(2, 4), range(4, 5)]


# -- embeddings ----------------------------------------------------------------------------


async def test_embed_body_and_rows_in_input_order(adapter: Callable[..., Any]) -> None:
    voyage, recorder = adapter(embeddings)
    req = EmbedRequest("voyage-3.5", ["a", "bbb"], input_type="search_document", dimensions=512)
    result = await voyage.embed(req, SECRET)
    assert recorder.body == {
        "input": ["a", "bbb"],
        "model": "voyage-3.5",
        "truncation": True,
        "output_dtype": "float",
        "encoding_format": "base64",
        "input_type": "document",
        "output_dimension": 512,
    }
    request = recorder.requests[-1]
    assert request.url == f"{BASE}/embeddings"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert (result.count, result.dims) == (2, 2)
    assert struct.unpack("<4f", result.data) == (1.0, 1.0, 3.0, 1.0)
    assert result.usage.input_tokens == result.usage.total_tokens == 20


@pytest.mark.parametrize(
    ("given", "sent"),
    [("query", "query"), ("search_query", "query"), ("classification", None), (None, None)],
)
async def test_input_types(
    adapter: Callable[..., Any], given: str | None, sent: str | None
) -> None:
    voyage, recorder = adapter(embeddings)
    await voyage.embed(EmbedRequest("voyage-3.5", ["a"], input_type=given), SECRET)
    assert recorder.body.get("input_type") == sent


async def test_unknown_input_type_is_refused(adapter: Callable[..., Any]) -> None:
    voyage, recorder = adapter(embeddings)
    with pytest.raises(BadRequest, match="input_type 'code'"):
        await voyage.embed(EmbedRequest("voyage-3.5", ["a"], input_type="code"), SECRET)
    assert not recorder.requests


async def test_a_job_past_the_limits_is_sent_in_order(adapter: Callable[..., Any]) -> None:
    voyage, recorder = adapter(embeddings)
    texts = [f"t{i}" for i in range(MAX_INPUTS + 5)]
    result = await voyage.embed(EmbedRequest("voyage-3.5", texts), SECRET)
    assert [len(json.loads(r.content)["input"]) for r in recorder.requests] == [1000, 5]
    rows = struct.unpack(f"<{2 * len(texts)}f", result.data)[::2]
    assert rows == tuple(float(len(t)) for t in texts)
    assert result.usage.total_tokens == 10 * len(texts)


async def test_float_vectors_and_missing_usage_are_taken(adapter: Callable[..., Any]) -> None:
    voyage, _ = adapter(
        lambda r: httpx.Response(200, json={"data": [{"embedding": [0.5, 0.25], "index": 0}]})
    )
    result = await voyage.embed(EmbedRequest("voyage-3.5", ["a"]), SECRET)
    assert struct.unpack("<2f", result.data) == (0.5, 0.25)
    assert result.usage.total_tokens == 0


# -- rerank -------------------------------------------------------------------------------


def ranking(request: httpx.Request) -> httpx.Response:
    """Scores each document by its length, best first, cut to top_k."""
    body = json.loads(request.content)
    scored = sorted(
        ({"index": i, "relevance_score": len(d) / 1000} for i, d in enumerate(body["documents"])),
        key=lambda item: -float(item["relevance_score"]),
    )
    data = scored[: body.get("top_k") or len(scored)]
    return httpx.Response(200, json={"data": data, "usage": {"total_tokens": 7}})


async def test_rerank_body_and_items(adapter: Callable[..., Any]) -> None:
    voyage, recorder = adapter(ranking)
    req = RerankRequest("rerank-2.5", "q", ["a", "ccc", "bb"], top_n=2)
    result = await voyage.rerank(req, SECRET)
    assert recorder.body == {
        "query": "q",
        "model": "rerank-2.5",
        "return_documents": False,
        "truncation": True,
        "documents": ["a", "ccc", "bb"],
        "top_k": 2,
    }
    assert [(i.index, i.score) for i in result.items] == [(1, 0.003), (2, 0.002)]
    assert result.usage.total_tokens == 7


async def test_rerank_split_keeps_the_best_of_all(adapter: Callable[..., Any]) -> None:
    voyage, recorder = adapter(ranking)
    # rerank-1 takes 300K tokens: documents of 100K bytes go two to a request.
    documents = ["d" * size for size in (100_000, 100_001, 99_999, 100_002, 100_003)]
    result = await voyage.rerank(RerankRequest("rerank-1", "q", documents, top_n=3), SECRET)
    assert [len(json.loads(r.content)["documents"]) for r in recorder.requests] == [2, 2, 1]
    assert [i.index for i in result.items] == [4, 3, 1]
    assert result.usage.total_tokens == 21


# -- errors and verify ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "text", "cls"),
    [
        (400, "Model voyage-9 is not supported. Supported models are ['voyage-3.5'].", NotFound),
        (400, "The batch size limit is 1000. Your batch size is 1001.", BadRequest),
        (401, "Provided API key is invalid.", Unauthorized),
        (402, "Your organization has used up its usage limit.", QuotaExceeded),
        (403, "Your IP address is not allowed to access the API.", Forbidden),
        (422, [{"loc": ["body", "input"], "msg": "Field required"}], BadRequest),
        (500, "Internal Server Error", ProviderUnavailable),
        (503, "Service Unavailable", ProviderUnavailable),
    ],
)
async def test_errors(
    adapter: Callable[..., Any], status: int, text: Any, cls: type[Exception]
) -> None:
    voyage, _ = adapter(detail(status, text))
    with pytest.raises(cls) as info:
        await voyage.embed(EmbedRequest("voyage-9", ["a"]), SECRET)
    assert str(info.value).startswith("voyage: HTTP")


async def test_rate_limit_carries_the_wait(adapter: Callable[..., Any]) -> None:
    voyage, _ = adapter(detail(429, "slow down", **{"retry-after": "3"}))
    with pytest.raises(RateLimited) as info:
        await voyage.rerank(RerankRequest("rerank-2", "q", ["d"]), SECRET)
    assert info.value.retryable and info.value.retry_after == 3.0


async def test_messages_never_carry_the_key(adapter: Callable[..., Any]) -> None:
    voyage, _ = adapter(detail(401, f"Provided API key {KEY} is invalid."))
    with pytest.raises(Unauthorized) as info:
        await voyage.embed(EmbedRequest("voyage-3.5", ["a"]), SECRET)
    assert KEY not in str(info.value)


async def test_a_credential_without_a_key_is_refused(adapter: Callable[..., Any]) -> None:
    voyage, recorder = adapter(embeddings)
    with pytest.raises(BadRequest, match="no api_key"):
        await voyage.embed(EmbedRequest("voyage-3.5", ["a"]), Secret({}))
    assert not recorder.requests


async def test_verify_embeds_one_word(adapter: Callable[..., Any]) -> None:
    voyage, recorder = adapter(embeddings)
    result = await voyage.verify(SECRET)
    assert result.ok
    assert recorder.body["model"] == VERIFY_MODEL and recorder.body["input"] == ["ping"]


@pytest.mark.parametrize("status", [401, 403])
async def test_verify_refused(adapter: Callable[..., Any], status: int) -> None:
    voyage, _ = adapter(detail(status, "no"))
    result = await voyage.verify(SECRET)
    assert not result.ok and result.detail.startswith(f"voyage: HTTP {status}")


async def test_verify_raises_other_failures(adapter: Callable[..., Any]) -> None:
    voyage, _ = adapter(detail(502, "Bad Gateway"))
    with pytest.raises(ProviderUnavailable):
        await voyage.verify(SECRET)

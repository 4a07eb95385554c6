"""The TEI adapter against `httpx.MockTransport` fakes (no network)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

import httpx
import pytest

from contracts.errors import (
    BadRequest,
    FleetError,
    InternalError,
    ProviderUnavailable,
    RateLimited,
    Unauthorized,
)
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.testing import Handler, Recorder
from providers.core.types import EmbedRequest, RerankRequest, Secret
from providers.tei.adapter import DEFAULT_BATCH, TEI

KEY = "hf_secretsecretsecret0123"
SECRET = Secret({"api_key": KEY})
BASE = "http://tei.internal:8080"

Make = Callable[..., tuple[TEI, Recorder]]


@pytest.fixture
def adapter(pools: list[HttpClientPool]) -> Make:
    def make(handler: Handler, base_url: str | None = BASE) -> tuple[TEI, Recorder]:
        recorder = Recorder(handler)
        pool = HttpClientPool(transport=httpx.MockTransport(recorder))
        pools.append(pool)
        return TEI(ProviderContext("tei", pool, base_url)), recorder

    return make


def tei_error(status: int, message: str, error_type: str) -> httpx.Response:
    return httpx.Response(status, json={"error": message, "error_type": error_type})


def embed_server(limit: int = DEFAULT_BATCH, dims: int = 2) -> Handler:
    """Each input's vector starts with its length; batches past `limit` are TEI's 413."""

    def handle(request: httpx.Request) -> httpx.Response:
        inputs = json.loads(request.content)["inputs"]
        if len(inputs) > limit:
            message = f"batch size {len(inputs)} > maximum allowed batch size {limit}"
            return tei_error(413, message, "validation")
        vectors = [[float(len(text))] + [0.5] * (dims - 1) for text in inputs]
        return httpx.Response(200, json=vectors, headers={"x-compute-tokens": str(3 * len(inputs))})

    return handle


def sizes(recorder: Recorder, field: str = "inputs") -> list[int]:
    return sorted(len(json.loads(r.content)[field]) for r in recorder.requests)


# -- embeddings ----------------------------------------------------------------------------


async def test_embed_body(adapter: Make) -> None:
    tei, recorder = adapter(embed_server(dims=3))
    req = EmbedRequest("BAAI/bge-m3", ["a", "bb"], input_type="query", dimensions=3)
    result = await tei.embed(req, SECRET)
    assert recorder.body == {
        "inputs": ["a", "bb"],
        "model": "BAAI/bge-m3",
        "normalize": True,
        "truncate": True,
        "prompt_name": "query",
        "dimensions": 3,
    }
    request = recorder.requests[-1]
    assert request.url == f"{BASE}/embed"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert (result.count, result.dims) == (2, 3)
    assert struct.unpack("<6f", result.data) == (1.0, 0.5, 0.5, 2.0, 0.5, 0.5)
    assert result.usage.input_tokens == result.usage.total_tokens == 6


async def test_no_key_no_authorization_header(adapter: Make) -> None:
    tei, recorder = adapter(embed_server())
    await tei.embed(EmbedRequest("m", ["a"]), Secret({}))
    assert "Authorization" not in recorder.requests[-1].headers


async def test_the_address_comes_from_the_credential(adapter: Make) -> None:
    tei, recorder = adapter(embed_server(), base_url=None)
    with pytest.raises(BadRequest, match="no base_url"):
        await tei.embed(EmbedRequest("m", ["a"]), SECRET)
    await tei.embed(EmbedRequest("m", ["a"]), Secret({"base_url": "http://gpu-1:80/"}))
    assert recorder.requests[-1].url == "http://gpu-1:80/embed"


async def test_a_job_is_split_at_32_and_kept_in_order(adapter: Make) -> None:
    tei, recorder = adapter(embed_server())
    texts = ["x" * (i + 1) for i in range(70)]
    result = await tei.embed(EmbedRequest("m", texts), SECRET)
    assert sizes(recorder) == [6, 32, 32]
    assert struct.unpack(f"<{2 * 70}f", result.data)[::2] == tuple(float(i + 1) for i in range(70))
    assert result.usage.total_tokens == 3 * 70


async def test_a_smaller_server_limit_is_learned_once(adapter: Make) -> None:
    tei, recorder = adapter(embed_server(limit=8))
    texts = [f"t{i}" for i in range(20)]
    result = await tei.embed(EmbedRequest("m", texts), SECRET)
    assert result.count == 20
    assert sizes(recorder) == [4, 8, 8, 20], "refused whole, then sent as the server allows"
    recorder.requests.clear()
    await tei.embed(EmbedRequest("m", texts), SECRET)
    assert sizes(recorder) == [4, 8, 8], "the endpoint's limit is remembered"


async def test_other_413s_are_bad_requests(adapter: Make) -> None:
    message = "`inputs` must have less than 512 tokens. Given: 600"
    tei, recorder = adapter(lambda r: tei_error(413, message, "validation"))
    with pytest.raises(BadRequest, match="less than 512 tokens"):
        await tei.embed(EmbedRequest("m", ["long"]), SECRET)
    assert len(recorder.requests) == 1


async def test_a_server_ignoring_dimensions_is_refused(adapter: Make) -> None:
    tei, _ = adapter(embed_server(dims=4))
    with pytest.raises(BadRequest, match="asked for 2 dimensions"):
        await tei.embed(EmbedRequest("m", ["a"], dimensions=2), SECRET)


async def test_usage_without_the_header_is_zero(adapter: Make) -> None:
    tei, _ = adapter(lambda r: httpx.Response(200, json=[[1.0, 0.0]]))
    result = await tei.embed(EmbedRequest("m", ["a"]), SECRET)
    assert result.usage.total_tokens == 0


@pytest.mark.parametrize(
    ("response", "cls"),
    [
        (httpx.Response(200, content=b"[[1.0,"), ProviderUnavailable),
        (httpx.Response(200, json={"embeddings": []}), InternalError),
        (httpx.Response(200, json=[[1.0], [2.0]]), InternalError),
    ],
)
async def test_broken_answers(
    adapter: Make, response: httpx.Response, cls: type[Exception]
) -> None:
    tei, _ = adapter(lambda r: response)
    with pytest.raises(cls):
        await tei.embed(EmbedRequest("m", ["a"]), SECRET)


# -- rerank ---------------------------------------------------------------------------------


def rerank_server(request: httpx.Request) -> httpx.Response:
    """Scores each text by its length over 100, best first, as TEI sorts them."""
    texts = json.loads(request.content)["texts"]
    if len(texts) > DEFAULT_BATCH:
        return tei_error(413, "batch size too large", "validation")
    ranks = sorted(
        ({"index": i, "score": len(t) / 100} for i, t in enumerate(texts)),
        key=lambda r: -float(r["score"]),
    )
    return httpx.Response(200, json=ranks, headers={"x-compute-tokens": "5"})


async def test_rerank(adapter: Make) -> None:
    tei, recorder = adapter(rerank_server)
    documents = ["d" * (i % 50 + 1) for i in range(40)]
    result = await tei.rerank(RerankRequest("bge-reranker", "q", documents, top_n=3), SECRET)
    assert sizes(recorder, "texts") == [8, 32]
    body = recorder.body
    assert {k: v for k, v in body.items() if k != "texts"} == {
        "model": "bge-reranker",
        "query": "q",
        "truncate": True,
        "raw_scores": False,
        "return_text": False,
    }
    assert recorder.requests[-1].url == f"{BASE}/rerank"
    assert [(i.index, i.score) for i in result.items] == [(39, 0.4), (38, 0.39), (37, 0.38)]
    assert result.usage.total_tokens == 10


async def test_rerank_answer_with_a_bad_index(adapter: Make) -> None:
    tei, _ = adapter(lambda r: httpx.Response(200, json=[{"index": 5, "score": 0.1}]))
    with pytest.raises(InternalError, match="names text 5"):
        await tei.rerank(RerankRequest("m", "q", ["d"]), SECRET)


# -- errors and verify ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "cls", "retryable"),
    [
        (tei_error(424, "model is not a re-ranker model", "backend"), BadRequest, False),
        (tei_error(424, "Inference failed", "backend"), ProviderUnavailable, True),
        (tei_error(429, "Model is overloaded", "overloaded"), RateLimited, True),
        (tei_error(503, "unhealthy", "unhealthy"), ProviderUnavailable, True),
        (tei_error(400, "`texts` cannot be empty", "empty"), BadRequest, False),
        (httpx.Response(401), Unauthorized, False),
        (httpx.Response(422, text="Failed to deserialize the JSON body"), BadRequest, False),
    ],
)
async def test_errors(
    adapter: Make, response: httpx.Response, cls: type[FleetError], retryable: bool
) -> None:
    tei, _ = adapter(lambda r: response)
    with pytest.raises(cls) as info:
        await tei.rerank(RerankRequest("m", "q", ["d"]), SECRET)
    assert isinstance(info.value, cls)
    assert info.value.retryable is retryable
    assert str(info.value).startswith("tei: HTTP")


async def test_messages_never_carry_the_key(adapter: Make) -> None:
    tei, _ = adapter(lambda r: tei_error(424, f"bad token {KEY}", "backend"))
    with pytest.raises(ProviderUnavailable) as info:
        await tei.embed(EmbedRequest("m", ["a"]), SECRET)
    assert KEY not in str(info.value)


async def test_verify_reads_info(adapter: Make) -> None:
    info = {"model_id": "BAAI/bge-small-en-v1.5", "model_type": {"embedding": {"pooling": "cls"}}}
    tei, recorder = adapter(lambda r: httpx.Response(200, json=info))
    result = await tei.verify(SECRET)
    assert (result.ok, result.detail) == (True, "serves BAAI/bge-small-en-v1.5 (embedding)")
    request = recorder.requests[-1]
    assert (request.method, str(request.url)) == ("GET", f"{BASE}/info")


@pytest.mark.parametrize("status", [401, 403])
async def test_verify_refused(adapter: Make, status: int) -> None:
    tei, _ = adapter(lambda r: httpx.Response(status))
    result = await tei.verify(SECRET)
    assert not result.ok and result.detail == f"tei: HTTP {status}"


async def test_verify_raises_other_failures(adapter: Make) -> None:
    tei, _ = adapter(lambda r: tei_error(503, "unhealthy", "unhealthy"))
    with pytest.raises(ProviderUnavailable):
        await tei.verify(SECRET)

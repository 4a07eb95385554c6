"""HuggingFace Text Embeddings Inference (TEI), self-hosted or on Inference Endpoints.

Calls: `POST /embed`, `POST /rerank`, and `GET /info` as the credential check.
There is no default address: the operator (`FLEET_PROVIDER_URLS`) or the
credential's `base_url` names the server. An `api_key`, when the credential has
one, goes as a Bearer token (TEI's `--api-key`, or an Inference Endpoint's HF
token); without one no `Authorization` header is sent.

* Embeddings: `{inputs, normalize: true, truncate: true}` (unit vectors, as
  every other provider's; an input past the model's length is cut, not failed),
  `dimensions` when the job asks (TEI 1.7+; an answer of another width is
  refused rather than passed off as asked), and the fleet's `input_type` as
  `prompt_name`: the name of one of the model's own sentence-transformers
  prompts (`query`, `document`, `passage`, `search_query`...). A model without
  that prompt is TEI's 413, raised as BadRequest: a job never gets vectors made
  other than it asked.
* Rerank: `{query, texts, truncate: true, raw_scores: false}`; scores are the
  model's sigmoid, in 0..1. TEI has no `top_n`: the best `top_n` are kept here.
* Batches: TEI refuses more inputs (or rerank texts) per request than its
  `--max-client-batch-size` (32 unless the operator changed it). A job is split
  at 32, the pieces sent at most `FAN_OUT` at a time and put back in order. A
  server with a smaller limit says so in its 413 ("batch size 32 > maximum
  allowed batch size 8"): the adapter remembers that limit for the endpoint and
  sends the job again split by it, once. No `/info` round trip on the way, and a
  server that allows more than 32 simply gets more requests.
* Usage: TEI's bodies carry none; every answer has `x-compute-tokens` (the
  tokens it ran, rerank pairs included), summed over the pieces. Behind a proxy
  that drops the header the count is 0 (a self-hosted server bills nothing).
* The job's model travels as `model` in the body. TEI serves one model and
  ignores the field (its request types take no unknown-field check); a gateway
  routing several servers can read it, and the mock scopes faults by it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import httpx
import msgspec

from contracts.errors import BadRequest, FleetError, InternalError, ProviderUnavailable
from contracts.frames import RerankItem, Usage
from providers.core.api import ApiClient
from providers.core.auth import HeaderAuth, header_value
from providers.core.fanout import in_order
from providers.core.packing import pack_floats, pack_rows
from providers.core.spec import ProviderContext
from providers.core.types import (
    EmbedRequest,
    EmbedResult,
    RerankRequest,
    RerankResult,
    Secret,
    VerifyResult,
)
from providers.tei.errors import ERRORS, batch_limit, error_from_response

__all__ = ["DEFAULT_BATCH", "FAN_OUT", "TEI"]

# TEI's default `--max-client-batch-size`.
DEFAULT_BATCH: Final = 32
# Requests one job keeps in flight: TEI batches concurrent requests on the GPU.
FAN_OUT: Final = 4
# Endpoints whose smaller batch limit is remembered (least recently learned go first).
_REMEMBERED: Final = 1024

T = TypeVar("T")


class _Rank(msgspec.Struct):
    index: int
    score: float


@dataclass(frozen=True, slots=True)
class _Piece:
    """One request's answer: rows or ranks, and the tokens it ran."""

    rows: list[bytes]
    ranks: list[RerankItem]
    tokens: int


class _BatchTooLarge(Exception):
    def __init__(self, limit: int, error: FleetError) -> None:
        super().__init__(error.message)
        self.limit = limit
        self.error = error


class TEI:
    """Adapter for Text Embeddings Inference (embed, rerank, verify).

    Credential fields: optional `api_key` (Bearer), `base_url` (the server, when
    the operator did not name one).
    """

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._api = ApiClient(context.name, context.http, context.base_url, self._auth, ERRORS)
        self._batch_limits: OrderedDict[str, int] = OrderedDict()

    def _auth(self, secret: Secret) -> httpx.Auth:
        key = header_value(self.name, "api_key", secret.api_key)
        return HeaderAuth({"Authorization": f"Bearer {key}"} if key else {})

    # -- calls ----------------------------------------------------------------------

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        if not req.inputs:
            raise BadRequest(f"{self.name}: nothing to embed")
        base: dict[str, Any] = {"model": req.model, "normalize": True, "truncate": True}
        if req.input_type is not None:
            base["prompt_name"] = req.input_type
        if req.dimensions is not None:
            base["dimensions"] = req.dimensions

        async def piece(batch: range) -> _Piece:
            body = {"inputs": req.inputs[batch.start : batch.stop], **base}
            content, tokens = await self._post("/embed", secret, body)
            vectors = _decode(self.name, content, list[list[float]])
            rows = [pack_floats(self.name, vector) for vector in vectors]
            return _Piece(rows=rows, ranks=[], tokens=tokens)

        pieces = await self._split(secret, len(req.inputs), piece)
        rows = [row for p in pieces for row in p.rows]
        tokens = sum(p.tokens for p in pieces)
        result = pack_rows(
            self.name,
            rows,
            expected=len(req.inputs),
            usage=Usage(input_tokens=tokens, total_tokens=tokens),
        )
        if req.dimensions is not None and result.dims != req.dimensions:
            raise BadRequest(
                f"{self.name}: asked for {req.dimensions} dimensions, the server answered "
                f"{result.dims} (TEI before 1.7 ignores `dimensions`)"
            )
        return result

    async def rerank(self, req: RerankRequest, secret: Secret) -> RerankResult:
        if not req.documents:
            raise BadRequest(f"{self.name}: nothing to rerank")
        base: dict[str, Any] = {
            "model": req.model,
            "query": req.query,
            "truncate": True,
            "raw_scores": False,
            "return_text": False,
        }

        async def piece(batch: range) -> _Piece:
            body = {"texts": req.documents[batch.start : batch.stop], **base}
            content, tokens = await self._post("/rerank", secret, body)
            ranks = _decode(self.name, content, list[_Rank])
            return _Piece(rows=[], ranks=_offset(self.name, ranks, batch), tokens=tokens)

        pieces = await self._split(secret, len(req.documents), piece)
        items = sorted(
            (item for p in pieces for item in p.ranks), key=lambda i: (-i.score, i.index)
        )
        if req.top_n is not None:
            items = items[: req.top_n]
        tokens = sum(p.tokens for p in pieces)
        return RerankResult(items=items, usage=Usage(input_tokens=tokens, total_tokens=tokens))

    async def verify(self, secret: Secret) -> VerifyResult:
        return await self._api.verify("/info", secret, _describe)

    # -- plumbing -------------------------------------------------------------------

    async def _post(self, path: str, secret: Secret, body: dict[str, Any]) -> tuple[bytes, int]:
        """A 2xx body and its `x-compute-tokens`; any other answer is raised."""
        response = await self._api.send("POST", path, secret, body)
        if not 200 <= response.status_code < 300:
            error = error_from_response(self.name, response, secret)
            limit = batch_limit(response)
            if limit is not None:
                raise _BatchTooLarge(limit, error)
            raise error
        return response.content, _compute_tokens(response)

    async def _split(
        self, secret: Secret, count: int, piece: Callable[[range], Awaitable[T]]
    ) -> list[T]:
        """`piece` for each batch of `count` items, in order; re-split once if the
        server's batch limit turns out smaller than the one assumed."""
        endpoint = self._api.url(secret, "")
        size = self._batch_limits.get(endpoint, DEFAULT_BATCH)
        try:
            return await in_order(
                piece, _batches(count, size), limit=FAN_OUT, prefer=(_BatchTooLarge,)
            )
        except _BatchTooLarge as refused:
            if not 0 < refused.limit < size:
                raise refused.error from None
            self._remember(endpoint, refused.limit)
            try:
                return await in_order(
                    piece, _batches(count, refused.limit), limit=FAN_OUT, prefer=(_BatchTooLarge,)
                )
            except _BatchTooLarge as again:
                raise again.error from None

    def _remember(self, endpoint: str, limit: int) -> None:
        self._batch_limits[endpoint] = limit
        self._batch_limits.move_to_end(endpoint)
        while len(self._batch_limits) > _REMEMBERED:
            self._batch_limits.popitem(last=False)


def _batches(count: int, size: int) -> list[range]:
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def _decode(provider: str, content: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(content, type=kind)
    except msgspec.ValidationError as exc:
        raise InternalError(f"{provider}: unexpected answer shape ({exc})") from None
    except msgspec.DecodeError:
        # A 2xx with a broken body is usually a proxy or a cut connection.
        raise ProviderUnavailable(f"{provider}: response is not valid JSON") from None


def _offset(provider: str, ranks: list[_Rank], batch: range) -> list[RerankItem]:
    items = []
    for rank in ranks:
        if not 0 <= rank.index < len(batch):
            raise InternalError(
                f"{provider}: rerank answer names text {rank.index} of {len(batch)}"
            )
        items.append(RerankItem(index=batch.start + rank.index, score=rank.score))
    return items


def _compute_tokens(response: httpx.Response) -> int:
    value = response.headers.get("x-compute-tokens", "")
    return int(value) if value.isdigit() else 0


def _describe(info: dict[str, Any]) -> str:
    model = info.get("model_id")
    kinds = info.get("model_type")
    kind = next(iter(kinds), None) if isinstance(kinds, dict) else None
    served = f"{model}" if isinstance(model, str) else "an unnamed model"
    return f"serves {served}" + (f" ({kind})" if isinstance(kind, str) else "")

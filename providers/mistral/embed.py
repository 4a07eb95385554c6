"""Embeddings in batches Mistral accepts: at most 512 inputs and 16,384 tokens each.

Mistral refuses a bigger request outright (400, code 3210: "Too many inputs in
request" / "Too many tokens overall, split into more batches"; older bodies
"Too many tokens in batch. Max is 16384 got 17555"), so inputs are cut into
batches before sending, in order. Tokens are estimated without a tokenizer, on
the safe side: a third of the UTF-8 bytes (Mistral's tokenizers average three to
four characters a token in English, one a character in CJK scripts, which is
three bytes), against three quarters of the limit. Should Mistral still find a
batch too large, it is halved and both halves sent, down to single inputs (an
input alone too long for the model is Mistral's 400 to report).

`EmbedRequest.dimensions` goes as `output_dimension` (codestral-embed chooses
among sizes; mistral-embed is always 1024 and refuses it). `input_type` has no
Mistral equivalent, its models embed queries and documents alike, so it is not
sent. Vectors are asked for as float32 (`output_dtype: float`) JSON numbers:
the API's base64 form is not in its published schema.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

from contracts.errors import BadRequest, InternalError
from contracts.frames import Usage
from providers.core.packing import pack_rows, vector_bytes
from providers.core.types import EmbedRequest, EmbedResult

__all__ = ["MAX_INPUTS", "TOKEN_BUDGET", "batches", "embed_all", "estimate_tokens"]

MAX_INPUTS: Final = 512
MAX_TOKENS: Final = 16_384
TOKEN_BUDGET: Final = MAX_TOKENS * 3 // 4
_TOO_LARGE_CODE: Final = "3210"
_TOO_LARGE_WORDS: Final = ("too many tokens", "too many inputs", "split into more batches")

Send = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def estimate_tokens(text: str) -> int:
    """An estimate of `text`'s tokens that errs high."""
    return len(text.encode()) // 3 + 1


def batches(inputs: list[str]) -> Iterator[tuple[int, int]]:
    """`(start, end)` slices of `inputs`, in order, each within both limits (an input
    over the token budget alone gets a batch of its own)."""
    start, tokens = 0, 0
    for index, text in enumerate(inputs):
        cost = estimate_tokens(text)
        if index > start and (index - start >= MAX_INPUTS or tokens + cost > TOKEN_BUDGET):
            yield start, index
            start, tokens = index, 0
        tokens += cost
    if start < len(inputs):
        yield start, len(inputs)


async def embed_all(provider: str, req: EmbedRequest, send: Send) -> EmbedResult:
    """Every input's vector, in order, from as many requests as the limits take."""
    rows: list[bytes] = []
    prompt_tokens = 0
    for start, end in batches(req.inputs):
        batch_rows, tokens = await _embed_batch(provider, req, req.inputs[start:end], send)
        rows.extend(batch_rows)
        prompt_tokens += tokens
    usage = Usage(input_tokens=prompt_tokens, total_tokens=prompt_tokens)
    return pack_rows(provider, rows, expected=len(req.inputs), usage=usage)


async def _embed_batch(
    provider: str, req: EmbedRequest, inputs: list[str], send: Send
) -> tuple[list[bytes], int]:
    body: dict[str, Any] = {"model": req.model, "input": inputs, "output_dtype": "float"}
    if req.dimensions is not None:
        body["output_dimension"] = req.dimensions
    try:
        payload = await send(body)
    except BadRequest as exc:
        if len(inputs) < 2 or not _batch_too_large(exc):
            raise
        half = len(inputs) // 2
        first, first_tokens = await _embed_batch(provider, req, inputs[:half], send)
        second, second_tokens = await _embed_batch(provider, req, inputs[half:], send)
        return first + second, first_tokens + second_tokens
    return _rows(provider, payload, len(inputs)), _prompt_tokens(payload)


def _batch_too_large(error: BadRequest) -> bool:
    message = error.message.lower()
    return f" {_TOO_LARGE_CODE}:" in message or any(w in message for w in _TOO_LARGE_WORDS)


def _rows(provider: str, payload: dict[str, Any], expected: int) -> list[bytes]:
    items = payload.get("data")
    if not isinstance(items, list) or len(items) != expected:
        got = len(items) if isinstance(items, list) else 0
        raise InternalError(f"{provider}: expected {expected} embeddings, got {got}")
    ordered = sorted(enumerate(items), key=lambda pair: _index(pair[1], pair[0]))
    return [
        vector_bytes(provider, item.get("embedding") if isinstance(item, dict) else None)
        for _, item in ordered
    ]


def _index(item: Any, position: int) -> int:
    index = item.get("index") if isinstance(item, dict) else None
    return index if isinstance(index, int) else position


def _prompt_tokens(payload: dict[str, Any]) -> int:
    usage = payload.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else 0

"""How much one Voyage request may carry, and how a job is split to fit.

Voyage refuses (400) an embeddings request with more than 1,000 inputs or more
tokens in total than the model allows (1M for the lite models, 320K for
voyage-3/3.5/4 and voyage-2, 120K for the rest), and a rerank request with more
than 1,000 documents or more than 600K tokens counted as the query's tokens times
the documents plus the documents' own (300K for the first rerankers). A job past a
limit is sent as several requests, in order.

Tokens are estimated without Voyage's tokenizers, and never under: every
tokenizer Voyage uses (byte-level BPE for the current models, Llama 2's
SentencePiece with byte fallback for the older ones) makes at most one token per
UTF-8 byte, plus a start marker and a leading word piece. So an input counts as
its UTF-8 length plus 2. English runs about 4 bytes a token, so a batch planned
this way is a quarter of what the model would take: more requests for huge jobs,
never a refused one. An unknown model gets the smallest limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

__all__ = [
    "MAX_DOCUMENTS",
    "MAX_INPUTS",
    "embed_batches",
    "embed_token_limit",
    "estimate_tokens",
    "rerank_batches",
    "rerank_token_limit",
]

MAX_INPUTS: Final = 1000
MAX_DOCUMENTS: Final = 1000
# A start marker and a leading word piece a tokenizer may add to any text.
_MARKERS: Final = 2

_EMBED_LIMITS: Final[Mapping[str, int]] = {
    "voyage-4-lite": 1_000_000,
    "voyage-3.5-lite": 1_000_000,
    "voyage-3-lite": 1_000_000,
    "voyage-4": 320_000,
    "voyage-3.5": 320_000,
    "voyage-3": 320_000,
    "voyage-2": 320_000,
}
_EMBED_DEFAULT: Final = 120_000
_RERANK_LIMITS: Final[Mapping[str, int]] = {
    "rerank-2.5": 600_000,
    "rerank-2.5-lite": 600_000,
    "rerank-2": 600_000,
    "rerank-2-lite": 600_000,
}
_RERANK_DEFAULT: Final = 300_000

# (items in a request, their estimated tokens) → the tokens Voyage would count.
_Cost = Callable[[int, int], int]


def embed_token_limit(model: str) -> int:
    return _EMBED_LIMITS.get(model, _EMBED_DEFAULT)


def rerank_token_limit(model: str) -> int:
    return _RERANK_LIMITS.get(model, _RERANK_DEFAULT)


def estimate_tokens(text: str) -> int:
    """An upper bound of the tokens Voyage counts for `text`."""
    return len(text.encode()) + _MARKERS


def embed_batches(texts: Sequence[str], token_limit: int) -> list[range]:
    """Consecutive index ranges of `texts`, each within `MAX_INPUTS` and `token_limit`.

    A text estimated past the limit on its own still gets a request of its own:
    Voyage truncates it to the model's context, or says why it cannot.
    """
    return _pack([estimate_tokens(t) for t in texts], lambda count, tokens: tokens, token_limit)


def rerank_batches(query: str, documents: Sequence[str], token_limit: int) -> list[range]:
    """Consecutive index ranges of `documents`, each within `MAX_DOCUMENTS` and a
    token total of query x documents + documents within `token_limit`."""
    query_tokens = estimate_tokens(query)
    return _pack(
        [estimate_tokens(d) for d in documents],
        lambda count, tokens: query_tokens * count + tokens,
        token_limit,
        MAX_DOCUMENTS,
    )


def _pack(
    sizes: Sequence[int],
    cost: _Cost,
    token_limit: int,
    max_items: int = MAX_INPUTS,
) -> list[range]:
    batches: list[range] = []
    start = tokens = 0
    for index, size in enumerate(sizes):
        count = index - start
        if count and (count >= max_items or cost(count + 1, tokens + size) > token_limit):
            batches.append(range(start, index))
            start, tokens = index, 0
        tokens += size
    if start < len(sizes):
        batches.append(range(start, len(sizes)))
    return batches

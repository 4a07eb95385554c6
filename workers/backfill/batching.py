"""Group items into jobs that one provider request takes whole.

One job is one provider request, so the provider's rate budgets count jobs and
no job is refused for its size. A chunk closes when the next item would pass the
provider's item count or (with a margin) its tokens per request. Sizes are held
against the caps with the estimator's *limit* estimate, which never trusts a
calibration that would make texts look smaller than the heuristic says.

A text over the per-text cap (or over the per-request cap, which it could never
fit under) is truncated or refused as the user chose; an empty one is refused,
since providers answer 400 to it. Nothing is dropped without a `Rejection`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from workers.backfill.items import Item, Rejection
from workers.backfill.tokens import TokenEstimator, heuristic_tokens

__all__ = ["REQUEST_TOKEN_MARGIN", "BatchLimits", "Batcher", "Chunk", "split"]

# Share of max_request_tokens a chunk fills at most: our estimate is not the
# provider's tokenizer, and a request over its cap costs a 400 and a bisection.
REQUEST_TOKEN_MARGIN = 0.9


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_inputs: int  # texts in one job (= one provider request)
    max_input_tokens: int | None = None  # one text
    max_request_tokens: int | None = None  # all texts of one job

    def __post_init__(self) -> None:
        numbers = (self.max_inputs, self.max_input_tokens, self.max_request_tokens)
        if any(n is not None and n < 1 for n in numbers):
            raise ValueError(f"batch limits must be at least 1, got {numbers}")


@dataclass(slots=True)
class Chunk:
    items: list[Item]  # texts possibly truncated (Item with the cut text)
    tokens: int  # estimated (pacing estimate) sum
    truncated: int = 0  # how many items were cut
    # Which ids were cut, so that halves of a chunk still count them right.
    cut_ids: frozenset[str] = field(default_factory=frozenset)
    # Uncalibrated sum (`heuristic_tokens`): `estimator.calibrated(chunk.heuristic)` is
    # the pacing estimate with the calibration of the moment, without a pass over the texts.
    heuristic: int = 0


def split(chunk: Chunk, estimator: TokenEstimator) -> tuple[Chunk, Chunk]:
    """The two halves of a chunk of two or more items (a provider refused it as a
    whole; halving finds the one text at fault in log2(n) requests)."""
    if len(chunk.items) < 2:
        raise ValueError("a chunk of one item cannot be split")
    middle = len(chunk.items) // 2
    return (
        _chunk_of(chunk.items[:middle], chunk.cut_ids, estimator),
        _chunk_of(chunk.items[middle:], chunk.cut_ids, estimator),
    )


def _chunk_of(items: list[Item], cut_ids: frozenset[str], estimator: TokenEstimator) -> Chunk:
    cut = frozenset(item.id for item in items if item.id in cut_ids)
    raw = [heuristic_tokens(item.text) for item in items]
    tokens = sum(estimator.calibrated(n) for n in raw)
    return Chunk(items, tokens, len(cut), cut, sum(raw))


class Batcher:
    """Items in, provider-sized chunks out, in input order."""

    def __init__(
        self,
        limits: BatchLimits,
        estimator: TokenEstimator,
        *,
        long_texts: Literal["truncate", "refuse"],
    ) -> None:
        self.limits = limits
        self.estimator = estimator
        self.long_texts = long_texts
        request_cap = limits.max_request_tokens
        # The most one text may hold: a text over the request cap can never be sent either.
        caps = [c for c in (limits.max_input_tokens, request_cap) if c is not None]
        self._text_cap = min(caps) if caps else None
        self._request_budget = (
            None if request_cap is None else max(1, math.floor(request_cap * REQUEST_TOKEN_MARGIN))
        )
        self._items: list[Item] = []
        self._cut: set[str] = set()
        self._limit_tokens = 0  # limit estimate of the pending items
        self._tokens = 0  # pacing estimate of the pending items
        self._heuristic = 0  # and their uncalibrated sum

    @property
    def pending(self) -> int:
        """Items held for the next chunk."""
        return len(self._items)

    def add(self, item: Item) -> tuple[list[Chunk], Rejection | None]:
        """Take one item: the chunks it closed (ready to send), or why it is refused."""
        if not item.text.strip():
            return [], Rejection(item.id, "empty_text", "the text is empty or only whitespace")
        estimator = self.estimator
        raw = heuristic_tokens(item.text)
        tokens = estimator.for_limits(raw)
        cut = False
        if self._text_cap is not None and tokens > self._text_cap:
            refusal = Rejection(
                item.id,
                "too_long",
                f"about {tokens:,} tokens; the model takes at most {self._text_cap:,} per text",
            )
            if self.long_texts == "refuse":
                return [], refusal
            text = estimator.truncate(item.text, self._text_cap)
            if not text.strip():
                return [], refusal  # not even a word fits (cannot happen with sane caps)
            item, cut = replace(item, text=text), True
            raw = heuristic_tokens(text)
            tokens = estimator.for_limits(raw)
        ready: list[Chunk] = []
        if self._items and not self._fits(tokens):
            ready.append(self._close())
        self._items.append(item)
        self._limit_tokens += tokens
        self._tokens += estimator.calibrated(raw)
        self._heuristic += raw
        if cut:
            self._cut.add(item.id)
        if len(self._items) >= self.limits.max_inputs:
            ready.append(self._close())
        return ready, None

    def flush(self) -> Chunk | None:
        """Whatever is pending as one chunk (end of input, or nothing more for a while)."""
        return self._close() if self._items else None

    def split(self, chunk: Chunk) -> tuple[Chunk, Chunk]:
        """The two halves of `chunk` (see `split`)."""
        return split(chunk, self.estimator)

    def _fits(self, tokens: int) -> bool:
        if len(self._items) + 1 > self.limits.max_inputs:
            return False
        budget = self._request_budget
        return budget is None or self._limit_tokens + tokens <= budget

    def _close(self) -> Chunk:
        items, self._items = self._items, []
        cut, self._cut = frozenset(self._cut), set()
        tokens, heuristic = self._tokens, self._heuristic
        self._tokens = self._heuristic = self._limit_tokens = 0
        return Chunk(items, tokens, len(cut), cut, heuristic)

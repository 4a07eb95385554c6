"""Anthropic's rate-limit headers: `anthropic-ratelimit-<budget>-{limit,remaining,reset}`.

Budgets are `requests`, `tokens`, `input-tokens` and `output-tokens`; resets are
RFC 3339 instants (`2025-08-21T12:40:59Z`), read as seconds from now. For
tokens, the combined `tokens` budget is the one that bites first (Anthropic
documents it as the most restrictive in effect), so it is taken whole when sent;
responses without it report input tokens, the budget a request's size is
charged against up front.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from contracts.frames import RateLimit
from providers.core.ratelimits import count, rate_limit, seconds_until

__all__ = ["anthropic_rate_limits"]

_PREFIX: Final = "anthropic-ratelimit-"
_TOKEN_BUDGETS: Final = ("tokens", "input-tokens")


def _budget(
    headers: Mapping[str, str], budget: str, now: float | None
) -> tuple[int | None, int | None, float | None]:
    return (
        count(headers.get(f"{_PREFIX}{budget}-limit")),
        count(headers.get(f"{_PREFIX}{budget}-remaining")),
        seconds_until(headers.get(f"{_PREFIX}{budget}-reset"), now),
    )


def anthropic_rate_limits(
    headers: Mapping[str, str], *, now: float | None = None
) -> RateLimit | None:
    """The budgets `headers` report, resets counted from `now` (unix time; default
    the clock), or None when they report none."""
    requests = _budget(headers, "requests", now)
    tokens: tuple[int | None, int | None, float | None] = (None, None, None)
    for budget in _TOKEN_BUDGETS:
        tokens = _budget(headers, budget, now)
        if any(value is not None for value in tokens):
            break
    return rate_limit(
        limit_requests=requests[0],
        remaining_requests=requests[1],
        reset_requests=requests[2],
        limit_tokens=tokens[0],
        remaining_tokens=tokens[1],
        reset_tokens=tokens[2],
    )

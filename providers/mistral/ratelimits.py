"""Mistral's rate-limit headers, in the spellings its gateways have used.

* Now: `x-ratelimit-{limit,remaining}-req-minute` and
  `x-ratelimit-{limit,remaining}-tokens-minute` (plus `-month` budgets and the
  request's `x-ratelimit-tokens-query-cost`). No reset is sent.
* Before: `x-ratelimitbysize-{limit,remaining}-minute` for tokens, and the
  unprefixed `ratelimitbysize-{limit,remaining,reset}` for the same minute
  window, with its reset in seconds.

Only the per-minute budgets are a rate; a spent monthly budget is a quota, which
the error table answers as `quota_exceeded` (providers/mistral/errors.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from contracts.frames import RateLimit
from providers.core.ratelimits import count, duration, rate_limit

__all__ = ["mistral_rate_limits"]

# (limit, remaining) header names of the per-minute token budget, newest first.
_TOKEN_PAIRS: Final = (
    ("x-ratelimit-limit-tokens-minute", "x-ratelimit-remaining-tokens-minute"),
    ("x-ratelimitbysize-limit-minute", "x-ratelimitbysize-remaining-minute"),
    ("ratelimitbysize-limit", "ratelimitbysize-remaining"),
)
_OLD_RESET: Final = "ratelimitbysize-reset"


def mistral_rate_limits(headers: Mapping[str, str]) -> RateLimit | None:
    limit_tokens = remaining_tokens = None
    for limit_name, remaining_name in _TOKEN_PAIRS:
        limit_tokens = count(headers.get(limit_name))
        remaining_tokens = count(headers.get(remaining_name))
        if limit_tokens is not None or remaining_tokens is not None:
            break
    return rate_limit(
        limit_requests=count(headers.get("x-ratelimit-limit-req-minute")),
        remaining_requests=count(headers.get("x-ratelimit-remaining-req-minute")),
        limit_tokens=limit_tokens,
        remaining_tokens=remaining_tokens,
        reset_tokens=duration(headers.get(_OLD_RESET)),
    )

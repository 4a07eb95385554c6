"""A provider's rate-limit headers, read into the wire's `RateLimit`.

Every provider reports its budget in headers of its own making; a spec names the
reader for its dialect (`ProviderSpec.rate_limits`), and this module holds the
OpenAI family's, which most servers copy: `x-ratelimit-{limit,remaining,reset}-
{requests,tokens}`, resets as Go durations (`1s`, `6m0s`, `20ms`, `1m30.5s`) or
plain seconds. Azure sends only the `remaining` pair, Groq and OpenRouter the
whole set; providers that send none (Gemini, Bedrock, Cohere) read as None.

Readers take headers with lowercase names (what `ApiClient` keeps) and never
raise: a value that does not parse is left out, as if the provider had not sent
it, because a garbled header must not fail an answered job. The pieces they are
built from (`count`, `duration`, `seconds_until`, `rate_limit`) are shared with
the readers in provider folders.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final

from contracts.frames import RateLimit

__all__ = [
    "RateLimitReader",
    "count",
    "duration",
    "openai_rate_limits",
    "rate_limit",
    "seconds_until",
]

RateLimitReader = Callable[[Mapping[str, str]], RateLimit | None]

_COUNT: Final = re.compile(r"\d{1,18}")
# Go's time.Duration.String(), the form OpenAI's gateway prints: one or more
# number-unit pairs, largest unit first ("1h2m3.5s"), "0s" for nothing.
_DURATION: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:h|ms|m|s|us|µs|μs|ns))+")
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|μs|ns)")
_UNIT_SECONDS: Final = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ns": 1e-9,
}


def count(value: str | None) -> int | None:
    """A non-negative whole number of requests or tokens, or None."""
    if value is None:
        return None
    text = value.strip()
    return int(text) if _COUNT.fullmatch(text) else None


def duration(value: str | None) -> float | None:
    """Seconds from a Go duration (`6m0s`, `20ms`) or a plain number of seconds, or None."""
    if value is None:
        return None
    text = value.strip()
    if _DURATION.fullmatch(text):
        return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def seconds_until(value: str | None, now: float | None = None) -> float | None:
    """Seconds from `now` (unix time; default the clock) to an RFC 3339 instant, or None.

    An instant already past reads 0: that budget is whole again. One without a
    zone is taken as UTC, as the providers that send such instants mean it.
    """
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = time.time() if now is None else now
    return max(0.0, when.timestamp() - reference)


def rate_limit(
    *,
    limit_requests: int | None = None,
    remaining_requests: int | None = None,
    reset_requests: float | None = None,
    limit_tokens: int | None = None,
    remaining_tokens: int | None = None,
    reset_tokens: float | None = None,
) -> RateLimit | None:
    """The `RateLimit` of what was read, or None when nothing was."""
    values = (
        limit_requests,
        remaining_requests,
        reset_requests,
        limit_tokens,
        remaining_tokens,
        reset_tokens,
    )
    if all(value is None for value in values):
        return None
    return RateLimit(
        limit_requests=limit_requests,
        remaining_requests=remaining_requests,
        reset_requests=reset_requests,
        limit_tokens=limit_tokens,
        remaining_tokens=remaining_tokens,
        reset_tokens=reset_tokens,
    )


def openai_rate_limits(headers: Mapping[str, str]) -> RateLimit | None:
    """OpenAI's `x-ratelimit-*` (and every server that copies them), or None."""
    return rate_limit(
        limit_requests=count(headers.get("x-ratelimit-limit-requests")),
        remaining_requests=count(headers.get("x-ratelimit-remaining-requests")),
        reset_requests=duration(headers.get("x-ratelimit-reset-requests")),
        limit_tokens=count(headers.get("x-ratelimit-limit-tokens")),
        remaining_tokens=count(headers.get("x-ratelimit-remaining-tokens")),
        reset_tokens=duration(headers.get("x-ratelimit-reset-tokens")),
    )

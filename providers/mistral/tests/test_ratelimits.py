"""Mistral's rate-limit headers, in the gateway's current and older spellings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from contracts.frames import RateLimit
from providers.mistral import SPEC
from providers.mistral.mock_errors import ratelimit_headers
from providers.mistral.ratelimits import mistral_rate_limits
from providers.mock.ratelimit import Budget

# A chat answer's headers today: per-minute requests and tokens, the month, the cost.
CURRENT = {
    "x-ratelimit-limit-tokens-minute": "5000000",
    "x-ratelimit-remaining-tokens-minute": "4999911",
    "x-ratelimit-tokens-query-cost": "52",
    "x-ratelimit-limit-req-minute": "720",
    "x-ratelimit-remaining-req-minute": "717",
    "x-ratelimit-limit-tokens-month": "1000000000",
    "x-ratelimit-remaining-tokens-month": "999812345",
}
# The older gateway: tokens per minute under two names, and a reset in seconds.
OLDER = {
    "ratelimitbysize-limit": "500000",
    "ratelimitbysize-remaining": "499975",
    "ratelimitbysize-reset": "26",
    "ratelimitbysize-query-cost": "25",
    "x-ratelimitbysize-limit-minute": "500000",
    "x-ratelimitbysize-remaining-minute": "499975",
    "x-ratelimitbysize-limit-month": "1000000000",
    "x-ratelimitbysize-remaining-month": "999999975",
}


def test_current_headers() -> None:
    assert mistral_rate_limits(CURRENT) == RateLimit(
        limit_requests=720,
        remaining_requests=717,
        limit_tokens=5_000_000,
        remaining_tokens=4_999_911,
    )


def test_older_headers() -> None:
    assert mistral_rate_limits(OLDER) == RateLimit(
        limit_tokens=500_000, remaining_tokens=499_975, reset_tokens=26.0
    )


def test_the_unprefixed_older_pair_alone() -> None:
    only = {k: v for k, v in OLDER.items() if not k.startswith("x-")}
    assert mistral_rate_limits(only) == RateLimit(
        limit_tokens=500_000, remaining_tokens=499_975, reset_tokens=26.0
    )


def test_a_month_is_not_a_rate() -> None:
    month = {"x-ratelimit-remaining-tokens-month": "0", "x-ratelimit-limit-tokens-month": "9"}
    assert mistral_rate_limits(month) is None


def test_the_mocks_headers_read_back_as_its_budget() -> None:
    budget = Budget(
        allowed=True,
        retry_after=0.0,
        limit_requests=120,
        remaining_requests=77,
        reset_requests=21.5,
        limit_tokens=50_000,
        remaining_tokens=48_000,
        reset_tokens=2.4,
    )
    limits = SPEC.rate_limits(ratelimit_headers(budget, 2000))
    assert limits == RateLimit(
        limit_requests=120, remaining_requests=77, limit_tokens=50_000, remaining_tokens=48_000
    )


@given(st.dictionaries(st.sampled_from(sorted({**CURRENT, **OLDER})), st.text(max_size=30)))
def test_no_header_value_raises(headers: dict[str, str]) -> None:
    limits = mistral_rate_limits(headers)
    assert limits is None or isinstance(limits, RateLimit)

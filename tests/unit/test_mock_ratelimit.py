"""The mock providers' per-key token buckets (providers/mock/ratelimit.py)."""

from __future__ import annotations

import pytest

from providers.mock.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_refill_continuously_to_the_per_minute_limit() -> None:
    clock = Clock()
    limiter = RateLimiter(requests_per_minute=2, clock=clock)
    first, second, third = (limiter.take("k", 0) for _ in range(3))
    assert first.allowed and first.remaining_requests == 1
    assert second.allowed and second.remaining_requests == 0
    assert second.reset_requests == pytest.approx(60.0)  # two requests to refill, 30 s each
    assert not third.allowed and third.retry_after == pytest.approx(30.0)
    clock.now += 30.0
    again = limiter.take("k", 0)
    assert again.allowed and again.remaining_requests == 0


def test_a_refused_request_is_not_charged() -> None:
    clock = Clock()
    limiter = RateLimiter(requests_per_minute=10, tokens_per_minute=100, clock=clock)
    assert limiter.take("k", 90).allowed
    refused = limiter.take("k", 20)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(6.0)  # 10 tokens at 100 a minute
    assert (refused.remaining_requests, refused.remaining_tokens) == (9, 10)
    assert limiter.take("k", 10).allowed


def test_the_longer_wait_of_the_two_budgets_is_reported() -> None:
    clock = Clock()
    limiter = RateLimiter(requests_per_minute=1, tokens_per_minute=600, clock=clock)
    assert limiter.take("k", 600).allowed
    refused = limiter.take("k", 300)
    # The request bucket refills in 60 s, the 300 tokens in 30 s.
    assert not refused.allowed and refused.retry_after == pytest.approx(60.0)


def test_a_request_above_the_whole_budget_waits_for_a_full_bucket_then_fits() -> None:
    clock = Clock()
    limiter = RateLimiter(tokens_per_minute=100, clock=clock)
    assert limiter.take("k", 40).allowed
    refused = limiter.take("k", 500)
    assert not refused.allowed and refused.retry_after == pytest.approx(24.0)
    clock.now += refused.retry_after
    fits = limiter.take("k", 500)
    assert fits.allowed and fits.remaining_tokens == 0


def test_keys_have_separate_budgets_and_an_off_budget_reads_zero() -> None:
    limiter = RateLimiter(tokens_per_minute=10, clock=Clock())
    assert limiter.take("a", 10).allowed
    other = limiter.take("b", 10)
    assert other.allowed
    assert (other.limit_requests, other.remaining_requests, other.reset_requests) == (0, 0, 0.0)
    assert not limiter.take("a", 1).allowed
    assert not RateLimiter().enabled and RateLimiter(requests_per_minute=1).enabled


def test_negative_limits_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        RateLimiter(requests_per_minute=-1)

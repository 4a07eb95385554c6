"""Anthropic's `anthropic-ratelimit-*` headers read into `RateLimit`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.frames import RateLimit
from providers.anthropic import SPEC
from providers.anthropic.ratelimits import anthropic_rate_limits

NOW = 1_755_780_000.0  # 2025-08-21T12:40:00Z

# A Messages answer's budget: every family, resets as RFC 3339 instants.
ANSWER = {
    "anthropic-ratelimit-requests-limit": "1000",
    "anthropic-ratelimit-requests-remaining": "998",
    "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:01Z",
    "anthropic-ratelimit-tokens-limit": "96000",
    "anthropic-ratelimit-tokens-remaining": "95210",
    "anthropic-ratelimit-tokens-reset": "2025-08-21T12:40:30Z",
    "anthropic-ratelimit-input-tokens-limit": "80000",
    "anthropic-ratelimit-input-tokens-remaining": "79400",
    "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:20Z",
    "anthropic-ratelimit-output-tokens-limit": "16000",
    "anthropic-ratelimit-output-tokens-remaining": "15810",
    "anthropic-ratelimit-output-tokens-reset": "2025-08-21T12:40:10Z",
}
INPUT_ONLY = {k: v for k, v in ANSWER.items() if "-ratelimit-tokens-" not in k}


def test_the_combined_token_budget_is_preferred() -> None:
    assert anthropic_rate_limits(ANSWER, now=NOW) == RateLimit(
        limit_requests=1000,
        remaining_requests=998,
        reset_requests=1.0,
        limit_tokens=96000,
        remaining_tokens=95210,
        reset_tokens=30.0,
    )


def test_without_it_input_tokens_are_the_token_budget() -> None:
    limits = anthropic_rate_limits(INPUT_ONLY, now=NOW)
    assert limits is not None
    assert (limits.limit_tokens, limits.remaining_tokens, limits.reset_tokens) == (
        80000,
        79400,
        20.0,
    )


def test_a_reset_already_past_is_zero() -> None:
    limits = anthropic_rate_limits(ANSWER, now=NOW + 3600)
    assert limits is not None and limits.reset_requests == 0.0 and limits.reset_tokens == 0.0


def test_no_headers_and_other_providers_headers_are_none() -> None:
    assert anthropic_rate_limits({}) is None
    assert anthropic_rate_limits({"x-ratelimit-remaining-requests": "5"}) is None


def test_garbled_values_are_left_out() -> None:
    garbled = {**ANSWER, "anthropic-ratelimit-requests-reset": "in a minute"}
    garbled["anthropic-ratelimit-tokens-remaining"] = "-3"
    limits = anthropic_rate_limits(garbled, now=NOW)
    assert limits is not None
    assert (limits.reset_requests, limits.remaining_tokens) == (None, None)
    assert (limits.limit_requests, limits.limit_tokens) == (1000, 96000)


@given(st.dictionaries(st.sampled_from(sorted(ANSWER)), st.text(max_size=40)))
def test_no_header_value_raises(headers: dict[str, str]) -> None:
    limits = anthropic_rate_limits(headers, now=NOW)
    assert limits is None or isinstance(limits, RateLimit)


def test_the_spec_reads_them() -> None:
    limits = SPEC.rate_limits(ANSWER)
    assert limits is not None and limits.limit_tokens == 96000


@pytest.mark.parametrize("reset", ["2025-08-21T12:41:00.500Z", "2025-08-21T14:41:00.5+02:00"])
def test_fractional_and_offset_instants(reset: str) -> None:
    headers = {"anthropic-ratelimit-requests-reset": reset}
    limits = anthropic_rate_limits(headers, now=NOW)
    assert limits is not None and limits.reset_requests == pytest.approx(60.5)

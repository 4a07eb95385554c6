"""Rate-limit headers: the OpenAI-family reader, its pieces, and what ApiClient keeps.

Header shapes are the ones OpenAI's gateway, Azure and OpenAI-compatible servers
send (Go durations for resets, Azure's `remaining` pair alone); the capture
tests run ApiClient over `httpx.MockTransport`, for every way a response
arrives: plain, JSON, streamed, refused, and from the concurrent requests an
adapter fans one job out to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.errors import RateLimited
from contracts.frames import RateLimit
from providers.core.api import (
    ApiClient,
    forget_last_response,
    last_rate_limit_headers,
    last_request_id,
)
from providers.core.fanout import in_order
from providers.core.http import HttpClientPool
from providers.core.ratelimits import count, duration, openai_rate_limits, seconds_until
from providers.core.types import Secret
from providers.mock.ratelimit import Budget
from providers.openai.errors import ERRORS
from providers.openai.mock_errors import ratelimit_headers

SECRET = Secret({"api_key": "sk-test-ratelimits"})

# An OpenAI answer's headers (names as sent; the reader sees them lowercased).
OPENAI = {
    "x-ratelimit-limit-requests": "5000",
    "x-ratelimit-limit-tokens": "160000",
    "x-ratelimit-limit-tokens_usage_based": "160000",
    "x-ratelimit-remaining-requests": "4999",
    "x-ratelimit-remaining-tokens": "159976",
    "x-ratelimit-remaining-tokens_usage_based": "159976",
    "x-ratelimit-reset-requests": "12ms",
    "x-ratelimit-reset-tokens": "6m0s",
}


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("1s", 1.0),
            ("6m0s", 360.0),
            ("20ms", 0.02),
            ("1m30.5s", 90.5),
            ("2m59.56s", 179.56),
            ("1h2m3s", 3723.0),
            ("0s", 0.0),
            ("250us", 0.00025),
            ("7", 7.0),
            ("0.5", 0.5),
            (" 3s ", 3.0),
        ],
    )
    def test_go_durations_and_plain_seconds(self, text: str, seconds: float) -> None:
        assert duration(text) == pytest.approx(seconds)

    @pytest.mark.parametrize(
        "text", ["", "soon", "-1", "-3s", "1e999", "nan", "inf", "3 s", "5x", "m5s", "1s2"]
    )
    def test_anything_else_is_not_a_duration(self, text: str) -> None:
        assert duration(text) is None

    @pytest.mark.parametrize(("text", "value"), [("0", 0), ("159976", 159976), (" 12 ", 12)])
    def test_counts(self, text: str, value: int) -> None:
        assert count(text) == value

    @pytest.mark.parametrize("text", ["", "-1", "1.5", "12k", "0x10", "1" * 40])
    def test_non_counts(self, text: str) -> None:
        assert count(text) is None

    def test_rfc3339_instants_become_seconds_from_now(self) -> None:
        now = 1_755_780_000.0  # 2025-08-21T12:40:00Z
        assert seconds_until("2025-08-21T12:40:59Z", now) == pytest.approx(59.0)
        assert seconds_until("2025-08-21T14:40:59+02:00", now) == pytest.approx(59.0)
        assert seconds_until("2025-08-21T12:40:59", now) == pytest.approx(59.0)  # taken as UTC
        assert seconds_until("2025-08-21T12:39:00Z", now) == 0.0  # already whole again
        assert seconds_until("yesterday", now) is None


class TestOpenAIReader:
    def test_a_whole_set(self) -> None:
        assert openai_rate_limits(OPENAI) == RateLimit(
            limit_requests=5000,
            remaining_requests=4999,
            reset_requests=0.012,
            limit_tokens=160000,
            remaining_tokens=159976,
            reset_tokens=360.0,
        )

    def test_azure_sends_only_what_remains(self) -> None:
        azure = {"x-ratelimit-remaining-requests": "119", "x-ratelimit-remaining-tokens": "119990"}
        assert openai_rate_limits(azure) == RateLimit(
            remaining_requests=119, remaining_tokens=119990
        )

    def test_no_headers_is_no_rate_limit(self) -> None:
        assert openai_rate_limits({}) is None
        assert openai_rate_limits({"x-ratelimit-remaining-requests": "lots"}) is None

    def test_a_garbled_value_is_left_out_and_the_rest_kept(self) -> None:
        garbled = {
            **OPENAI,
            "x-ratelimit-reset-tokens": "6 minutes",
            "x-ratelimit-limit-tokens": "",
        }
        limits = openai_rate_limits(garbled)
        assert limits is not None
        assert (limits.limit_tokens, limits.reset_tokens) == (None, None)
        assert (limits.limit_requests, limits.remaining_tokens) == (5000, 159976)

    @given(st.dictionaries(st.sampled_from(sorted(OPENAI)), st.text(max_size=30)))
    def test_no_header_value_raises(self, headers: dict[str, str]) -> None:
        limits = openai_rate_limits(headers)
        assert limits is None or isinstance(limits, RateLimit)

    def test_the_openai_mocks_headers_read_back_as_its_budget(self) -> None:
        budget = Budget(
            allowed=True,
            retry_after=0.0,
            limit_requests=60,
            remaining_requests=41,
            reset_requests=19.0,
            limit_tokens=90000,
            remaining_tokens=88500,
            reset_tokens=1.0,
        )
        assert openai_rate_limits(ratelimit_headers(budget, 1500)) == RateLimit(
            limit_requests=60,
            remaining_requests=41,
            reset_requests=19.0,
            limit_tokens=90000,
            remaining_tokens=88500,
            reset_tokens=1.0,
        )


# -- what ApiClient keeps --------------------------------------------------------------


def _answer(request: httpx.Request) -> httpx.Response:
    """200 with OpenAI's headers; the path's last part becomes the remaining requests,
    `/limited` is a 429 that says nothing is left."""
    name = request.url.path.rsplit("/", 1)[-1]
    headers = {**OPENAI, "x-request-id": f"req-{name}", "Content-Type": "application/json"}
    if name == "limited":
        headers["x-ratelimit-remaining-requests"] = "0"
        headers["retry-after-ms"] = "1500"
        body = b'{"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}'
        return httpx.Response(429, headers=headers, content=body)
    if name.isdigit():
        headers["x-ratelimit-remaining-requests"] = name
    if name == "bare":
        headers = {"Content-Type": "application/json"}
    return httpx.Response(200, headers=headers, content=b'{"ok": true}')


@pytest.fixture
async def api() -> AsyncIterator[ApiClient]:
    async with HttpClientPool(transport=httpx.MockTransport(_answer)) as pool:
        yield ApiClient("openai", pool, "https://api.test/v1", lambda _: httpx.Auth(), ERRORS)


class TestCapture:
    async def test_plain_and_json_answers(self, api: ApiClient) -> None:
        forget_last_response()
        await api.send("GET", "/plain", SECRET)
        assert last_rate_limit_headers()["x-ratelimit-reset-tokens"] == "6m0s"
        assert last_request_id() == "req-plain"
        await api.json("POST", "/7", SECRET, {})
        assert last_rate_limit_headers()["x-ratelimit-remaining-requests"] == "7"

    async def test_only_rate_limit_headers_are_kept(self, api: ApiClient) -> None:
        forget_last_response()
        await api.send("GET", "/plain", SECRET)
        assert set(last_rate_limit_headers()) == set(OPENAI)

    async def test_streamed_answers(self, api: ApiClient) -> None:
        forget_last_response()
        async with api.stream("POST", "/3", SECRET, {}) as response:
            await response.aread()
        assert last_rate_limit_headers()["x-ratelimit-remaining-requests"] == "3"

    async def test_a_refusal_keeps_its_headers(self, api: ApiClient) -> None:
        forget_last_response()
        with pytest.raises(RateLimited) as refused:
            await api.json("POST", "/limited", SECRET, {})
        assert refused.value.retry_after == 1.5
        assert last_rate_limit_headers()["x-ratelimit-remaining-requests"] == "0"
        forget_last_response()
        with pytest.raises(RateLimited):
            async with api.stream("POST", "/limited", SECRET, {}):
                pass
        assert last_rate_limit_headers()["x-ratelimit-remaining-requests"] == "0"

    async def test_a_response_without_them_replaces_older_ones(self, api: ApiClient) -> None:
        forget_last_response()
        await api.send("GET", "/plain", SECRET)
        await api.send("GET", "/bare", SECRET)
        assert last_rate_limit_headers() == {}

    async def test_forgetting_clears_them(self, api: ApiClient) -> None:
        await api.send("GET", "/plain", SECRET)
        forget_last_response()
        assert last_rate_limit_headers() == {} and last_request_id() is None

    async def test_requests_an_adapter_fans_out_report_to_the_job(self, api: ApiClient) -> None:
        forget_last_response()
        await in_order(lambda n: api.send("GET", f"/{n}", SECRET), [5, 4], limit=1)
        # Sent one after the other from tasks of their own: the last one's remain.
        assert last_rate_limit_headers()["x-ratelimit-remaining-requests"] == "4"
        assert last_request_id() == "req-4"

    async def test_jobs_do_not_see_each_others(self, api: ApiClient) -> None:
        async def job(n: int) -> str:
            forget_last_response()
            await api.send("GET", f"/{n}", SECRET)
            await asyncio.sleep(0)
            return last_rate_limit_headers()["x-ratelimit-remaining-requests"]

        assert list(await asyncio.gather(job(11), job(12))) == ["11", "12"]

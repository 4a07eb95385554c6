"""Retry policy: header parsing, what is retried, waits, deadlines, streams."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from contracts.errors import (
    BadRequest,
    FleetError,
    ProviderUnavailable,
    RateLimited,
)
from providers.core.types import Secret, StreamEvent, TextDelta
from providers.openai.adapter import ERRORS
from providers.retry import (
    RetryPolicy,
    call_with_retry,
    retry_after_from_headers,
    stream_with_retry,
)

FAST = RetryPolicy(max_attempts=4, backoff_base=0.001, backoff_cap=0.002)
SECRET = Secret({"api_key": "sk-test"})


class Calls:
    """A callable that raises the queued errors, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.count = 0

    async def __call__(self) -> str:
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def http_error(status: int, body: bytes = b"{}", **headers: str) -> FleetError:
    hdrs = httpx.Headers({k.replace("_", "-"): v for k, v in headers.items()})
    return ERRORS.from_response("openai", status, hdrs, body, SECRET)


# -- retry_after_from_headers ------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after-ms": "junk", "retry-after": "4"}, 4.0),
        ({"retry-after-ms": "-5", "retry-after": "4"}, 4.0),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),  # in the past
        ({}, None),
    ],
)
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_from_headers(httpx.Headers(headers)) == expected


def test_retry_after_http_date_in_future() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    value = retry_after_from_headers(httpx.Headers({"retry-after": format_datetime(when, True)}))
    assert value is not None
    assert 28 <= value <= 30


# -- call_with_retry -----------------------------------------------------------------


async def test_429_then_success_waits_for_retry_after_ms() -> None:
    fn = Calls(http_error(429, retry_after_ms="20"))
    waits: list[tuple[type[FleetError], float]] = []
    started = time.monotonic()
    result = await call_with_retry(FAST, fn, on_retry=lambda e, w: waits.append((type(e), w)))
    assert result == "ok"
    assert fn.count == 2
    assert waits == [(RateLimited, 0.02)]
    assert time.monotonic() - started >= 0.018


async def test_backoff_used_without_retry_after() -> None:
    fn = Calls(http_error(503), http_error(502))
    waits: list[float] = []
    assert await call_with_retry(FAST, fn, on_retry=lambda e, w: waits.append(w)) == "ok"
    assert len(waits) == 2
    assert all(0 <= w <= 0.002 for w in waits)


@pytest.mark.parametrize(
    "error",
    [
        http_error(400),
        http_error(401),
        http_error(403),
        http_error(404),
        http_error(413),
        http_error(422),
        http_error(402),
        http_error(429, b'{"error":{"code":"insufficient_quota","message":"pay up"}}'),
        http_error(429, b'{"error":{"code":"insufficient_quota"}}', x_should_retry="true"),
        http_error(503, x_should_retry="false"),
    ],
    ids=lambda e: f"{e.provider_status}-{type(e).__name__}-{e.retryable}",
)
async def test_permanent_errors_are_not_retried(error: FleetError) -> None:
    fn = Calls(error)
    retried: list[float] = []
    with pytest.raises(type(error)) as info:
        await call_with_retry(FAST, fn, on_retry=lambda e, w: retried.append(w))
    assert info.value is error
    assert fn.count == 1
    assert retried == []


async def test_x_should_retry_true_makes_a_400_retryable() -> None:
    fn = Calls(http_error(400, x_should_retry="true"))
    assert await call_with_retry(FAST, fn) == "ok"
    assert fn.count == 2


async def test_non_fleet_errors_propagate_immediately() -> None:
    fn = Calls(ValueError("bug"))
    with pytest.raises(ValueError):
        await call_with_retry(FAST, fn)
    assert fn.count == 1


async def test_gives_up_after_max_attempts_with_last_error() -> None:
    errors = [ProviderUnavailable(f"down {i}") for i in range(5)]
    fn = Calls(*errors)
    with pytest.raises(ProviderUnavailable) as info:
        await call_with_retry(FAST, fn)
    assert fn.count == 4
    assert info.value is errors[3]


async def test_retry_after_above_cap_gives_up() -> None:
    policy = RetryPolicy(max_retry_after=1.0)
    fn = Calls(RateLimited("slow down", retry_after=120.0))
    started = time.monotonic()
    with pytest.raises(RateLimited):
        await call_with_retry(policy, fn)
    assert fn.count == 1
    assert time.monotonic() - started < 0.5


async def test_deadline_stops_retries_without_sleeping_past_it() -> None:
    fn = Calls(*(RateLimited("busy", retry_after=0.05) for _ in range(10)))
    deadline = time.monotonic() + 0.12
    with pytest.raises(RateLimited):
        await call_with_retry(RetryPolicy(max_attempts=10), fn, deadline=deadline)
    assert time.monotonic() <= deadline + 0.02
    # Tries at ~0 and ~0.05 s, maybe ~0.10 s; never a sleep that ends past 0.12 s.
    assert fn.count in (2, 3)


async def test_deadline_already_passed_means_single_attempt() -> None:
    fn = Calls(ProviderUnavailable("down"))
    with pytest.raises(ProviderUnavailable):
        await call_with_retry(FAST, fn, deadline=time.monotonic() - 1)
    assert fn.count == 1


# -- stream_with_retry -----------------------------------------------------------------


class Streams:
    """Opens fake streams: each script is a list of events/exceptions."""

    def __init__(self, *scripts: list[StreamEvent | Exception]) -> None:
        self.scripts = list(scripts)
        self.opened = 0
        self.closed = 0

    def __call__(self) -> AsyncIterator[StreamEvent]:
        self.opened += 1
        return self._run(self.scripts.pop(0))

    async def _run(self, script: list[StreamEvent | Exception]) -> AsyncIterator[StreamEvent]:
        try:
            for item in script:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed += 1


async def collect(it: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [e async for e in it]


async def test_stream_retried_before_first_event() -> None:
    opener = Streams(
        [http_error(429, retry_after_ms="1")],
        [ProviderUnavailable("dropped before any token")],
        [TextDelta("a"), TextDelta("b")],
    )
    retries: list[float] = []
    events = await collect(stream_with_retry(FAST, opener, on_retry=lambda e, w: retries.append(w)))
    assert events == [TextDelta("a"), TextDelta("b")]
    assert opener.opened == 3
    assert opener.closed == 3
    assert len(retries) == 2


async def test_stream_not_retried_after_first_event() -> None:
    boom = ProviderUnavailable("dropped mid-stream")
    opener = Streams([TextDelta("a"), boom], [TextDelta("never")])
    seen: list[StreamEvent] = []
    with pytest.raises(ProviderUnavailable) as info:
        async for event in stream_with_retry(FAST, opener):
            seen.append(event)
    assert info.value is boom
    assert seen == [TextDelta("a")]
    assert opener.opened == 1


async def test_stream_permanent_error_not_retried() -> None:
    opener = Streams([BadRequest("nope")], [TextDelta("never")])
    with pytest.raises(BadRequest):
        await collect(stream_with_retry(FAST, opener))
    assert opener.opened == 1


async def test_closing_outer_stream_closes_inner() -> None:
    opener = Streams([TextDelta("a"), TextDelta("b"), TextDelta("c")])
    outer = stream_with_retry(FAST, opener)
    assert await anext(outer) == TextDelta("a")
    await outer.aclose()
    assert opener.closed == 1


async def test_empty_stream_yields_nothing() -> None:
    opener = Streams([])
    assert await collect(stream_with_retry(FAST, opener)) == []
    assert opener.closed == 1


async def test_lambda_returning_a_coroutine_is_awaited() -> None:
    """Workers pass `lambda: provider.chat(...)`; the result must be the value, not a coroutine."""
    from providers.retry import RetryPolicy, call_with_retry

    async def answer() -> int:
        return 42

    assert await call_with_retry(RetryPolicy(), lambda: answer()) == 42

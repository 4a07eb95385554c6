"""The one retry policy for provider calls, built on tenacity.

Only `FleetError`s whose `.retryable` is true are retried. The wait is the
provider's own `retry_after` when it sent one (a request to wait longer than
`max_retry_after` means "give up"), otherwise exponential backoff with full
jitter. A `deadline` (a `time.monotonic()` value) is never slept past.

Streams are retried only until their first event has been handed to the
caller: after that the caller has seen output and a retry would duplicate it.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from contracts.errors import FleetError

__all__ = [
    "OnRetry",
    "RetryPolicies",
    "RetryPolicy",
    "call_with_retry",
    "retry_after_from_headers",
    "stream_with_retry",
]

T = TypeVar("T")
E = TypeVar("E")

OnRetry = Callable[[FleetError, float], None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry transient provider failures.

    `max_attempts` counts the first try. Backoff for attempt n (1-based) is
    uniform in [0, min(backoff_cap, backoff_base * 2**(n-1))].
    """

    max_attempts: int = 4
    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    max_retry_after: float = 60.0

    def backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)


@dataclass(frozen=True, slots=True)
class RetryPolicies:
    """The fleet's default policy and the providers an operator set apart.

    Providers differ: one answers 429 for seconds, another is a local server
    where a retry after 8 s is pointless. Names are the ones jobs put in
    `target.provider`.
    """

    default: RetryPolicy = field(default_factory=RetryPolicy)
    by_provider: Mapping[str, RetryPolicy] = field(default_factory=dict)

    def for_provider(self, name: str) -> RetryPolicy:
        return self.by_provider.get(name, self.default)


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait, or None.

    `retry-after-ms` wins over `retry-after` (OpenAI/Azure send both). Lookups use
    lowercase names, which `httpx.Headers` matches case-insensitively.
    """
    ms = _non_negative(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative(value)
    if seconds is not None:
        return seconds
    return _seconds_until_http_date(value)


def _non_negative(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _seconds_until_http_date(value: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; be lenient with ones that omit it
        when = when.replace(tzinfo=UTC)
    seconds = (when - datetime.now(UTC)).total_seconds()
    # A date in the past (or clock skew) says nothing useful: fall back to backoff.
    return seconds if seconds > 0 else None


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, FleetError) and exc.retryable


def _failure(state: RetryCallState) -> FleetError | None:
    outcome = state.outcome
    if outcome is None or not outcome.failed:
        return None
    exc = outcome.exception()
    return exc if isinstance(exc, FleetError) else None


class _Schedule:
    """tenacity wait + stop callbacks sharing one policy.

    tenacity computes the wait before asking stop (`upcoming_sleep` is set), which
    lets stop veto a wait that is too long for the cap or the deadline.
    """

    def __init__(self, policy: RetryPolicy, deadline: float | None) -> None:
        self._policy = policy
        self._deadline = deadline

    def wait(self, state: RetryCallState) -> float:
        exc = _failure(state)
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float):
            return float(retry_after)
        return self._policy.backoff(state.attempt_number)

    def stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self._policy.max_attempts:
            return True
        if state.upcoming_sleep > self._policy.max_retry_after:
            return True
        return self._deadline is not None and (
            time.monotonic() + state.upcoming_sleep >= self._deadline
        )


def _retrying(
    policy: RetryPolicy, deadline: float | None, on_retry: OnRetry | None
) -> AsyncRetrying:
    schedule = _Schedule(policy, deadline)

    def before_sleep(state: RetryCallState) -> None:
        exc = _failure(state)
        if on_retry is not None and exc is not None:
            on_retry(exc, state.upcoming_sleep)

    return AsyncRetrying(
        sleep=asyncio.sleep,
        wait=schedule.wait,
        stop=schedule.stop,
        retry=retry_if_exception(_is_retryable),
        before_sleep=before_sleep,
        reraise=True,  # callers see our exception, never tenacity.RetryError
    )


async def call_with_retry(
    policy: RetryPolicy,
    fn: Callable[[], Awaitable[T]],
    *,
    deadline: float | None = None,
    on_retry: OnRetry | None = None,
) -> T:
    """Await `fn()` until it succeeds, fails permanently, or the policy gives up.

    `on_retry(exc, wait_seconds)` runs before each sleep (count retries there).
    The exception raised is always the last one `fn` raised.
    """
    # Fast path: most calls succeed first time, and building tenacity's machinery
    # costs ~0.1 ms per call, paid on every job's time to first token.
    try:
        return await fn()
    except FleetError as exc:
        if not exc.retryable:
            raise
        first_failure = exc
    calls = 0

    # tenacity awaits only what it recognises as a coroutine function; a lambda
    # returning a coroutine would come back un-awaited. Its first attempt replays
    # the failure above, so waits, stops and on_retry behave as if it ran it.
    async def attempt() -> T:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise first_failure
        return await fn()

    return await _retrying(policy, deadline, on_retry)(attempt)


async def stream_with_retry(
    policy: RetryPolicy,
    open_stream: Callable[[], AsyncIterator[E]],
    *,
    deadline: float | None = None,
    on_retry: OnRetry | None = None,
) -> AsyncGenerator[E, None]:
    """Yield the events of `open_stream()`, retrying only until the first event.

    Opening the stream and pulling its first event form one attempt. Once an
    event has been yielded, errors propagate unchanged. Closing this generator
    (`aclose()`, or `contextlib.aclosing`) closes the inner one and so its HTTP
    response.
    """

    async def first_event() -> tuple[AsyncIterator[E], list[E]]:
        inner = open_stream()
        try:
            return inner, [await anext(inner)]
        except StopAsyncIteration:
            return inner, []
        except BaseException:
            await _aclose(inner)
            raise

    inner, head = await call_with_retry(policy, first_event, deadline=deadline, on_retry=on_retry)
    try:
        for event in head:
            yield event
        async for event in inner:
            yield event
    finally:
        await _aclose(inner)


async def _aclose(iterator: AsyncIterator[object]) -> None:
    aclose: Callable[[], Awaitable[object]] | None = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()

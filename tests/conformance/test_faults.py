"""Broken transports and broken streams: drops, stalls, in-stream errors, retry-after."""

from __future__ import annotations

import contextlib

import pytest

from contracts.errors import (
    FleetError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from providers.core.spec import Capability
from providers.core.types import ChatResult, StreamEvent, TextDelta
from providers.registry import Provider
from providers.retry import RetryPolicy, call_with_retry, stream_with_retry
from tests.conformance.support import (
    STALL_SECONDS,
    MockAdmin,
    chat_error,
    chat_request,
    check_error,
    check_failure,
    require,
    secret,
    stream_error,
)


async def test_dropped_stream(provider: Provider, model: str, admin: MockAdmin) -> None:
    require(provider, Capability.STREAM)
    await admin.fault("drop-after:2", model)
    error, got = await stream_error(provider, chat_request(model))
    assert len(got.texts) == 2, got.events
    assert not got.ends
    # A cut connection has no HTTP status to report.
    check_failure(error, provider, ProviderUnavailable, retryable=True)
    await admin.assert_no_open_streams()


async def test_dropped_chat(provider: Provider, model: str, admin: MockAdmin) -> None:
    require(provider, Capability.CHAT)
    await admin.fault("drop-after:2", model)
    error = await chat_error(provider, chat_request(model))
    check_failure(error, provider, ProviderUnavailable, retryable=True)


async def test_stall_times_out(provider: Provider, model: str, path: str, admin: MockAdmin) -> None:
    await admin.fault(f"stall:{STALL_SECONDS}", model)
    if path == "chat":
        error = await chat_error(provider, chat_request(model))
    else:
        error, got = await stream_error(provider, chat_request(model))
        assert not got.texts
        await admin.assert_no_open_streams()
    check_failure(error, provider, ProviderTimeout, retryable=True)


async def test_stall_mid_stream_times_out(provider: Provider, model: str, admin: MockAdmin) -> None:
    require(provider, Capability.STREAM)
    await admin.fault(f"stall-after:2:{STALL_SECONDS}", model)
    error, got = await stream_error(provider, chat_request(model))
    assert len(got.texts) == 2, got.events
    check_failure(error, provider, ProviderTimeout, retryable=True)
    await admin.assert_no_open_streams()


@pytest.mark.parametrize(
    ("spec", "after", "cls"),
    [
        ("stream-error-after:2", 2, ProviderUnavailable),
        ("stream-error-after:1:429", 1, RateLimited),
    ],
    ids=["overloaded", "rate-limited"],
)
async def test_error_inside_a_stream(
    provider: Provider,
    model: str,
    admin: MockAdmin,
    spec: str,
    after: int,
    cls: type[FleetError],
) -> None:
    require(provider, Capability.STREAM)
    await admin.fault(spec, model)
    error, got = await stream_error(provider, chat_request(model))
    assert len(got.texts) == after, got.events
    assert not got.ends
    check_error(error, provider, cls, retryable=True)
    await admin.assert_no_open_streams()


@pytest.mark.parametrize(
    ("spec", "wait"),
    [("429:retry-after=1", 1.0), ("429:retry-after-ms=1500", 1.5)],
    ids=["seconds", "milliseconds"],
)
async def test_retry_after_is_honoured(
    provider: Provider, model: str, admin: MockAdmin, spec: str, wait: float
) -> None:
    require(provider, Capability.CHAT)
    await admin.fault(spec, model)
    waits: list[tuple[FleetError, float]] = []
    attempts = 0

    async def call() -> ChatResult:
        nonlocal attempts
        attempts += 1
        return await provider.chat().chat(chat_request(model), secret(provider))

    result = await call_with_retry(
        RetryPolicy(max_attempts=2), call, on_retry=lambda exc, w: waits.append((exc, w))
    )
    assert result.message.text()
    assert attempts == 2
    # The wait the policy chose, taken from the provider's header: never a wall-clock figure.
    assert [(type(exc), w) for exc, w in waits] == [(RateLimited, wait)]


async def test_stream_is_retried_before_its_first_event(
    provider: Provider, model: str, admin: MockAdmin
) -> None:
    require(provider, Capability.STREAM)
    # retry-after=0: the stream path's 429 must carry the header too, at no cost in time.
    await admin.fault("429:retry-after=0", model)
    waits: list[float] = []
    events: list[StreamEvent] = []
    stream = stream_with_retry(
        RetryPolicy(max_attempts=2),
        lambda: provider.streamer().stream_chat(chat_request(model), secret(provider)),
        on_retry=lambda exc, w: waits.append(w),
    )
    async with contextlib.aclosing(stream) as events_in:
        async for event in events_in:
            events.append(event)
    assert waits == [0.0]
    assert any(isinstance(e, TextDelta) for e in events)
    await admin.assert_no_open_streams()

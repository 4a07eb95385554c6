"""The mock's per-key rate limiter answers in each provider's own 429."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from contracts.errors import RateLimited
from providers.core.http import HttpClientPool
from providers.core.spec import Capability
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from providers.registry import Provider
from tests.conformance.support import (
    build_provider,
    chat_error,
    chat_request,
    check_error,
    gives_retry_hints,
    require,
    secret,
    stream_error,
)

RPM = 2


@pytest.fixture
async def limited(package: str, pool: HttpClientPool) -> AsyncIterator[Provider]:
    """The provider against a mock of its own allowing RPM requests a minute per key.

    One server per test: the budget is per key, and every provider uses the same key.
    """
    running: RunningMock = await start_mock(MockConfig(requests_per_minute=RPM))
    try:
        yield build_provider(package, running, pool)
    finally:
        await running.close()


async def test_requests_past_the_budget_are_rate_limited(limited: Provider, model: str) -> None:
    require(limited, Capability.CHAT)
    for _ in range(RPM):
        assert (await limited.chat().chat(chat_request(model), secret(limited))).message.text()
    error = await chat_error(limited, chat_request(model))
    check_error(error, limited, RateLimited, retryable=True, status=429)
    if gives_retry_hints(limited):
        # One request refills in 60/RPM seconds: the provider says how long to wait.
        assert error.retry_after is not None and 0 < error.retry_after <= 60 / RPM
    if limited.supports(Capability.STREAM):
        error, got = await stream_error(limited, chat_request(model))
        assert not got.events
        check_error(error, limited, RateLimited, retryable=True, status=429)

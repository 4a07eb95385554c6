"""Fixtures of the conformance suite: one mock server, one HTTP pool, every built-in provider.

`provider` is parametrized over `providers.registry.BUILTIN`, so registering a
provider package is all it takes for it to run every scenario here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from providers.core.http import HttpClientPool, HttpSettings
from providers.core.spec import Capability
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from providers.registry import BUILTIN, Provider
from tests.conformance.support import READ_TIMEOUT, MockAdmin, build_provider, require


@pytest.fixture(scope="session")
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig())
    yield running
    await running.close()


@pytest.fixture(scope="session")
async def admin(mock: RunningMock) -> AsyncIterator[MockAdmin]:
    admin = MockAdmin(mock)
    yield admin
    await admin.aclose()


@pytest.fixture(scope="session")
async def pool() -> AsyncIterator[HttpClientPool]:
    async with HttpClientPool(HttpSettings(read_timeout=READ_TIMEOUT)) as pool:
        yield pool


@pytest.fixture(scope="session", params=BUILTIN)
def package(request: pytest.FixtureRequest) -> str:
    """A provider package name from the registry's built-ins."""
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def provider(package: str, mock: RunningMock, pool: HttpClientPool) -> Provider:
    return build_provider(package, mock, pool)


@pytest.fixture
def model() -> str:
    """A model name of this test's own: "mock-…" names are served, and faults queued
    for it never reach another test."""
    return f"mock-conf-{uuid4().hex[:8]}"


@pytest.fixture(params=["chat", "stream"])
def path(request: pytest.FixtureRequest, provider: Provider) -> str:
    """The non-streaming or the streaming call, each skipped where not offered."""
    name: str = request.param
    require(provider, Capability.CHAT if name == "chat" else Capability.STREAM)
    return name

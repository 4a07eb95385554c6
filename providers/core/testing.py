"""What every provider's tests share: a recording fake transport, pools, mock servers.

The fixtures are registered for `providers/*/tests` by `providers/conftest.py`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from providers.core.http import HttpClientPool
from providers.core.types import StreamEvent
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock

__all__ = [
    "Handler",
    "Recorder",
    "Serve",
    "collect",
    "running_mocks",
    "stream_response",
    "transport_pools",
]

Handler = Callable[[httpx.Request], httpx.Response]
Serve = Callable[..., Awaitable[RunningMock]]


class Recorder:
    """Wraps an `httpx.MockTransport` handler and keeps every request it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    @property
    def body(self) -> dict[str, Any]:
        """The JSON body of the last request."""
        result: dict[str, Any] = json.loads(self.requests[-1].content)
        return result


async def transport_pools() -> AsyncIterator[list[HttpClientPool]]:
    """Pools a test creates (append them); all closed when it ends."""
    created: list[HttpClientPool] = []
    yield created
    for pool in created:
        await pool.aclose()


async def running_mocks() -> AsyncIterator[Serve]:
    """`await serve(**MockConfig fields)` starts a mock server on a free port;
    every one started is closed when the test ends."""
    started: list[RunningMock] = []

    async def start(**overrides: Any) -> RunningMock:
        mock = await start_mock(MockConfig(**overrides), "127.0.0.1", 0)
        started.append(mock)
        return mock

    yield start
    for mock in started:
        await mock.close()


def stream_response(body: bytes, *, pieces: int = 7) -> httpx.Response:
    """A streamed 200 whose body arrives in awkwardly sized pieces, so a parser
    meets events and UTF-8 sequences cut anywhere."""

    async def gen() -> AsyncIterator[bytes]:
        size = max(1, len(body) // pieces)
        for i in range(0, len(body), size):
            yield body[i : i + size]

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=gen())


async def collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [e async for e in events]

"""Predictions we stop following are cancelled: a cancelled job, a reader that
leaves, a stream that fails. The cancel is shielded, bounded and never raised in
place of what ended the call."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import pytest

from contracts.errors import Forbidden, ProviderTimeout
from contracts.jobs import Message
from providers.core.http import HttpClientPool, HttpSettings
from providers.core.spec import ProviderContext
from providers.core.testing import Serve
from providers.core.types import ChatRequest, Secret, TextDelta
from providers.mock.server import RunningMock
from providers.options import ModelOptions
from providers.replicate import predictions as lifecycle
from providers.replicate.adapter import Replicate
from providers.replicate.mock import MOCK

KEY = Secret({"api_key": "mock-key"})
# 64 tokens at 20 a second: over three seconds of work, time enough to leave midway.
SLOW: dict[str, Any] = {"ttft_ms": 50, "tokens_per_sec": 20}


def request(model: str = "mock-owner/mock-cancel") -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[Message(role="user", content="Write at length")],
        options=ModelOptions(),
    )


async def adapter_for(
    running: RunningMock, pools: list[HttpClientPool], read_timeout: float = 5.0
) -> Replicate:
    pool = HttpClientPool(HttpSettings(read_timeout=read_timeout))
    pools.append(pool)
    return Replicate(ProviderContext("replicate", pool, running.url(MOCK.prefix)))


async def mock_view(running: RunningMock) -> dict[str, Any]:
    async with httpx.AsyncClient(headers={"Authorization": "Bearer mock-key"}) as http:
        response = await http.get(f"{running.root}/{MOCK.prefix}/_mock/predictions")
        response.raise_for_status()
        view: dict[str, Any] = response.json()
        return view


async def test_a_cancelled_chat_cancels_its_prediction(
    serve: Serve, pools: list[HttpClientPool]
) -> None:
    running = await serve(**SLOW)
    # A read timeout under 2 s: no `Prefer: wait` above a second, so the chat polls.
    adapter = await adapter_for(running, pools, read_timeout=1.5)
    task = asyncio.create_task(adapter.chat(request(), KEY))
    await asyncio.sleep(1.3)  # the create held a second; now it is polling
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    view = await mock_view(running)
    assert view["cancels"] == 1
    assert view["statuses"] == {"canceled": 1}


async def test_leaving_a_stream_early_cancels_its_prediction(
    serve: Serve, pools: list[HttpClientPool]
) -> None:
    running = await serve(**SLOW)
    adapter = await adapter_for(running, pools)
    stream = adapter.stream_chat(request(), KEY)
    async with contextlib.aclosing(stream) as events:
        first = await anext(events)
        assert isinstance(first, TextDelta)
    view = await mock_view(running)
    assert view["cancels"] == 1
    assert view["statuses"] == {"canceled": 1}
    stats = await httpx.AsyncClient().get(f"{running.root}/_mock/stats")
    assert stats.json()["open_streams"] == 0


async def test_a_cancelled_stream_task_cancels_its_prediction(
    serve: Serve, pools: list[HttpClientPool]
) -> None:
    running = await serve(**SLOW)
    adapter = await adapter_for(running, pools)
    started = asyncio.Event()

    async def read() -> None:
        async with contextlib.aclosing(adapter.stream_chat(request(), KEY)) as events:
            async for _ in events:
                started.set()

    task = asyncio.create_task(read())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await mock_view(running))["cancels"] == 1


async def test_a_stalled_stream_is_a_timeout_and_is_cancelled(
    serve: Serve, pools: list[HttpClientPool]
) -> None:
    running = await serve(**SLOW)  # still running when the reader gives up
    adapter = await adapter_for(running, pools, read_timeout=0.3)
    async with httpx.AsyncClient() as admin:
        queued = await admin.post(
            f"{running.root}/_mock/faults",
            json={"spec": "stall-after:2:3", "model": "mock-owner/mock-stall"},
        )
        assert queued.status_code == 201
    texts: list[str] = []
    with pytest.raises(ProviderTimeout):
        async for event in adapter.stream_chat(request("mock-owner/mock-stall"), KEY):
            assert isinstance(event, TextDelta)
            texts.append(event.text)
    assert len(texts) == 2
    assert (await mock_view(running))["cancels"] == 1


async def test_a_finished_prediction_is_not_cancelled(
    serve: Serve, pools: list[HttpClientPool]
) -> None:
    running = await serve()
    adapter = await adapter_for(running, pools)
    await adapter.chat(request(), KEY)
    async with contextlib.aclosing(adapter.stream_chat(request(), KEY)) as events:
        async for _ in events:
            pass
    view = await mock_view(running)
    assert view["cancels"] == 0
    assert view["statuses"] == {"succeeded": 2}


# -- the cancel's own failures, against fakes ------------------------------------------


def starting() -> dict[str, Any]:
    return {"id": "p1", "status": "starting", "urls": {}}


class Server:
    """Creates a prediction that never finishes; polls and cancels as told."""

    def __init__(self, *, poll: httpx.Response | None = None, cancel: str = "ok") -> None:
        self.poll = poll
        self.cancel = cancel
        self.cancel_started = asyncio.Event()
        self.cancel_done = asyncio.Event()

    async def __call__(self, req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/cancel"):
            self.cancel_started.set()
            try:
                if self.cancel == "hang":
                    await asyncio.sleep(0.6)
                if self.cancel == "refuse":
                    raise httpx.ConnectError("refused", request=req)
                return httpx.Response(200, json={**starting(), "status": "canceled"})
            finally:
                self.cancel_done.set()
        if req.method == "POST":
            return httpx.Response(201, json=starting())
        return self.poll or httpx.Response(200, json=starting())


def fake_adapter(server: Server, pools: list[HttpClientPool]) -> Replicate:
    pool = HttpClientPool(HttpSettings(read_timeout=1.0), transport=httpx.MockTransport(server))
    pools.append(pool)
    return Replicate(ProviderContext("replicate", pool, "https://api.replicate.test/v1"))


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "CANCEL_SECONDS", 0.2)
    monkeypatch.setattr(lifecycle, "POLL_FIRST", 0.01)


@pytest.mark.usefixtures("quick")
async def test_a_hanging_cancel_is_bounded_and_finishes_in_the_background(
    pools: list[HttpClientPool],
) -> None:
    server = Server(cancel="hang")
    task = asyncio.create_task(fake_adapter(server, pools).chat(request(), KEY))
    await asyncio.sleep(0.05)
    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - began < 0.5  # CANCEL_SECONDS, not the cancel's own time
    assert server.cancel_started.is_set() and not server.cancel_done.is_set()
    await asyncio.wait_for(server.cancel_done.wait(), 2)  # shielded: it still went out


@pytest.mark.usefixtures("quick")
async def test_a_failed_cancel_never_replaces_the_original_error(
    pools: list[HttpClientPool],
) -> None:
    forbidden = httpx.Response(403, json={"title": "Forbidden", "detail": "no", "status": 403})
    server = Server(poll=forbidden, cancel="refuse")
    with pytest.raises(Forbidden):
        await fake_adapter(server, pools).chat(request(), KEY)
    assert server.cancel_done.is_set()
    cancelled = Server(cancel="refuse")
    task = asyncio.create_task(fake_adapter(cancelled, pools).chat(request(), KEY))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.cancel_done.is_set()


@pytest.mark.usefixtures("quick")
async def test_a_second_cancellation_while_cancelling_is_not_swallowed(
    pools: list[HttpClientPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "CANCEL_SECONDS", 5.0)
    forbidden = httpx.Response(403, json={"title": "Forbidden", "detail": "no", "status": 403})
    server = Server(poll=forbidden, cancel="hang")
    task = asyncio.create_task(fake_adapter(server, pools).chat(request(), KEY))
    await server.cancel_started.wait()  # leaving because of the 403, cancel under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

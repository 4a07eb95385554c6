"""No provider stream outlives its job.

Whatever ends a job mid-stream (its reply queue vanishing, the producer
cancelling, the worker shutting down), the worker must close the provider's HTTP
response at once: otherwise the provider keeps generating tokens nobody reads
and the connection stays busy until garbage collection. The mock's
`open_streams` gauge shows whether the worker let go; stalls (`stall-after`)
keep each stream mid-way for far longer than the few seconds allowed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid

import aio_pika
import pytest

from contracts import ChatJob, Delta, Final, Message, encode
from contracts import topology as t
from contracts.client import FleetClient
from providers.mock.server import RunningMock
from tests.integration.conftest import SpawnWorker, WorkerProc, sealed_target
from tests.integration.test_fleet import collect, fault_model, mock_admin
from tests.producers import USER, reply_queue_name
from workers.crypto import Keyring

pytestmark = pytest.mark.integration

# What asyncio prints when a generator or task is left for the garbage collector
# or for loop shutdown to clean up.
UNCLEAN = (
    "didn't stop after athrow",
    "Task was destroyed",
    "ignored GeneratorExit",
    "asynchronous generator is already running",
    "an error occurred during closing of asynchronous generator",
)
STALL = 30.0  # seconds: far longer than any wait below, so an open stream stays open


async def open_streams(mock: RunningMock) -> int:
    count: int = (await mock_admin(mock, "GET", "/_mock/stats"))["open_streams"]
    return count


async def wait_for_open_streams(mock: RunningMock, expected: int, within: float) -> None:
    give_up = time.monotonic() + within
    while (count := await open_streams(mock)) != expected:
        assert time.monotonic() < give_up, f"{count} provider streams open, expected {expected}"
        await asyncio.sleep(0.05)


async def wait_for_log(worker: WorkerProc, event: str, within: float = 15.0) -> None:
    give_up = time.monotonic() + within
    while f'"{event}"' not in worker.logs():
        assert time.monotonic() < give_up, worker.logs()
        await asyncio.sleep(0.05)


async def stopped_cleanly(worker: WorkerProc) -> None:
    """Wait for a worker told to stop; shutdown must leave nothing for asyncio to clean up."""
    assert await worker.wait(30) == 0, worker.logs()
    logs = worker.logs()
    assert not [line for line in logs.splitlines() if any(u in line for u in UNCLEAN)], logs


@pytest.fixture(autouse=True)
async def no_streams_left_over(mock: RunningMock) -> None:
    """Start from a mock with nothing open, so the counts below are this test's alone."""
    await wait_for_open_streams(mock, 0, within=10)


async def test_gone_reply_queue_closes_the_provider_stream(
    spawn_worker: SpawnWorker, amqp_url: str, keyring: Keyring, mock: RunningMock
) -> None:
    worker = await spawn_worker()
    model = f"mock-leak-gone-{uuid.uuid4().hex[:6]}"
    # A worker learns that its reply queue is gone only when a publish comes back,
    # and during a stall it publishes nothing. So the first attempt is a 429: while
    # the job waits out retry-after, its start frame goes out alone and comes back,
    # and the first token of the second attempt (which then stalls) finds out.
    for spec in ("429:retry-after=1", f"stall-after:3:{STALL}"):
        await mock_admin(mock, "POST", "/_mock/faults", {"spec": spec, "times": 1, "model": model})
    conn = await aio_pika.connect(amqp_url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        replies = await channel.declare_queue(reply_queue_name(), exclusive=True)
        await replies.delete(if_unused=False, if_empty=False)
        job = ChatJob(
            v=1,
            request_id=f"leak-gone-{uuid.uuid4().hex[:6]}",
            target=sealed_target(keyring, model=model),
            messages=[Message(role="user", content="talk to nobody")],
        )
        exchange = await channel.get_exchange(t.JOBS_EXCHANGE)
        await exchange.publish(
            aio_pika.Message(
                encode(job), reply_to=replies.name, user_id=USER, correlation_id=job.request_id
            ),
            routing_key=t.QUEUE_CHAT,
        )
    finally:
        await conn.close()
    started = (await mock_admin(mock, "GET", "/_mock/stats"))["streams_started"]
    await wait_for_log(worker, "reply_queue_gone")
    stats = await mock_admin(mock, "GET", "/_mock/stats")
    assert stats["faults_by_kind"].get("stall-after", 0) >= 1, "the stalled stream never opened"
    assert stats["streams_started"] >= started
    await wait_for_open_streams(mock, 0, within=2)
    worker.signal(signal.SIGTERM)
    await stopped_cleanly(worker)


async def test_producer_leaving_the_stream_closes_the_provider_stream(
    spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
) -> None:
    worker = await spawn_worker()
    model = await fault_model(mock, "m-leak-leave", f"stall-after:2:{STALL}", 1)
    stream = client.stream_chat(
        sealed_target(keyring, model=model), [Message(role="user", content="never mind")]
    )
    async with contextlib.aclosing(stream) as events:
        async for ev in events:
            if isinstance(ev, Delta):
                # The delta came before the stall: the provider stream is open now...
                assert await open_streams(mock) == 1
                break
    await wait_for_log(worker, "job_cancelled_by_producer")
    # ...and the producer's cancel closed it.
    await wait_for_open_streams(mock, 0, within=2)
    worker.signal(signal.SIGTERM)
    await stopped_cleanly(worker)


async def test_sigterm_past_the_grace_period_closes_every_provider_stream(
    spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
) -> None:
    worker = await spawn_worker(grace=0.5)
    n = 4
    model = await fault_model(mock, "m-leak-term", f"stall-after:2:{STALL}", n)
    target = sealed_target(keyring, model=model)
    started = [asyncio.Event() for _ in range(n)]

    async def one(i: int) -> tuple[str, Final, int]:
        return await collect(client, target, f"shut down {i}", on_delta=started[i].set)

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 30)
        assert await open_streams(mock) == n
        worker.signal(signal.SIGTERM)
        await wait_for_log(worker, "grace_period_over")
        await wait_for_open_streams(mock, 0, within=2)
        await stopped_cleanly(worker)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

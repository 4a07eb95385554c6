"""Workers survive a RabbitMQ restart by reconnecting (real broker, restarted for real).

The broker restarted is the session's private node (tests/brokers.py), never the
machine's shared one: the whole node goes down, as in a deploy or a host reboot.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from contracts import Message, Target
from contracts.client import FleetClient
from tests.brokers import BrokerNode
from tests.integration.conftest import SpawnWorker

pytestmark = pytest.mark.integration


# The first test to take private_broker pays for its boot (10 s idle, far more under load).
@pytest.mark.timeout(300)
async def test_worker_reconnects_after_broker_restart(
    spawn_worker: SpawnWorker, private_broker: BrokerNode, target: Target
) -> None:
    url = private_broker.url
    worker = await spawn_worker(env={"AMQP_URL": url})
    async with FleetClient(url, default_timeout=30) as client:
        assert (await client.chat(target, [Message(role="user", content="before")])).message
    ready_before = worker.logs().count('"worker_ready"')
    await asyncio.to_thread(private_broker.stop)
    try:
        assert not private_broker.is_running
        await asyncio.sleep(1.0)
    finally:
        await asyncio.to_thread(private_broker.start)
    give_up = time.monotonic() + 60
    while worker.logs().count('"worker_ready"') <= ready_before:
        assert worker.proc.poll() is None, worker.logs()
        assert time.monotonic() < give_up, worker.logs()
        await asyncio.sleep(0.2)
    assert "broker_connection_lost" in worker.logs()
    async with FleetClient(url, default_timeout=30) as client:
        final = await client.chat(target, [Message(role="user", content="after")])
    assert final.message is not None and final.message.content

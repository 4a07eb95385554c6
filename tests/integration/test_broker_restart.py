"""Workers survive a RabbitMQ restart by reconnecting (real broker, restarted for real)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import urllib.parse

import pytest

from contracts import Message, Target
from contracts.client import FleetClient
from tests.integration.conftest import SpawnWorker

pytestmark = pytest.mark.integration


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


async def test_worker_reconnects_after_broker_restart(
    spawn_worker: SpawnWorker, amqp_url: str, target: Target
) -> None:
    host = urllib.parse.urlsplit(amqp_url).hostname
    if shutil.which("rabbitmqctl") is None or host not in ("127.0.0.1", "localhost"):
        pytest.fail("this test restarts the broker and needs a local rabbitmqctl")
    worker = await spawn_worker()
    async with FleetClient(amqp_url, default_timeout=30) as client:
        assert (await client.chat(target, [Message(role="user", content="before")])).message
    ready_before = worker.logs().count('"worker_ready"')
    await asyncio.to_thread(_rabbitmqctl, "stop_app")
    try:
        await asyncio.sleep(1.0)
    finally:
        await asyncio.to_thread(_rabbitmqctl, "start_app")
        await asyncio.to_thread(_rabbitmqctl, "await_startup")
    give_up = time.monotonic() + 60
    while worker.logs().count('"worker_ready"') <= ready_before:
        assert worker.proc.poll() is None, worker.logs()
        assert time.monotonic() < give_up, worker.logs()
        await asyncio.sleep(0.2)
    assert "broker_connection_lost" in worker.logs()
    async with FleetClient(amqp_url, default_timeout=30) as client:
        final = await client.chat(target, [Message(role="user", content="after")])
    assert final.message is not None and final.message.content

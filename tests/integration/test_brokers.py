"""The private-server harness itself (tests/brokers.py): its outages really happen.

Timings are printed (run with -s to see them): boot and failover times on a small machine
are what tell whether a test built on this harness will fit its timeout.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest

from tests.brokers import BrokerCluster, BrokerNode, PrivatePostgres, _alive, reap_stale

# Boot times stretch a lot when other sessions share the CPUs (see the cluster fixture).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _name() -> str:
    return f"harness-{uuid.uuid4().hex[:10]}"


async def _declare(url: str, queue: str, **arguments: Any) -> None:
    conn = await aio_pika.connect(url)
    try:
        channel = await conn.channel()
        await channel.declare_queue(
            queue, durable=True, arguments={"x-queue-type": "quorum", **arguments}
        )
    finally:
        await conn.close()


async def _publish(channel: aio_pika.abc.AbstractChannel, queue: str, body: bytes) -> None:
    # The channel has publisher confirms on: this returns once the queue has the message.
    await channel.default_exchange.publish(
        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue
    )


async def _take_all(channel: aio_pika.abc.AbstractChannel, queue: str) -> list[bytes]:
    q = await channel.get_queue(queue)
    bodies = []
    while (msg := await q.get(fail=False, timeout=30)) is not None:
        await msg.ack()
        bodies.append(msg.body)
    return bodies


async def test_quorum_message_survives_private_node_stop_start(private_broker: BrokerNode) -> None:
    queue = _name()
    await _declare(private_broker.url, queue)
    conn = await aio_pika.connect(private_broker.url)
    await _publish(await conn.channel(), queue, b"kept")
    await conn.close()

    started = time.monotonic()
    await asyncio.to_thread(private_broker.stop)
    stopped = time.monotonic()
    try:
        assert not private_broker.is_running
        with pytest.raises(aio_pika.exceptions.AMQPConnectionError):
            await aio_pika.connect(private_broker.url)
    finally:
        await asyncio.to_thread(private_broker.start)
    print(f"\nprivate node: stop {stopped - started:.1f}s, start {time.monotonic() - stopped:.1f}s")

    conn = await aio_pika.connect(private_broker.url)
    try:
        channel = await conn.channel()
        assert await _take_all(channel, queue) == [b"kept"]
        await channel.queue_delete(queue)
    finally:
        await conn.close()


async def _new_leader(cluster: BrokerCluster, queue: str, old: BrokerNode) -> BrokerNode:
    give_up = time.monotonic() + 60
    while (leader := await asyncio.to_thread(cluster.leader_of, queue)) is old:
        assert time.monotonic() < give_up, f"{old.name} still reported as leader of {queue}"
        await asyncio.sleep(0.2)
    return leader


async def _all_members_in_sync(cluster: BrokerCluster, queue: str) -> dict[str, str]:
    want = {n.name for n in cluster.nodes}
    give_up = time.monotonic() + 60
    while True:
        states = await asyncio.to_thread(cluster.quorum_status, queue)
        roles = sorted(states.values())
        if set(states) == want and roles == ["follower", "follower", "leader"]:
            return states
        assert time.monotonic() < give_up, f"members of {queue}: {states}"
        await asyncio.sleep(0.5)


async def test_quorum_queue_fails_over_when_its_leader_is_killed(
    broker_cluster: BrokerCluster,
) -> None:
    cluster = broker_cluster
    queue = _name()
    await _declare(cluster.nodes[0].url, queue, **{"x-quorum-initial-group-size": 3})
    await _all_members_in_sync(cluster, queue)
    leader = await asyncio.to_thread(cluster.leader_of, queue)
    survivor = next(n for n in cluster.nodes if n is not leader)

    conn = await aio_pika.connect(survivor.url)
    try:
        channel = await conn.channel()
        await _publish(channel, queue, b"before")
        killed = time.monotonic()
        await asyncio.to_thread(cluster.kill_node, leader)
        try:
            assert not leader.is_running
            await asyncio.wait_for(_publish(channel, queue, b"after"), 60)
            confirmed = time.monotonic()
            new_leader = await _new_leader(cluster, queue, leader)
            elected = time.monotonic()
            assert await _take_all(channel, queue) == [b"before", b"after"]
        finally:
            restart_began = time.monotonic()
            await asyncio.to_thread(cluster.start_node, leader)
        rejoined = time.monotonic()
        assert new_leader is not leader and new_leader.is_running

        # The killed node is back in the cluster and its replica caught up as a follower.
        assert leader.name in await asyncio.to_thread(cluster.running_nodes)
        states = await _all_members_in_sync(cluster, queue)
        synced = time.monotonic()
        await _publish(channel, queue, b"rejoined")
        assert await _take_all(channel, queue) == [b"rejoined"]
        await channel.queue_delete(queue)
    finally:
        await conn.close()
    print(
        f"\ncluster: killed leader {leader.name}; publish confirmed after "
        f"{confirmed - killed:.1f}s; new leader {new_leader.name} reported after "
        f"{elected - killed:.1f}s; start_node {rejoined - restart_began:.1f}s; "
        f"replica in sync {synced - rejoined:.1f}s later; states {states}"
    )


async def test_private_postgres_keeps_committed_rows_through_kill_and_restart(
    private_postgres: PrivatePostgres,
) -> None:
    pg = private_postgres
    table = _name().replace("-", "_")

    async def rows() -> list[int]:
        conn = await asyncpg.connect(pg.url)
        try:
            return [r["x"] for r in await conn.fetch(f"SELECT x FROM {table} ORDER BY x")]
        finally:
            await conn.close()

    conn = await asyncpg.connect(pg.url)
    await conn.execute(f"CREATE TABLE {table} (x int); INSERT INTO {table} VALUES (1), (2)")
    await conn.close()

    started = time.monotonic()
    await asyncio.to_thread(pg.kill)
    assert not pg.is_running
    killed = time.monotonic()
    await asyncio.to_thread(pg.start)
    recovered = time.monotonic()
    assert await rows() == [1, 2]
    await asyncio.to_thread(pg.restart)
    restarted = time.monotonic()
    assert await rows() == [1, 2]
    print(
        f"\npostgres: kill {killed - started:.1f}s, start after kill "
        f"{recovered - killed:.1f}s, restart {restarted - recovered:.1f}s"
    )


_ORPHAN = """
import os, signal
from tests.brokers import PrivatePostgres
pg = PrivatePostgres()
pg.start()
print(pg.dir, pg.os_pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_reaper_removes_what_a_killed_session_left() -> None:
    # PostgreSQL stands in for any instance: it starts in a second, a broker in ten.
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _ORPHAN], cwd=root, capture_output=True, timeout=60, check=False
    ).stdout.split()
    directory, pid = Path(out[0].decode()), int(out[1])
    assert directory.is_dir() and _alive(pid), "the orphan did not leave a running postmaster"

    assert directory.name in reap_stale()
    assert not directory.exists()
    assert not _alive(pid)

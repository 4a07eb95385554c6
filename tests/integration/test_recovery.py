"""What happens to jobs when workers die, brokers restart and reply queues vanish.

These tests use private RabbitMQ nodes (tests/brokers.py): they stop and start
brokers for real, which the shared system node must never be put through.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import Any

import aio_pika
import pytest

from bench.harness import purge_fleet_queues
from contracts import ChatJob, EmbedJob, Error, Final, Message, Target, decode_frames, encode
from contracts import topology as t
from contracts.client import FleetClient, Restart
from contracts.frames import Delta, Start
from providers.mock.server import RunningMock
from tests.brokers import BrokerCluster, BrokerNode
from tests.integration.conftest import SpawnWorker, drain_queue, sealed_target
from tests.integration.test_fleet import direct_text, mock_admin
from tests.producers import USER, reply_queue_name
from workers.crypto import Keyring

pytestmark = pytest.mark.integration


async def _stall(mock: RunningMock, model: str, spec: str, times: int) -> None:
    await mock_admin(mock, "POST", "/_mock/faults", {"spec": spec, "times": times, "model": model})


class TestCrashCount:
    async def test_a_job_that_kills_every_worker_ends_in_llm_dead(
        self, spawn_worker: SpawnWorker, amqp_url: str, keyring: Keyring, mock: RunningMock
    ) -> None:
        """Each worker dies holding the job (as if the job killed it): after
        FLEET_DELIVERY_LIMIT deaths the job is answered as dead and kept in llm.dead."""
        model = f"mock-killer-{uuid.uuid4().hex[:6]}"
        await _stall(mock, model, "stall-after:1:30", 10)
        env = {"FLEET_DELIVERY_LIMIT": "2"}
        conn = await aio_pika.connect(amqp_url)
        try:
            replies = await _publish_chat(conn, sealed_target(keyring, model=model), "killer-1")
            frames: list[Any] = []
            for _ in range(2):
                worker = await spawn_worker(env=env)
                await _until(lambda: any(isinstance(f, Start) for f in frames), replies, frames)
                worker.signal(signal.SIGKILL)
                await worker.wait()
                frames.clear()
            survivor = await spawn_worker(env=env)
            await _until(lambda: any(isinstance(f, Error) for f in frames), replies, frames)
        finally:
            await conn.close()
        (error,) = [f for f in frames if isinstance(f, Error)]
        assert error.code == "internal" and "2 workers that died" in error.message
        dead = await drain_queue(amqp_url, t.DEAD_QUEUE)
        dead = [m for m in dead if m.correlation_id == "killer-1"]
        assert len(dead) == 1 and dead[0].headers[t.HDR_DEAD_CRASHES] == 2
        assert "broker_connection_lost" not in survivor.logs()
        await mock_admin(mock, "DELETE", "/_mock/faults")

    async def test_broker_restarts_do_not_count_as_crashes(
        self,
        spawn_worker: SpawnWorker,
        private_broker: BrokerNode,
        keyring: Keyring,
        mock: RunningMock,
    ) -> None:
        """With a limit of one crash, a job in flight through a broker restart is still
        answered: its worker survived and said so (the broker alone counts a return)."""
        await purge_fleet_queues(private_broker.url)
        model = f"mock-restarts-{uuid.uuid4().hex[:6]}"
        await _stall(mock, model, "stall-after:2:6", 2)
        env = {"AMQP_URL": private_broker.url, "FLEET_DELIVERY_LIMIT": "1"}
        worker = await spawn_worker(env=env)
        restarts = 0
        final: Final | None = None
        text: list[str] = []
        pending: asyncio.Task[None] | None = None
        async with FleetClient(private_broker.url, default_timeout=180, reconnect_timeout=120) as c:
            target = sealed_target(keyring, model=model)
            async for ev in c.stream_chat(target, [Message(role="user", content="survive")]):
                if isinstance(ev, Restart):
                    text.clear()
                elif isinstance(ev, Delta):
                    text.append(ev.text)
                    if pending is None and restarts < 1:
                        restarts += 1
                        pending = asyncio.create_task(asyncio.to_thread(private_broker.restart))
                elif isinstance(ev, Final):
                    final = ev
                if pending is not None and pending.done():
                    await pending
                    pending = None
        if pending is not None:
            await pending
        assert final is not None and restarts == 1, worker.logs()[-3000:]
        assert final.attempt >= 2
        assert "".join(text) == await direct_text(mock, "survive", model)
        assert '"jobs_released"' in worker.logs()
        await mock_admin(mock, "DELETE", "/_mock/faults")


class TestRepliesSurvive:
    async def test_backfill_answers_survive_a_broker_restart(
        self, spawn_worker: SpawnWorker, private_broker: BrokerNode, keyring: Keyring
    ) -> None:
        await purge_fleet_queues(private_broker.url)
        await spawn_worker(env={"AMQP_URL": private_broker.url})
        queue = f"restart-{uuid.uuid4().hex[:6]}"
        target = sealed_target(keyring, model="mock-embed")
        ids = [f"restart-backfill-{i}" for i in range(10)]
        async with FleetClient(private_broker.url, reply_queue=queue) as first:
            for rid in ids:
                await first.submit(EmbedJob(v=1, request_id=rid, target=target, inputs=[rid]))
        # The answers wait in the queue, the producer is gone, and the broker restarts.
        await _wait_drained(private_broker, t.QUEUE_BATCH)
        await asyncio.to_thread(private_broker.restart)
        got: dict[str, Final | Error] = {}
        async with FleetClient(private_broker.url, reply_queue=queue) as second:
            async with asyncio.timeout(60):
                async for answer in second.results():
                    got[answer.request_id] = answer
                    if len(got) == len(ids):
                        break
            await second.delete_reply_queue()
        assert sorted(got) == sorted(ids)
        assert all(isinstance(a, Final) and a.embeddings is not None for a in got.values())

    async def test_requests_whose_reply_queue_was_lost_are_published_again(
        self,
        spawn_worker: SpawnWorker,
        broker_cluster: BrokerCluster,
        keyring: Keyring,
        mock: RunningMock,
    ) -> None:
        """The node holding the client's reply queue stops mid-answer: the client
        moves to another node, publishes its requests in flight again, and every
        caller gets one clean answer."""
        model = f"mock-lostq-{uuid.uuid4().hex[:6]}"
        await _stall(mock, model, "stall-after:2:3", 5)
        prompts = [f"lost queue {i}" for i in range(5)]
        async with FleetClient(broker_cluster.urls, default_timeout=120) as c:
            node_of_queue = await asyncio.to_thread(_queue_node, broker_cluster, c.reply_queue)
            victim = broker_cluster.node(node_of_queue)
            # Workers on the other nodes: only the client loses its queue and connection.
            others = [n for n in broker_cluster.nodes if n is not victim]
            await purge_fleet_queues(others[0].url)
            await spawn_worker(env={"AMQP_URL": ",".join(n.url for n in others)})
            started = [asyncio.Event() for _ in prompts]

            async def one(i: int) -> tuple[str, int, Final]:
                parts: list[str] = []
                restarts = 0
                final = None
                target = sealed_target(keyring, model=model)
                async for ev in c.stream_chat(target, [Message(role="user", content=prompts[i])]):
                    if isinstance(ev, Restart):
                        parts.clear()
                        restarts += 1
                    elif isinstance(ev, Delta):
                        parts.append(ev.text)
                        started[i].set()
                    elif isinstance(ev, Final):
                        final = ev
                assert final is not None
                return "".join(parts), restarts, final

            tasks = [asyncio.create_task(one(i)) for i in range(len(prompts))]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 30)
            await asyncio.to_thread(broker_cluster.stop_node, victim)
            try:
                results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
            finally:
                await asyncio.to_thread(broker_cluster.start_node, victim)
            moved_to = await asyncio.to_thread(_queue_node, broker_cluster, c.reply_queue)
            assert moved_to != victim.name
        for prompt, (text, restarts, final) in zip(prompts, results, strict=True):
            assert text == await direct_text(mock, prompt, model)
            assert final.submission >= 1 and restarts >= 1
        await mock_admin(mock, "DELETE", "/_mock/faults")


class TestNotices:
    async def test_a_job_the_broker_expired_is_answered_as_expired(
        self, spawn_worker: SpawnWorker, amqp_url: str, keyring: Keyring
    ) -> None:
        # No worker takes llm.chat, so the job expires at the head of the queue.
        await spawn_worker(queues="llm.embed")
        conn = await aio_pika.connect(amqp_url)
        try:
            replies = await _publish_chat(conn, sealed_target(keyring), "expire-1", expiration=0.05)
            frames: list[Any] = []
            await _until(lambda: bool(frames), replies, frames)
        finally:
            await conn.close()
        (frame,) = frames
        assert isinstance(frame, Error) and frame.code == "expired", frame
        assert "expired in llm.chat" in frame.message and "deliveries" not in frame.message
        assert frame.attempt == t.NOTICE_ATTEMPT


# -- helpers -------------------------------------------------------------------------------


async def _publish_chat(
    conn: aio_pika.abc.AbstractConnection, target: Target, rid: str, **properties: Any
) -> aio_pika.abc.AbstractQueue:
    """Publish a chat job by hand; return the private queue its frames come back on."""
    channel = await conn.channel()
    replies = await channel.declare_queue(reply_queue_name(), exclusive=True)
    job = ChatJob(v=1, request_id=rid, target=target, messages=[Message(role="user", content="x")])
    exchange = await channel.get_exchange(t.JOBS_EXCHANGE)
    message = aio_pika.Message(
        encode(job), reply_to=replies.name, user_id=USER, correlation_id=rid, **properties
    )
    await exchange.publish(message, routing_key=t.QUEUE_CHAT)
    return replies


async def _until(
    done: Any, queue: aio_pika.abc.AbstractQueue, frames: list[Any], within: float = 60
) -> None:
    """Read reply messages into `frames` until `done()`."""
    give_up = time.monotonic() + within
    while not done():
        assert time.monotonic() < give_up, f"timed out; frames so far: {frames}"
        msg = await queue.get(fail=False, no_ack=True)
        if msg is None:
            await asyncio.sleep(0.05)
            continue
        frames.extend(decode_frames(msg.body))


async def _wait_drained(node: BrokerNode, queue: str, within: float = 30) -> None:
    """Until `queue` holds no message, ready or unacked: every job was answered and acked
    (a worker acks only once the broker confirmed the answer)."""
    give_up = time.monotonic() + within
    while True:
        out = await asyncio.to_thread(node.ctl, "list_queues", "name", "messages")
        if any(line.split() == [queue, "0"] for line in out.splitlines()):
            return
        assert time.monotonic() < give_up, out
        await asyncio.sleep(0.2)


def _queue_node(cluster: BrokerCluster, queue: str) -> str:
    """The node a classic queue lives on: its process id reads `<node.N.N.N>`."""
    for line in cluster.ctl("list_queues", "name", "pid").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return parts[1].strip("<>").split(".")[0]
    raise AssertionError(f"no queue {queue}")

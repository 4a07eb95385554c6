"""The broker's message-size limit and the bounds of llm.dead, on a real broker.

All of it runs on a private node (tests/brokers.py) started with the fleet's
max_message_size, never on the machine's shared broker, whose settings no test changes:
the script test names the shared broker in AMQP_URL only to show that the script leaves
alone a node AMQP_URL does not name (its rabbitmqctl reaches the private node alone).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest
from pamqp.commands import Basic

from contracts import topology as t
from contracts.amqp import declare_topology
from contracts.codec import DEFAULT_MAX_JOB_BYTES
from tests.brokers import RABBITMQ_BIN, BrokerNode
from workers.dead_letters import dead_letter_copy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LIMIT = t.BROKER_MAX_MESSAGE_BYTES
GIVE_UP_S = 30.0  # a bound on polling only, never a measured figure


@pytest.fixture(scope="module")
def node() -> Iterator[BrokerNode]:
    """A node with the fleet's message-size limit in its configuration file."""
    with BrokerNode(max_message_size=LIMIT) as broker:
        yield broker


def vhost_url(node: BrokerNode, vhost: str) -> str:
    node.ctl("add_vhost", vhost)
    node.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return node.url_for(vhost)


def queue_arguments(node: BrokerNode, vhost: str) -> dict[str, dict[str, Any]]:
    rows = json.loads(
        node.ctl("list_queues", "-p", vhost, "name", "arguments", "--formatter", "json")
    )
    # Each argument is [name, AMQP type, value].
    return {row["name"]: {a[0]: a[2] for a in row["arguments"]} for row in rows}


def max_message_size(node: BrokerNode) -> str:
    return node.ctl("eval", "application:get_env(rabbit, max_message_size).").strip()


def test_the_shipped_broker_configuration_holds_the_fleets_limit() -> None:
    conf = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()
    (value,) = re.findall(r"(?m)^max_message_size\s*=\s*(\d+)\s*$", conf)
    assert int(value) == LIMIT


# -- the broker's message-size limit --------------------------------------------------------


async def test_a_publish_over_the_limit_is_refused_and_the_broker_carries_on(
    node: BrokerNode,
) -> None:
    connection = await aiormq.connect(node.url)
    try:
        channel = await connection.channel()  # publisher confirms on
        await channel.queue_declare("limits.big", durable=True)
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed) as refused:
            await channel.basic_publish(b"x" * (LIMIT + 1), routing_key="limits.big")
        assert "larger than configured max size" in str(refused.value)
        assert channel.is_closed and not connection.is_closed

        # The same connection goes on; a message of exactly the limit is taken.
        channel = await connection.channel()
        confirm = await channel.basic_publish(b"y" * LIMIT, routing_key="limits.big")
        assert isinstance(confirm, Basic.Ack)
        declared = await channel.queue_declare("limits.big", passive=True)
        assert declared.message_count == 1
        await channel.queue_delete("limits.big")
    finally:
        await connection.close()
    assert node.is_running


# -- llm.dead: bounded by length and bytes, oldest dropped --------------------------------


@pytest.fixture(scope="module")
async def small_dead(node: BrokerNode) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """The fleet's topology in a vhost of its own, llm.dead bounded to 3 messages / 2,500 B."""
    url = await asyncio.to_thread(vhost_url, node, "small-dead")
    connection = await aio_pika.connect(url)
    try:
        await declare_topology(connection, dead_max_length=3, dead_max_bytes=2500)
        yield connection
    finally:
        await connection.close()


async def publish_dead(connection: aio_pika.abc.AbstractConnection, bodies: list[bytes]) -> None:
    channel = await connection.channel()
    try:
        for body in bodies:  # each confirmed: the queue has applied its bound by then
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=t.DEAD_QUEUE)
    finally:
        await channel.close()


async def take_dead(connection: aio_pika.abc.AbstractConnection) -> list[bytes]:
    """Everything llm.dead holds, taken, oldest first."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(t.DEAD_QUEUE, passive=True)
        taken = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(message.body)
        return taken
    finally:
        await channel.close()


def dead_letters_pending(node: BrokerNode, vhost: str, queue: str) -> int:
    """Messages `queue` has dead-lettered at-least-once that no target has confirmed yet.

    Not a list_queues column on RabbitMQ 3.10, but an info item of quorum queues."""
    out = node.ctl(
        "eval",
        f'{{ok, Q}} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"{vhost}">>, queue, <<"{queue}">>)),'
        " rabbit_amqqueue:info(Q, [messages_dlx]).",
    )
    found = re.fullmatch(r"\[\{messages_dlx,(\d+)\}\]", out.strip())
    assert found, out
    return int(found.group(1))


async def test_llm_dead_drops_its_oldest_past_the_length_bound(
    small_dead: aio_pika.abc.AbstractConnection,
) -> None:
    await take_dead(small_dead)
    await publish_dead(small_dead, [f"m{i}".encode() for i in range(5)])
    assert await take_dead(small_dead) == [b"m2", b"m3", b"m4"]


async def test_llm_dead_drops_its_oldest_past_the_byte_bound(
    small_dead: aio_pika.abc.AbstractConnection,
) -> None:
    await take_dead(small_dead)
    await publish_dead(small_dead, [bytes([65 + i]) * 1000 for i in range(3)])
    assert await take_dead(small_dead) == [b"B" * 1000, b"C" * 1000]


async def test_at_least_once_dead_lettering_goes_on_into_a_full_llm_dead(
    node: BrokerNode, small_dead: aio_pika.abc.AbstractConnection
) -> None:
    """The job queues dead-letter at-least-once (they wait for the target's confirm):
    drop-head on llm.dead keeps confirming, so nothing stalls in the job queue."""
    await take_dead(small_dead)
    bodies = [f"job-{i}".encode() for i in range(5)]
    channel = await small_dead.channel()
    try:
        jobs = await channel.get_exchange(t.JOBS_EXCHANGE)
        for body in bodies:
            await jobs.publish(aio_pika.Message(body), routing_key=t.QUEUE_CHAT)
        queue = await channel.declare_queue(t.QUEUE_CHAT, passive=True)
        for body in bodies:
            message = await queue.get(no_ack=False)
            assert message.body == body
            await message.reject(requeue=False)
        # A call the queue answers after the rejects on this channel: they are applied.
        assert await queue.get(no_ack=False, fail=False) is None
    finally:
        await channel.close()

    give_up = time.monotonic() + GIVE_UP_S
    while pending := await asyncio.to_thread(
        dead_letters_pending, node, "small-dead", t.QUEUE_CHAT
    ):
        assert time.monotonic() < give_up, f"{pending} dead letters stuck in {t.QUEUE_CHAT}"
        await asyncio.sleep(0.1)
    assert await take_dead(small_dead) == bodies[-3:]


async def test_the_copy_of_an_oversize_job_is_taken_by_the_broker_as_a_sample(
    node: BrokerNode,
) -> None:
    """What a worker publishes for a job over its limit: accepted (user_id is the
    publishing login, the header fits a frame) and read back as the sample."""
    body = os.urandom(DEFAULT_MAX_JOB_BYTES + 1)
    props = Basic.Properties(correlation_id="rid-big", user_id="alice", headers={"h": "x" * 40_000})
    sample, copy = dead_letter_copy(
        body,
        props,
        code="bad_request",
        reason="payload too big",
        source_queue=t.QUEUE_CHAT,
        worker="w-1",
        worker_user="guest",  # the login of this test's connection
        crashes=None,
        max_body=DEFAULT_MAX_JOB_BYTES,
    )
    connection = await aio_pika.connect(node.url)
    try:
        await declare_topology(connection)  # llm.dead with the fleet's own bounds
        await take_dead(connection)
        channel = await connection.channel()
        raw = await channel.get_underlay_channel()
        confirm = await raw.basic_publish(
            sample, routing_key=t.DEAD_QUEUE, properties=copy, mandatory=True
        )
        assert isinstance(confirm, Basic.Ack)
        queue = await channel.declare_queue(t.DEAD_QUEUE, passive=True)
        message = await queue.get(no_ack=True)
    finally:
        await connection.close()
    assert message.body == body[: t.DEAD_SAMPLE_BYTES]
    assert message.user_id == "guest" and message.correlation_id == "rid-big"
    headers = message.headers
    assert headers[t.HDR_BODY_BYTES] == len(body)
    assert headers[t.HDR_BODY_SHA256] == hashlib.sha256(body).hexdigest()
    assert headers[t.HDR_BODY_SAMPLED] is True
    assert headers[t.HDR_DEAD_USER] == "alice"
    assert headers["x-fleet-headers-omitted"] > t.DEAD_MAX_HEADER_BYTES


async def test_the_fleet_declares_llm_dead_with_its_bounds(node: BrokerNode) -> None:
    connection = await aio_pika.connect(node.url)
    try:
        await declare_topology(connection)
    finally:
        await connection.close()
    arguments = await asyncio.to_thread(queue_arguments, node, "/")
    assert arguments[t.DEAD_QUEUE] == {
        "x-queue-type": "quorum",
        "x-max-length": t.DEAD_MAX_LENGTH,
        "x-max-length-bytes": t.DEAD_MAX_BYTES,
        "x-overflow": "drop-head",
    }
    # The job queues, which dead-letter into it, keep reject-publish (at-least-once).
    assert arguments[t.QUEUE_CHAT]["x-overflow"] == "reject-publish"


async def test_an_unbounded_llm_dead_of_an_older_version_keeps_working(
    node: BrokerNode,
) -> None:
    url = await asyncio.to_thread(vhost_url, node, "old-dead")
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(
            t.DEAD_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await channel.close()
        await declare_topology(connection)  # warns, and goes on with the queue as it is
        await publish_dead(connection, [b"still taken"])
        assert await take_dead(connection) == [b"still taken"]
    finally:
        await connection.close()
    arguments = await asyncio.to_thread(queue_arguments, node, "old-dead")
    assert arguments[t.DEAD_QUEUE] == {"x-queue-type": "quorum"}
    assert t.QUEUE_CHAT in arguments


# -- scripts/ensure-services.sh lowers a running node's limit -------------------------------


def ensure_services(node: BrokerNode, amqp_url: str, database_url: str) -> str:
    """Run the script with rabbitmqctl reaching `node` (its own CLI, cookie and name)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    env.update(
        PATH=f"{RABBITMQ_BIN}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(node.dir / "home"),
        RABBITMQ_NODENAME=node.name,
        AMQP_URL=amqp_url,
        DATABASE_URL=database_url,
        PYTHON=sys.executable,
    )
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure-services.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def set_max_message_size(node: BrokerNode, size: int) -> None:
    node.ctl("eval", f"application:set_env(rabbit, max_message_size, {size}).")


def test_ensure_services_lowers_a_larger_limit_and_keeps_a_smaller_one(
    node: BrokerNode, amqp_url: str, database_url: str
) -> None:
    try:
        set_max_message_size(node, 2 * LIMIT)
        # AMQP_URL names another broker than the node rabbitmqctl reaches: hands off.
        assert urllib.parse.urlsplit(amqp_url).port != node.port
        out = ensure_services(node, amqp_url, database_url)
        assert "max_message_size" not in out, out
        assert max_message_size(node) == f"{{ok,{2 * LIMIT}}}"

        out = ensure_services(node, node.url, database_url)
        assert f"lowered from {2 * LIMIT} bytes to {LIMIT}" in out, out
        assert max_message_size(node) == f"{{ok,{LIMIT}}}"

        set_max_message_size(node, 1 << 20)  # an operator's smaller choice
        out = ensure_services(node, node.url, database_url)
        assert "max_message_size is 1048576 bytes" in out and "left as it is" in out, out
        assert max_message_size(node) == "{ok,1048576}"
    finally:
        set_max_message_size(node, LIMIT)

"""Idempotent declaration of the fleet's RabbitMQ topology.

Producers and workers both call `declare_topology` so that whichever starts
first creates it; a job published before any worker ran is queued, not lost.

Every queue the fleet consumes is bounded: job queues by a delivery limit and
a dead-letter exchange, dead-letter notices by a small delivery limit of their
own, catalog requests by age, length and a delivery limit, so no message can
circulate for ever. `llm.dead`, kept for operators, is bounded by length and
bytes, oldest dropped, so no flood of bad jobs can fill the broker.
"""

from __future__ import annotations

import logging
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from contracts import topology as t

log = logging.getLogger("llm_fleet.topology")


def job_queue_arguments(broker_delivery_limit: int) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        # A backstop only: workers dead-letter a job that crashed `delivery_limit`
        # workers themselves (they can tell a crash from a broker restart; the
        # broker counts both).
        "x-delivery-limit": broker_delivery_limit,
        "x-dead-letter-exchange": t.DEAD_LETTER_EXCHANGE,
        # The default dead-lettering republishes without confirms and can lose
        # messages; at-least-once needs reject-publish overflow (RabbitMQ ≥ 3.10).
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def dead_queue_arguments(max_length: int, max_bytes: int) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-max-length": max_length,
        "x-max-length-bytes": max_bytes,
        # Dropping the oldest keeps llm.dead accepting: the job queues' at-least-once
        # dead-lettering only ever has to wait for a target that rejects, and a
        # quorum queue with drop-head never does. reject-publish here would stall
        # every dead-lettered job behind a full llm.dead instead.
        "x-overflow": "drop-head",
    }


def _queue_arguments(
    broker_delivery_limit: int, dead_max_length: int, dead_max_bytes: int
) -> dict[str, dict[str, Any]]:
    job_args = job_queue_arguments(broker_delivery_limit)
    return {
        **{name: job_args for name in t.JOB_QUEUES},
        t.DEAD_QUEUE: dead_queue_arguments(dead_max_length, dead_max_bytes),
        # Without a dead-letter exchange, a notice over its limit is dropped; the
        # job itself is still in llm.dead.
        t.DEAD_NOTIFY_QUEUE: {
            "x-queue-type": "quorum",
            "x-delivery-limit": t.NOTICE_DELIVERY_LIMIT,
        },
        # Quorum, so losing a node leaves it answering; no dead-letter exchange:
        # a stale catalog request is dropped, never kept for operators.
        t.CATALOG_QUEUE: {
            "x-queue-type": "quorum",
            "x-message-ttl": t.CATALOG_MAX_AGE_MS,
            "x-max-length": t.CATALOG_BACKLOG,
            "x-overflow": "drop-head",
            "x-delivery-limit": t.NOTICE_DELIVERY_LIMIT,
        },
    }


async def _declare_queue(
    connection: AbstractConnection, channel: AbstractChannel, name: str, arguments: dict[str, Any]
) -> AbstractChannel:
    """Declare one durable queue; keep an existing one declared with other arguments.

    RabbitMQ refuses to change a queue's arguments (PRECONDITION_FAILED, which
    also closes the channel). A fleet upgraded in place keeps running on the
    queue as it is, and says so once per declaration, rather than refusing to start.
    """
    try:
        await channel.declare_queue(name, durable=True, arguments=arguments)
        return channel
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        log.warning(
            "queue %s exists with other arguments than this version declares (%s); "
            "using it as it is. To adopt the new arguments, drain and delete the queue "
            "while no producer runs, or set a RabbitMQ policy (README: Upgrading).",
            name,
            exc,
        )
    channel = await connection.channel()
    await channel.declare_queue(name, passive=True)
    return channel


async def declare_release_stream(connection: AbstractConnection) -> None:
    """The stream only workers use (workers/releases.py); producers never declare it."""
    channel = await connection.channel()
    try:
        arguments = {"x-queue-type": "stream", "x-max-age": t.RELEASES_MAX_AGE}
        channel = await _declare_queue(connection, channel, t.RELEASES_QUEUE, arguments)
    finally:
        await channel.close()


async def declare_topology(
    connection: AbstractConnection,
    *,
    broker_delivery_limit: int = t.DEFAULT_BROKER_DELIVERY_LIMIT,
    dead_max_length: int = t.DEAD_MAX_LENGTH,
    dead_max_bytes: int = t.DEAD_MAX_BYTES,
) -> None:
    """Declare exchanges, queues and bindings on a channel of its own.

    The bounds of llm.dead are parameters only so tests can use small ones;
    whoever declares first fixes them (see _declare_queue).
    """
    channel = await connection.channel()
    try:
        await channel.declare_exchange(t.JOBS_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
        await channel.declare_exchange(
            t.DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        await channel.declare_exchange(
            t.CONTROL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        queues = _queue_arguments(broker_delivery_limit, dead_max_length, dead_max_bytes)
        for name, arguments in queues.items():
            channel = await _declare_queue(connection, channel, name, arguments)
        raw = await channel.get_underlay_channel()
        for name in t.JOB_QUEUES:
            await raw.queue_bind(name, t.JOBS_EXCHANGE, routing_key=name)
        # Producers publish only to exchanges (their logins may not write the
        # default one), catalog requests included.
        await raw.queue_bind(t.CATALOG_QUEUE, t.JOBS_EXCHANGE, routing_key=t.CATALOG_QUEUE)
        for name in (t.DEAD_QUEUE, t.DEAD_NOTIFY_QUEUE):
            await raw.queue_bind(name, t.DEAD_LETTER_EXCHANGE, routing_key="")
    finally:
        await channel.close()

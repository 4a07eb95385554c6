"""Idempotent declaration of the fleet's RabbitMQ topology.

Producers and workers both call `declare_topology` so that whichever starts
first creates it; a job published before any worker ran is queued, not lost.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from contracts import topology as t


def job_queue_arguments(delivery_limit: int) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        # Poison messages (a job that kills its worker every time) stop after this
        # many deliveries and are dead-lettered instead of looping for ever.
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": t.DEAD_LETTER_EXCHANGE,
        # The default dead-lettering republishes without confirms and can lose
        # messages; at-least-once needs reject-publish overflow (RabbitMQ ≥ 3.10).
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_topology(
    channel: AbstractChannel, *, delivery_limit: int = t.DEFAULT_DELIVERY_LIMIT
) -> dict[str, AbstractQueue]:
    """Declare exchanges and queues; return the queues by name."""
    queues: dict[str, AbstractQueue] = {}
    jobs = await channel.declare_exchange(
        t.JOBS_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dlx = await channel.declare_exchange(
        t.DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
    )
    await channel.declare_exchange(t.CONTROL_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
    for name in t.JOB_QUEUES:
        queue = await channel.declare_queue(
            name, durable=True, arguments=job_queue_arguments(delivery_limit)
        )
        await queue.bind(jobs, routing_key=name)
        queues[name] = queue
    for name in (t.DEAD_QUEUE, t.DEAD_NOTIFY_QUEUE):
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(dlx)
        queues[name] = queue
    return queues

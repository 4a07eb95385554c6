"""Exchange, queue and header names shared by producers and workers."""

from __future__ import annotations

from typing import Final

CONTRACT_VERSION: Final = 1

JOBS_EXCHANGE: Final = "llm.jobs"  # direct; routing key == queue name
CONTROL_EXCHANGE: Final = "llm.control"  # fanout; cancellations to every worker
DEAD_LETTER_EXCHANGE: Final = "llm.dlx"  # fanout
DEAD_QUEUE: Final = "llm.dead"  # kept for operators
DEAD_NOTIFY_QUEUE: Final = "llm.dead.notify"  # drained by workers to answer producers

QUEUE_CHAT: Final = "llm.chat"
QUEUE_EMBED: Final = "llm.embed"
QUEUE_BATCH: Final = "llm.batch"
JOB_QUEUES: Final = (QUEUE_CHAT, QUEUE_EMBED, QUEUE_BATCH)

# Interactive kinds go to llm.chat, vector work to llm.embed; producers running
# backfills pass `batch=True` to keep them off the interactive queues.
DEFAULT_QUEUE_FOR_KIND: Final = {
    "chat": QUEUE_CHAT,
    "verify": QUEUE_CHAT,
    "embed": QUEUE_EMBED,
    "rerank": QUEUE_EMBED,
}

DEFAULT_DELIVERY_LIMIT: Final = 5

# Headers the fleet sets on dead-lettered copies it publishes itself.
HDR_DEAD_CODE: Final = "x-fleet-error-code"
HDR_DEAD_REASON: Final = "x-fleet-error-reason"
HDR_DEAD_QUEUE: Final = "x-fleet-source-queue"
# Set by producers: publish time in unix µs (queue time in the final frame's metrics).
HDR_PUBLISHED_US: Final = "x-published-us"
# Set by quorum queues on redelivery.
HDR_DELIVERY_COUNT: Final = "x-delivery-count"

"""Exchange, queue and header names shared by producers and workers."""

from __future__ import annotations

import re
from typing import Final

CONTRACT_VERSION: Final = 1

JOBS_EXCHANGE: Final = "llm.jobs"  # direct; routing key == queue name
CONTROL_EXCHANGE: Final = "llm.control"  # fanout; cancellations to every worker
DEAD_LETTER_EXCHANGE: Final = "llm.dlx"  # fanout
DEAD_QUEUE: Final = "llm.dead"  # kept for operators
DEAD_NOTIFY_QUEUE: Final = "llm.dead.notify"  # drained by workers to answer producers
# Stream of "these jobs went back to their queue through no fault of their own"
# (the worker lost its broker connection or ran out of shutdown grace), read by
# every worker so the delivery limit counts crashes, not broker restarts.
RELEASES_QUEUE: Final = "llm.releases"
RELEASES_MAX_AGE: Final = "1h"  # a job redelivered later than this counts every return

# Producers ask what the fleet supports here (`FleetClient.providers()`); any one
# live worker answers from its registry. Not a job queue: nothing in it is ever
# dead-lettered, and a request nobody takes in time simply expires.
CATALOG_QUEUE: Final = "llm.catalog"
CATALOG_MAX_AGE_MS: Final = 60_000  # backstop; each request also expires with its caller's wait
CATALOG_BACKLOG: Final = 1_000  # requests kept at most, oldest dropped

# llm.dead keeps at most this many messages and body bytes; past either bound the
# oldest are dropped, so a flood of bad jobs cannot fill the broker's disk
# (README: Limits, with BROKER_MAX_MESSAGE_BYTES below).
DEAD_MAX_LENGTH: Final = 100_000
DEAD_MAX_BYTES: Final = 512 * 1024 * 1024
# A dead-letter copy of a job over the job size limit keeps only its first bytes.
DEAD_SAMPLE_BYTES: Final = 64 * 1024
# The producer's headers kept on a dead-letter copy at most: the copy's content
# header must fit in one frame (frame_max, 128 KiB by default) beside our own.
DEAD_MAX_HEADER_BYTES: Final = 32 * 1024

# Reply queues: `llm.reply.<broker user>.<token>`, the token of letters, digits,
# '_' and '-' only. A worker answers a job only into a queue named for the user
# the broker says published it, and a producer's permissions cover only its own
# prefix, so no producer can name (or read) another's replies.
REPLY_QUEUE_PREFIX: Final = "llm.reply."
REPLY_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Broker users the fleet's roles use unless configured otherwise.
DEFAULT_WORKER_USER: Final = "llm-fleet-worker"
DEFAULT_OPERATOR_USER: Final = "llm-fleet-operator"

QUEUE_CHAT: Final = "llm.chat"
QUEUE_EMBED: Final = "llm.embed"
QUEUE_BATCH: Final = "llm.batch"
JOB_QUEUES: Final = (QUEUE_CHAT, QUEUE_EMBED, QUEUE_BATCH)
# Queues holding messages (the release stream is append-only and cannot be purged).
MESSAGE_QUEUES: Final = (*JOB_QUEUES, DEAD_QUEUE, DEAD_NOTIFY_QUEUE, CATALOG_QUEUE)

# Interactive kinds go to llm.chat, vector work to llm.embed; producers running
# backfills pass `batch=True` to keep them off the interactive queues.
DEFAULT_QUEUE_FOR_KIND: Final = {
    "chat": QUEUE_CHAT,
    "verify": QUEUE_CHAT,
    "embed": QUEUE_EMBED,
    "rerank": QUEUE_EMBED,
}

# The broker's own message-size limit (max_message_size in the shipped
# configuration): the largest legitimate message is an embedding answer
# (2,048 inputs x 3,072 dimensions x 4 bytes, about 25 MB).
BROKER_MAX_MESSAGE_BYTES: Final = 32 * 1024 * 1024

# Crashes a job may cause (workers that died holding it) before it is dead-lettered.
DEFAULT_DELIVERY_LIMIT: Final = 5
# The broker's own x-delivery-limit: a backstop counting every return to the
# queue, broker restarts included, for jobs the crash count cannot see.
DEFAULT_BROKER_DELIVERY_LIMIT: Final = 20
# How often a dead-letter notice may be delivered before the broker drops it
# (the job itself stays in llm.dead): a notice must never loop for ever.
NOTICE_DELIVERY_LIMIT: Final = 3
# The attempt number of a dead-letter notice: above any attempt a worker can
# number, so the client always takes it as the newest word on its request.
NOTICE_ATTEMPT: Final = 2**31 - 1

# Headers the fleet sets on dead-lettered copies it publishes itself.
HDR_DEAD_CODE: Final = "x-fleet-error-code"
HDR_DEAD_REASON: Final = "x-fleet-error-reason"
HDR_DEAD_QUEUE: Final = "x-fleet-source-queue"
# Set by producers: publish time in unix µs (queue time in the final frame's metrics).
HDR_PUBLISHED_US: Final = "x-published-us"
# Set by quorum queues on redelivery.
HDR_DELIVERY_COUNT: Final = "x-delivery-count"
# On dead-lettered copies: how many workers died holding the job.
HDR_DEAD_CRASHES: Final = "x-fleet-crashes"
# On dead-lettered copies: the broker-validated user_id the job was published with.
HDR_DEAD_USER: Final = "x-fleet-user"
# On dead-lettered copies of a body over the job limit, which travels as a sample:
# the original's size and SHA-256 (hex), and `true` in HDR_BODY_SAMPLED.
HDR_BODY_BYTES: Final = "x-fleet-body-bytes"
HDR_BODY_SHA256: Final = "x-fleet-body-sha256"
HDR_BODY_SAMPLED: Final = "x-fleet-body-sampled"


def reply_queue_prefix(user: str) -> str:
    return f"{REPLY_QUEUE_PREFIX}{user}."


def owns_reply_queue(user: str, queue: str) -> bool:
    """True when `queue` is one of `user`'s reply queues.

    The token after the user's prefix may hold no dot, so user `a` never owns
    `llm.reply.a.b.x` (user `a.b`'s queue).
    """
    prefix = reply_queue_prefix(user)
    return (
        bool(user)
        and queue.startswith(prefix)
        and (REPLY_TOKEN_RE.fullmatch(queue[len(prefix) :]) is not None)
    )

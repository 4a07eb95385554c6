"""`FleetClient`: the producer-side API an assistant service or a backfill uses.

```python
async with FleetClient(amqp_url) as client:
    async for event in client.stream_chat(target, messages):
        if isinstance(event, Restart):   # a worker died; the job is being redone
            answer.clear()
        elif isinstance(event, Delta):
            answer.append(event.text)
        elif isinstance(event, Final):
            print(event.usage, event.metrics)
```

Jobs are published with publisher confirms. Replies arrive on one exclusive
queue per client, are demultiplexed by request id, put in `seq` order, and
frames of an older attempt are dropped once a newer attempt starts. Leaving
`stream_chat` early cancels the job on whichever worker runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import msgspec
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from contracts import topology as t
from contracts.amqp import declare_topology
from contracts.codec import decode_frames, encode
from contracts.errors import ContractError, ProviderTimeout, error_for_code
from contracts.frames import Delta, Error, Final, Frame, Start, VerifyInfo
from contracts.jobs import (
    ChatJob,
    EmbedJob,
    Job,
    Message,
    RerankJob,
    Target,
    Tool,
    VerifyJob,
    job_kind,
)

# stdlib logging: producers import `contracts` without the worker's logging stack.
log = logging.getLogger("llm_fleet.client")

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass(frozen=True, slots=True)
class Restart:
    """A newer attempt began: discard any partial output shown for this request."""

    attempt: int


ChatEvent = Delta | Restart | Final


class _Inbox:
    """Orders one request's frames by seq and keeps only the newest attempt."""

    __slots__ = ("attempt", "held", "next_seq", "queue", "shown")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Frame | Restart] = asyncio.Queue()
        self.attempt = 0
        self.next_seq = 0
        self.held: dict[int, Frame] = {}
        self.shown = False

    def push(self, frame: Frame) -> None:
        if frame.attempt < self.attempt:
            return
        if frame.attempt > self.attempt:
            if self.shown:
                self.queue.put_nowait(Restart(frame.attempt))
            self.attempt, self.next_seq, self.shown = frame.attempt, 0, False
            self.held.clear()
        if frame.seq < self.next_seq:
            return  # duplicate
        if frame.seq > self.next_seq:
            self.held[frame.seq] = frame
            return
        self._deliver(frame)
        while self.next_seq in self.held:
            self._deliver(self.held.pop(self.next_seq))

    def _deliver(self, frame: Frame) -> None:
        self.next_seq += 1
        if type(frame) is Delta:
            self.shown = True
        self.queue.put_nowait(frame)


class FleetClient:
    def __init__(
        self,
        amqp_url: str = DEFAULT_AMQP_URL,
        *,
        default_timeout: float = 600.0,
        delivery_limit: int = t.DEFAULT_DELIVERY_LIMIT,
        name: str = "llm-fleet client",
        reply_queue: str | None = None,
        reply_queue_expires: float = 7 * 24 * 3600.0,
    ) -> None:
        """`reply_queue` names a durable reply queue (for backfills): answers wait there
        while the producer is down and come back through `results()` after a restart.
        Without it, each client gets an exclusive queue that goes away with it."""
        self._url = amqp_url
        self._default_timeout = default_timeout
        self._delivery_limit = delivery_limit
        self._name = name
        self._durable = reply_queue is not None
        self._reply_queue = reply_queue or f"llm.reply.{uuid.uuid4().hex[:16]}"
        self._reply_expires_ms = int(reply_queue_expires * 1000)
        self._inboxes: dict[str, _Inbox] = {}
        # Terminal frames nobody is waiting for, with the message to ack once taken.
        self._unclaimed: asyncio.Queue[tuple[list[Final | Error], AbstractIncomingMessage]] = (
            asyncio.Queue()
        )
        self._conn: AbstractRobustConnection | None = None
        self._reply_consumer: tuple[AbstractQueue, str] | None = None
        self._jobs: AbstractExchange | None = None
        self._control: AbstractExchange | None = None

    @property
    def reply_queue(self) -> str:
        return self._reply_queue

    async def connect(self) -> FleetClient:
        self._conn = await aio_pika.connect_robust(
            self._url, client_properties={"connection_name": f"{self._name} pid {os.getpid()}"}
        )
        channel: AbstractChannel = await self._conn.channel(
            publisher_confirms=True, on_return_raises=True
        )
        await declare_topology(channel, delivery_limit=self._delivery_limit)
        self._jobs = await channel.get_exchange(t.JOBS_EXCHANGE)
        self._control = await channel.get_exchange(t.CONTROL_EXCHANGE)
        reply_channel = await self._conn.channel()
        # Classic, not quorum: RabbitMQ advises against quorum queues for replies.
        # The explicit name survives a reconnect of the robust connection.
        if self._durable:
            await reply_channel.set_qos(prefetch_count=1000)
            queue = await reply_channel.declare_queue(
                self._reply_queue,
                durable=True,
                arguments={"x-queue-type": "classic", "x-expires": self._reply_expires_ms},
            )
            # Acked once its answers are handed over.
            self._reply_consumer = (queue, await queue.consume(self._on_reply))
        else:
            queue = await reply_channel.declare_queue(
                self._reply_queue, exclusive=True, auto_delete=True
            )
            await queue.consume(self._on_reply, no_ack=True)
        return self

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def __aenter__(self) -> FleetClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests ----------------------------------------------------------

    async def stream_chat(
        self,
        target: Target,
        messages: Sequence[Message],
        *,
        tools: Sequence[Tool] = (),
        options: Mapping[str, Any] | None = None,
        fallbacks: Sequence[Target] = (),
        deadline: float | None = None,
        metadata: Mapping[str, str] | None = None,
        request_id: str | None = None,
        batch: bool = False,
    ) -> AsyncIterator[ChatEvent]:
        """Yield `Delta`s as tokens arrive (and `Restart` if a worker died), then the `Final`."""
        job = _chat_job(
            target, messages, tools, options, fallbacks, deadline, metadata, request_id, stream=True
        )
        async for event in self._exchange(job, batch=batch, deadline=deadline):
            if type(event) is Start:
                continue
            yield event  # type: ignore[misc]

    async def chat(
        self,
        target: Target,
        messages: Sequence[Message],
        *,
        tools: Sequence[Tool] = (),
        options: Mapping[str, Any] | None = None,
        fallbacks: Sequence[Target] = (),
        deadline: float | None = None,
        metadata: Mapping[str, str] | None = None,
        request_id: str | None = None,
        batch: bool = False,
    ) -> Final:
        """One complete answer (the provider is called without streaming)."""
        job = _chat_job(
            target,
            messages,
            tools,
            options,
            fallbacks,
            deadline,
            metadata,
            request_id,
            stream=False,
        )
        return await self.request(job, batch=batch, deadline=deadline)

    async def embed(
        self,
        target: Target,
        inputs: Sequence[str],
        *,
        input_type: str | None = None,
        dimensions: int | None = None,
        deadline: float | None = None,
        metadata: Mapping[str, str] | None = None,
        request_id: str | None = None,
        batch: bool = False,
    ) -> Final:
        """Vectors arrive packed in `final.embeddings` (`.vectors()` unpacks them)."""
        job = EmbedJob(
            v=t.CONTRACT_VERSION,
            request_id=request_id or uuid.uuid4().hex,
            target=target,
            inputs=list(inputs),
            input_type=input_type,
            dimensions=dimensions,
            deadline=_deadline_ms(deadline),
            metadata=dict(metadata or {}),
        )
        return await self.request(job, batch=batch, deadline=deadline)

    async def rerank(
        self,
        target: Target,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        deadline: float | None = None,
        request_id: str | None = None,
    ) -> Final:
        job = RerankJob(
            v=t.CONTRACT_VERSION,
            request_id=request_id or uuid.uuid4().hex,
            target=target,
            query=query,
            documents=list(documents),
            top_n=top_n,
            deadline=_deadline_ms(deadline),
        )
        return await self.request(job, deadline=deadline)

    async def verify(self, target: Target, *, deadline: float | None = None) -> VerifyInfo:
        """Ask the provider whether the credential works (its cheapest authenticated call)."""
        job = VerifyJob(
            v=t.CONTRACT_VERSION,
            request_id=uuid.uuid4().hex,
            target=target,
            deadline=_deadline_ms(deadline),
        )
        final = await self.request(job, deadline=deadline)
        return final.verify or VerifyInfo(ok=False, detail="worker sent no verify result")

    async def request(
        self, job: Job, *, batch: bool = False, deadline: float | None = None
    ) -> Final:
        """Publish any job and wait for its final frame; an error frame raises its FleetError."""
        async for event in self._exchange(job, batch=batch, deadline=deadline):
            if type(event) is Final:
                return event
        raise AssertionError("unreachable: _exchange ends with a Final or raises")

    # -- plumbing ----------------------------------------------------------

    async def _exchange(
        self, job: Job, *, batch: bool, deadline: float | None
    ) -> AsyncIterator[Frame | Restart]:
        rid = job.request_id
        inbox = _Inbox()
        self._inboxes[rid] = inbox
        done = False
        wait = self._default_timeout if deadline is None else max(0.0, deadline - time.time()) + 5.0
        give_up_loop = asyncio.get_running_loop().time() + wait
        try:
            await self.publish(job, batch=batch)
            while True:
                queue = inbox.queue
                if queue.empty():
                    # asyncio.timeout, not wait_for: no extra task per frame.
                    try:
                        async with asyncio.timeout_at(give_up_loop):
                            item = await queue.get()
                    except TimeoutError:
                        raise ProviderTimeout(
                            f"no answer from the fleet for request {rid}"
                        ) from None
                else:
                    item = queue.get_nowait()
                if type(item) is Final:
                    done = True
                    yield item
                    return
                if type(item) is Error:
                    done = True
                    raise error_for_code(item.code, item.message, item.provider_status)
                yield item
        finally:
            self._inboxes.pop(rid, None)
            if not done:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.cancel(rid))

    async def publish(self, job: Job, *, batch: bool = False) -> None:
        """Publish a job and wait for the broker's confirm (no waiting for the answer)."""
        if self._jobs is None:
            raise RuntimeError("FleetClient is not connected; use `async with FleetClient(...)`")
        kind = job_kind(job)
        queue = t.QUEUE_BATCH if batch else t.DEFAULT_QUEUE_FOR_KIND[kind]
        message = aio_pika.Message(
            encode(job),
            reply_to=self._reply_queue,
            correlation_id=job.request_id,
            message_id=job.request_id,
            content_type="application/msgpack",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            # Integer µs: AMQP float headers are 32-bit and cannot hold a timestamp.
            headers={t.HDR_PUBLISHED_US: time.time_ns() // 1000},
        )
        await self._jobs.publish(message, routing_key=queue, mandatory=True)

    async def submit(self, job: Job, *, batch: bool = True) -> None:
        """Publish a job without waiting for it; its answer arrives through `results()`.

        For backfills: with a named `reply_queue`, answers survive a producer restart.
        """
        if not self._durable:
            raise RuntimeError("submit() needs a named reply_queue; use request() instead")
        await self.publish(job, batch=batch)

    async def results(self) -> AsyncIterator[Final | Error]:
        """Answers to jobs nobody awaits (submitted, or from before a restart), in arrival
        order, forever; break out when done. A reply message is acked only after all of
        its answers were taken, so a crash before then gets them again."""
        if not self._durable:
            raise RuntimeError("results() needs a named reply_queue")
        while True:
            frames, message = await self._unclaimed.get()
            for frame in frames:
                yield frame
            await message.ack()

    async def delete_reply_queue(self) -> None:
        """Remove a named reply queue once a backfill has all its answers."""
        if self._conn is not None and self._reply_consumer is not None:
            queue, tag = self._reply_consumer
            self._reply_consumer = None
            await queue.cancel(tag)
            await queue.delete(if_unused=False, if_empty=False)

    async def cancel(self, request_id: str) -> None:
        """Stop a job wherever it runs (or before it starts)."""
        await self._control_message({"type": "cancel", "request_id": request_id})

    async def credential_revoked(self, credential_id: str) -> None:
        """Tell every worker to forget its cached copy of a stored credential now."""
        await self._control_message({"type": "credential_revoked", "credential_id": credential_id})

    async def _control_message(self, fields: dict[str, str]) -> None:
        if self._control is None:
            return
        body = msgspec.msgpack.encode({"v": t.CONTRACT_VERSION, **fields})
        await self._control.publish(aio_pika.Message(body), routing_key="")

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        try:
            frames = decode_frames(message.body)
        except ContractError as exc:
            log.warning("undecodable reply message: %s", exc.message)
            return
        inboxes = self._inboxes
        unclaimed: list[Final | Error] = []
        for frame in frames:
            inbox = inboxes.get(frame.request_id)
            if inbox is not None:
                inbox.push(frame)
            elif self._durable and isinstance(frame, Final | Error):
                unclaimed.append(frame)
        if not self._durable:
            return
        if unclaimed:
            self._unclaimed.put_nowait((unclaimed, message))
        else:
            await message.ack()


def _chat_job(
    target: Target,
    messages: Sequence[Message],
    tools: Sequence[Tool],
    options: Mapping[str, Any] | None,
    fallbacks: Sequence[Target],
    deadline: float | None,
    metadata: Mapping[str, str] | None,
    request_id: str | None,
    *,
    stream: bool,
) -> ChatJob:
    return ChatJob(
        v=t.CONTRACT_VERSION,
        request_id=request_id or uuid.uuid4().hex,
        target=target,
        messages=list(messages),
        tools=list(tools),
        options=dict(options or {}),
        fallbacks=list(fallbacks),
        deadline=_deadline_ms(deadline),
        metadata=dict(metadata or {}),
        stream=stream,
    )


def _deadline_ms(deadline: float | None) -> int | None:
    """`deadline` is a unix timestamp in seconds (time.time() based)."""
    return None if deadline is None else int(deadline * 1000)

"""`FleetClient`: the producer-side API an assistant service or a backfill uses.

```python
async with FleetClient(amqp_url) as client:
    async for event in client.stream_chat(target, messages):
        if isinstance(event, Restart):   # the answer is being redone: drop what was shown
            answer.clear()
        elif isinstance(event, Delta):
            answer.append(event.text)
        elif isinstance(event, Final):
            print(event.usage, event.metrics)
```

Jobs are published with publisher confirms. Replies arrive on one reply queue
per client, are demultiplexed by request id, put in `seq` order, and frames of
an older attempt are dropped once a newer attempt starts. Leaving
`stream_chat` early cancels the job on whichever worker runs it.

Nothing in flight is lost to a broker restart or a lost cluster node: the
reply queue is durable (it expires only once the client is gone), the client
reconnects by itself (to the next broker address first), and if its reply
queue did not survive, every request in flight is published again as a new
*submission* whose frames alone are read. A caller who waited sees `Restart`
and a clean answer; if no broker comes back within `reconnect_timeout`,
requests in flight fail with a retryable `ProviderUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiormq
import msgspec
from aio_pika.abc import AbstractConnection
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from contracts import topology as t
from contracts.amqp import declare_topology
from contracts.brokers import (
    BROKER_ERRORS,
    DEFAULT_AMQP_URL,
    Backoff,
    BrokerRing,
    delivery_tag,
    watch_channel,
)
from contracts.catalog import CatalogRequest, ProviderInfo
from contracts.codec import DEFAULT_MAX_JOB_BYTES, decode_frames, encode
from contracts.errors import (
    BadRequest,
    ContractError,
    FleetError,
    Forbidden,
    ProviderTimeout,
    ProviderUnavailable,
)
from contracts.errors import error_for_code as _error_for_code
from contracts.frames import (
    Catalog,
    Delta,
    Error,
    Final,
    Frame,
    Start,
    VerifyInfo,
    tool_call_deltas,
)
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
from contracts.tracing import with_trace_context

# stdlib logging: producers import `contracts` without the worker's logging stack.
log = logging.getLogger("llm_fleet.client")

__all__ = ["DEFAULT_AMQP_URL", "ChatEvent", "FleetClient", "Receipt", "Restart"]


@dataclass(frozen=True, slots=True)
class Restart:
    """The answer is being redone: discard any partial output shown for this request.

    `attempt` is the new attempt's number, or 0 when the client itself published
    the request again (its reply queue was lost with a broker).
    """

    attempt: int


ChatEvent = Delta | Restart | Final


class _Inbox:
    """Orders one request's frames by seq and keeps only the newest attempt."""

    __slots__ = ("attempt", "held", "next_seq", "queue", "shown", "submission")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Frame | Restart | FleetError] = asyncio.Queue()
        self.submission = 0
        self.attempt = 0
        self.next_seq = 0
        self.held: dict[int, Frame] = {}
        self.shown = False

    def push(self, frame: Frame) -> None:
        if frame.submission != self.submission or frame.attempt < self.attempt:
            return
        if frame.attempt > self.attempt:
            self._begin(Restart(frame.attempt))
            self.attempt = frame.attempt
        if frame.seq < self.next_seq:
            return  # duplicate
        if frame.seq > self.next_seq:
            if type(frame) is Final or type(frame) is Error:
                self._finish_after_gap(frame)
            else:
                self.held[frame.seq] = frame
            return
        self._deliver(frame)
        while self.next_seq in self.held:
            self._deliver(self.held.pop(self.next_seq))

    def resubmitted(self, submission: int) -> None:
        """The request was published again: only that submission's frames count now."""
        self.submission = submission
        self.attempt = 0
        self._begin(Restart(0))

    def _begin(self, restart: Restart) -> None:
        if self.shown:
            self.queue.put_nowait(restart)
        self.next_seq, self.shown = 0, False
        self.held.clear()

    def _finish_after_gap(self, frame: Final | Error) -> None:
        """Frames before the last one were lost (transient deltas do not survive a
        broker restart; the persistent final does). The final frame holds the whole
        answer, so the caller is given it in one piece rather than a hole."""
        self.held.clear()
        message = frame.message if type(frame) is Final else None
        if message is not None:
            self._begin(Restart(frame.attempt))
            catch_up = Delta(
                request_id=frame.request_id,
                attempt=frame.attempt,
                seq=frame.seq,
                submission=frame.submission,
                text=message.text(),
                tool_calls=tool_call_deltas(message),
                refusal=message.refusal or "",
            )
            self.queue.put_nowait(catch_up)
        self._deliver(frame)

    def _deliver(self, frame: Frame) -> None:
        self.next_seq = frame.seq + 1
        if type(frame) is Delta:
            self.shown = True
        self.queue.put_nowait(frame)


@dataclass(slots=True)
class _Pending:
    """A request this client published and has not seen answered yet."""

    job: Job
    batch: bool
    inbox: _Inbox | None  # None: submitted, answered through results()
    submission: int = 0
    confirmed: bool = False  # the broker has the current submission
    sending: bool = False  # `_send` owns it (publishing, or waiting to publish again)


@dataclass(frozen=True, slots=True)
class Receipt:
    """The answers of one reply message, and the acknowledgement that lets it go."""

    answers: list[Final | Error]
    _message: DeliveredMessage = field(repr=False)

    async def ack(self) -> None:
        await _ack(self._message)


@dataclass(slots=True)
class _Session:
    connection: AbstractConnection
    publish: RawChannel  # confirms, mandatory returns raise
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    reply: RawChannel | None = None
    consumer_tag: str | None = None

    async def stop_consuming(self) -> None:
        """Cancel our reply consumer first, so deleting its queue is not a broker cancel."""
        if self.reply is not None and self.consumer_tag is not None:
            with contextlib.suppress(*BROKER_ERRORS):
                await self.reply.basic_cancel(self.consumer_tag)
            self.consumer_tag = None


class FleetClient:
    def __init__(
        self,
        amqp_url: str | Sequence[str] = DEFAULT_AMQP_URL,
        *,
        default_timeout: float = 600.0,
        name: str = "llm-fleet client",
        reply_queue: str | None = None,
        reply_queue_expires: float | None = None,
        reconnect_timeout: float = 30.0,
        broker_delivery_limit: int = t.DEFAULT_BROKER_DELIVERY_LIMIT,
        worker_users: Collection[str] = (t.DEFAULT_WORKER_USER,),
    ) -> None:
        """`amqp_url`: one broker, or several of a cluster (a list or comma-separated).

        `reply_queue` names a durable reply queue (for backfills): answers wait there
        while the producer is down and come back through `results()` after a restart.
        Without it, each client gets a queue of its own that is deleted on `close()`,
        or `reply_queue_expires` seconds (default 120) after the client vanished.
        `reconnect_timeout`: how long requests in flight wait for a lost broker
        connection to come back before failing with a retryable error.

        Identity comes from the broker: every message carries the login as its
        `user_id`, which RabbitMQ validates. Reply queues are named
        `llm.reply.<login>.<token>` (a `reply_queue` name is that token). Frames are
        believed only from `worker_users` (the logins workers run as) or from this
        client's own login (a single-login broker, as in development); others, and
        frames for request ids this client never sent, are dropped and counted in
        `dropped_frames`.
        """
        self._ring = BrokerRing(amqp_url)
        self._trusted = frozenset(worker_users) | {self._ring.user}
        self.dropped_frames: Counter[str] = Counter()
        self._default_timeout = default_timeout
        self._name = name
        self._durable = reply_queue is not None
        self._reply_queue = (
            self._named_reply_queue(reply_queue) if reply_queue else self._new_reply_queue_name()
        )
        default_expires = 7 * 24 * 3600.0 if self._durable else 120.0
        self._reply_expires_ms = int((reply_queue_expires or default_expires) * 1000)
        self._reconnect_timeout = reconnect_timeout
        self._broker_delivery_limit = broker_delivery_limit
        self._inboxes: dict[str, _Inbox] = {}
        self._pending: dict[str, _Pending] = {}
        # Terminal frames nobody is waiting for, with the message to ack once taken.
        # Requests this client gave up on or saw answered: their late frames (after a
        # cancel, a timeout, a resubmission) are expected, not strangers'.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._unclaimed: asyncio.Queue[tuple[list[Final | Error], DeliveredMessage]] = (
            asyncio.Queue()
        )
        self._session: _Session | None = None
        self._ready = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    def _new_reply_queue_name(self) -> str:
        return t.reply_queue_prefix(self._ring.user) + uuid.uuid4().hex[:16]

    def _named_reply_queue(self, name: str) -> str:
        """`name` as a token of this login's reply queues (a full name is kept as it is)."""
        full = (
            name
            if name.startswith(t.REPLY_QUEUE_PREFIX)
            else t.reply_queue_prefix(self._ring.user) + name
        )
        if not t.owns_reply_queue(self._ring.user, full):
            raise ValueError(
                f"reply_queue {name!r}: name it with letters, digits, '_' and '-' (it becomes "
                f"{t.reply_queue_prefix(self._ring.user)}<name>, a queue only this login may use)"
            )
        return full

    @property
    def reply_queue(self) -> str:
        return self._reply_queue

    @property
    def user(self) -> str:
        """The broker login this client publishes as (the jobs' tenant)."""
        return self._ring.user

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def connect(self) -> FleetClient:
        """Connect to the first broker that answers; raises if none does."""
        self._closing = False
        self._session = await self._open(first=True)
        self._ready.set()
        self._supervisor = asyncio.create_task(self._supervise())
        return self

    async def close(self) -> None:
        self._closing = True
        self._ready.clear()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        session, self._session = self._session, None
        if session is not None:
            if not self._durable:
                await session.stop_consuming()
                with contextlib.suppress(*BROKER_ERRORS):
                    await session.publish.queue_delete(self._reply_queue)
            with contextlib.suppress(Exception):
                await session.connection.close()

    async def __aenter__(self) -> FleetClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- connection ----------------------------------------------------------

    async def _open(self, *, first: bool = False) -> _Session:
        connection = await self._ring.connect(f"{self._name} pid {os.getpid()}")
        try:
            session = _Session(
                connection=connection,
                publish=await (
                    await connection.channel(publisher_confirms=True, on_return_raises=True)
                ).get_underlay_channel(),
            )
            connection.close_callbacks.add(lambda *_: session.lost.set())
            watch_channel(session.publish, session.lost)
            await self._declare_topology(connection)
            lost = await self._declare_reply_queue(connection, first=first)
            reply = await (await connection.channel()).get_underlay_channel()
            watch_channel(reply, session.lost)
            await reply.basic_qos(prefetch_count=1000)
            ok = await reply.basic_consume(self._reply_queue, self._on_reply)
            session.reply, session.consumer_tag = reply, ok.consumer_tag
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        await self._resubmit(session, all_of_them=lost)
        return session

    async def _declare_topology(self, connection: AbstractConnection) -> None:
        """Declare the fleet's topology when this login may (a job published before
        any worker ran is then queued); a producer login without configure rights
        leaves it to the workers, which always declare it."""
        try:
            await declare_topology(connection, broker_delivery_limit=self._broker_delivery_limit)
        except aiormq.exceptions.ChannelAccessRefused:
            log.debug("no configure rights on the fleet's topology; workers declare it")

    async def _declare_reply_queue(self, connection: AbstractConnection, *, first: bool) -> bool:
        """Declare the reply queue; True when it did not survive (answers in it are gone).

        Classic, not quorum: RabbitMQ advises against quorum queues for replies.
        Durable and not exclusive, so neither a broker restart nor a dropped client
        connection takes it (or the answers in it) away; `x-expires` removes it
        once no client has used it for that long.
        """
        arguments: dict[str, Any] = {
            "x-queue-type": "classic",
            "x-expires": self._reply_expires_ms,
        }

        async def declare(**how: Any) -> bool:
            """One declare on a channel of its own (a NOT_FOUND closes it); False on 404."""
            channel = await connection.channel()
            try:
                await channel.declare_queue(self._reply_queue, **how)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return False
            await channel.close()
            return True

        # Lost with a broker's data, expired, or its node is down: answers in it are gone.
        if not first and await declare(passive=True):
            return False
        if await declare(durable=True, arguments=arguments):
            return not first
        if self._durable:
            # The caller chose this name; wait (reconnecting) for its node to come back.
            raise aiormq.exceptions.ChannelNotFoundEntity(f"reply queue {self._reply_queue}")
        # Its home node is down: start afresh under a new name and publish everything
        # in flight again.
        log.warning("reply queue %s is unavailable; using a new one", self._reply_queue)
        self._reply_queue = self._new_reply_queue_name()
        if not await declare(durable=True, arguments=arguments):
            raise aiormq.exceptions.ChannelNotFoundEntity(f"reply queue {self._reply_queue}")
        return True

    async def _supervise(self) -> None:
        backoff = Backoff()
        backoff.opened()
        while not self._closing:
            session = self._session
            assert session is not None
            await session.lost.wait()
            self._ready.clear()
            log.warning("lost the broker connection; reconnecting")
            with contextlib.suppress(Exception):
                await session.connection.close()
            give_up = time.monotonic() + self._reconnect_timeout
            while True:
                await asyncio.sleep(backoff.next_delay())
                try:
                    self._session = await self._open()
                    break
                except Exception as exc:  # whatever it was, the supervisor must live on
                    log.warning("reconnect failed: %r", exc)
                    if time.monotonic() > give_up:
                        self._fail_pending(
                            ProviderUnavailable(
                                "lost the broker connection and could not reconnect within "
                                f"{self._reconnect_timeout:.0f}s",
                                retryable=True,
                            )
                        )
                        give_up = float("inf")
            backoff.opened()
            self._ready.set()
            log.info("reconnected to the broker")

    def _session_broken(self, session: _Session) -> None:
        session.lost.set()
        if self._session is session:
            self._ready.clear()

    def _fail_pending(self, error: FleetError) -> None:
        for pending in self._pending.values():
            if pending.inbox is not None:
                pending.inbox.queue.put_nowait(error)

    async def _resubmit(self, session: _Session, *, all_of_them: bool) -> None:
        """Publish requests in flight again: all of them when the reply queue (and the
        answers in it) was lost, else only those an earlier attempt left unconfirmed."""
        again = [
            p for p in self._pending.values() if not p.sending and (all_of_them or not p.confirmed)
        ]
        if again:
            log.warning("publishing %d requests in flight again", len(again))
        for pending in again:
            # Always a new submission: a publish that was cut off may have arrived.
            self._next_submission(pending)
            pending.confirmed = False
            await self._publish_job(session, pending)
            pending.confirmed = True
            # An older submission still running somewhere would answer nobody.
            await self._control_message(
                session,
                {"type": "cancel", "request_id": pending.job.request_id},
                before=pending.submission,
            )

    @staticmethod
    def _next_submission(pending: _Pending) -> None:
        pending.submission += 1
        if pending.inbox is not None:
            pending.inbox.resubmitted(pending.submission)

    async def _ready_session(self, give_up: float) -> _Session:
        """The live session, waiting (until `give_up`, loop time) while reconnecting."""
        if not self._ready.is_set():
            if self._supervisor is None:
                raise RuntimeError(
                    "FleetClient is not connected; use `async with FleetClient(...)`"
                )
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout_at(min(give_up, loop.time() + self._reconnect_timeout)):
                    await self._ready.wait()
            except TimeoutError:
                raise ProviderUnavailable(
                    "no broker connection (reconnecting)", retryable=True
                ) from None
        assert self._session is not None
        return self._session

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
        """Yield `Delta`s as tokens arrive (and `Restart` if the answer is redone), then `Final`."""
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

    async def providers(self, *, within: float = 10.0) -> list[ProviderInfo]:
        """What the fleet can call: provider names, capabilities, default addresses
        and credential fields, sorted by name.

        Any one live worker answers from its registry: no job, no credential, and
        nothing dead-lettered. When no worker answers `within` seconds (none is
        running, or only workers that predate this request, which leave the
        queue alone) this raises a retryable `ProviderUnavailable`; the request
        expires in the queue with the wait.
        """
        rid = uuid.uuid4().hex
        inbox = self._inboxes[rid] = _Inbox()
        give_up = asyncio.get_running_loop().time() + within
        try:
            session = await self._ready_session(give_up)
            props = Basic.Properties(
                reply_to=self._reply_queue,
                correlation_id=rid,
                content_type="application/msgpack",
                expiration=str(max(1, int(within * 1000))),
                user_id=self._ring.user,
            )
            try:
                await session.publish.basic_publish(
                    encode(CatalogRequest(request_id=rid)),
                    exchange=t.JOBS_EXCHANGE,
                    routing_key=t.CATALOG_QUEUE,
                    properties=props,
                    mandatory=True,
                )
            except BROKER_ERRORS as exc:
                if not isinstance(exc, aiormq.exceptions.PublishError):  # not a mere return
                    self._session_broken(session)
                raise ProviderUnavailable(
                    f"could not ask the fleet for its providers ({type(exc).__name__})",
                    retryable=True,
                ) from None
            try:
                async with asyncio.timeout_at(give_up):
                    while True:
                        item = await inbox.queue.get()
                        if type(item) is Catalog:
                            return item.providers
                        if type(item) is Error:
                            raise _error_for_frame(item)
            except TimeoutError:
                raise ProviderUnavailable(
                    f"no worker answered the provider catalog request within {within:g}s "
                    f"(no worker is running, or none is new enough to serve {t.CATALOG_QUEUE})",
                    retryable=True,
                ) from None
        finally:
            self._forget(rid)

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
        pending = _Pending(job, batch, inbox)
        self._inboxes[rid] = inbox
        self._pending[rid] = pending
        done = False
        wait = self._default_timeout if deadline is None else max(0.0, deadline - time.time()) + 5.0
        give_up = asyncio.get_running_loop().time() + wait
        try:
            await self._send(pending, give_up)
            queue = inbox.queue
            while True:
                if queue.empty():
                    # asyncio.timeout, not wait_for: no extra task per frame.
                    try:
                        async with asyncio.timeout_at(give_up):
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
                    raise _error_for_frame(item)
                if isinstance(item, FleetError):
                    raise item
                yield item
        finally:
            self._pending.pop(rid, None)
            self._forget(rid)
            if not done:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.cancel(rid))

    def _forget(self, rid: str) -> None:
        """Stop waiting for `rid`; its late frames are then dropped quietly."""
        self._inboxes.pop(rid, None)
        self._finished[rid] = None
        if len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)

    async def _send(self, pending: _Pending, give_up: float) -> None:
        """Publish until the broker confirms. A publish cut off by a lost connection
        may or may not have arrived, so the next one is a new submission."""
        pending.sending = True
        try:
            while True:
                session = await self._ready_session(give_up)
                try:
                    await self._publish_job(session, pending)
                    pending.confirmed = True
                    return
                except aiormq.exceptions.PublishError:
                    raise  # returned unroutable: no queue for this kind, not a broker blip
                except _REFUSALS as exc:
                    # The broker closed the channel over this message: publishing it
                    # again would be refused again.
                    self._session_broken(session)
                    raise _refusal_error(exc) from None
                except BROKER_ERRORS as exc:
                    log.warning(
                        "publish of %s cut off (%r); publishing again", pending.job.request_id, exc
                    )
                    # The session is broken even if no close reached us yet; waiting for
                    # the next one (rather than retrying this one) also yields to the loop.
                    self._session_broken(session)
                    self._next_submission(pending)
        finally:
            pending.sending = False

    async def _publish_job(self, session: _Session, pending: _Pending) -> None:
        job = pending.job
        if pending.submission != job.submission:
            job = pending.job = msgspec.structs.replace(job, submission=pending.submission)
        if pending.submission == 0:
            # Taken from the caller's span on the first publish, then kept: a job
            # published again (from the reconnect task) stays in the caller's trace.
            job = pending.job = with_trace_context(job)
        queue = t.QUEUE_BATCH if pending.batch else t.DEFAULT_QUEUE_FOR_KIND[job_kind(job)]
        body = encode(job)
        if len(body) > t.BROKER_MAX_MESSAGE_BYTES:
            raise BadRequest(
                f"job {job.request_id} is {len(body)} bytes encoded; the broker takes at most "
                f"{t.BROKER_MAX_MESSAGE_BYTES} (and workers {DEFAULT_MAX_JOB_BYTES} by default)"
            )
        props = Basic.Properties(
            reply_to=self._reply_queue,
            correlation_id=job.request_id,
            message_id=f"{job.request_id}/{pending.submission}",
            content_type="application/msgpack",
            delivery_mode=2,
            # Integer µs: AMQP float headers are 32-bit and cannot hold a timestamp.
            headers={t.HDR_PUBLISHED_US: time.time_ns() // 1000},
            user_id=self._ring.user,
        )
        await session.publish.basic_publish(
            body,
            exchange=t.JOBS_EXCHANGE,
            routing_key=queue,
            properties=props,
            mandatory=True,
        )

    async def publish(self, job: Job, *, batch: bool = False) -> None:
        """Publish a job and wait for the broker's confirm (no waiting for the answer)."""
        give_up = asyncio.get_running_loop().time() + self._default_timeout
        await self._send(_Pending(job, batch, None), give_up)

    async def submit(self, job: Job, *, batch: bool = True) -> None:
        """Publish a job without waiting for it; its answer arrives through `results()`.

        For backfills: with a named `reply_queue`, answers survive a producer restart.
        """
        if not self._durable:
            raise RuntimeError("submit() needs a named reply_queue; use request() instead")
        pending = _Pending(job, batch, None)
        self._pending[job.request_id] = pending
        give_up = asyncio.get_running_loop().time() + self._default_timeout
        try:
            await self._send(pending, give_up)
        except BaseException:
            self._pending.pop(job.request_id, None)
            raise

    async def results(self) -> AsyncIterator[Final | Error]:
        """Answers to jobs nobody awaits (submitted, or from before a restart), in arrival
        order, forever; break out when done. A reply message is acked only after all of
        its answers were taken, so a crash before then gets them again."""
        async for receipt in self.receipts():
            for frame in receipt.answers:
                yield frame
            await receipt.ack()

    async def receipts(self) -> AsyncIterator[Receipt]:
        """`results()` for callers that store answers durably before letting them go.

        Each receipt holds the answers of one reply message; the message stays in the
        reply queue until `receipt.ack()`, so a crash before then gets the answers
        again after a restart (possibly with others that were already stored: keep
        writes idempotent). Unacked receipts count against a prefetch of 1,000 reply
        messages, so ack them within a few seconds.
        """
        if not self._durable:
            raise RuntimeError("receipts() needs a named reply_queue")
        while True:
            frames, message = await self._unclaimed.get()
            for frame in frames:
                self._pending.pop(frame.request_id, None)
            yield Receipt(frames, message)

    async def delete_reply_queue(self) -> None:
        """Remove a named reply queue once a backfill has all its answers; closes the client."""
        session = await self._ready_session(asyncio.get_running_loop().time() + 30)
        self._closing = True  # a reconnect must not declare the queue again
        await session.stop_consuming()
        await session.publish.queue_delete(self._reply_queue)
        await self.close()

    async def cancel(self, request_id: str) -> None:
        """Stop a job wherever it runs (or before it starts)."""
        if self._ready.is_set() and self._session is not None:
            await self._control_message(self._session, {"type": "cancel", "request_id": request_id})

    async def credential_revoked(self, credential_id: str) -> None:
        """Tell every worker to forget its cached copy of a stored credential now."""
        session = await self._ready_session(asyncio.get_running_loop().time() + 30)
        await self._control_message(
            session, {"type": "credential_revoked", "credential_id": credential_id}
        )

    async def _control_message(
        self, session: _Session, fields: dict[str, str], *, before: int | None = None
    ) -> None:
        message: dict[str, Any] = {"v": t.CONTRACT_VERSION, **fields}
        if before is not None:
            message["before"] = before  # cancel only submissions older than this one
        await session.publish.basic_publish(
            msgspec.msgpack.encode(message),
            exchange=t.CONTROL_EXCHANGE,
            routing_key="",
            # Workers honour a cancel only from the login that published the job.
            properties=Basic.Properties(user_id=self._ring.user),
        )

    def _drop(self, reason: str, message: DeliveredMessage, count: int = 1) -> None:
        self.dropped_frames[reason] += count
        if self.dropped_frames[reason] <= _LOGGED_DROPS:  # a flood must not flood the log
            log.warning(
                "dropped %d reply frame(s) on %s: %s (user_id %r)",
                count,
                self._reply_queue,
                reason,
                message.header.properties.user_id,
            )

    async def _on_reply(self, message: DeliveredMessage) -> None:
        sender = message.header.properties.user_id
        if not isinstance(sender, str) or sender not in self._trusted:
            # Only workers publish answers; anything else is a forgery.
            self._drop("untrusted_sender", message)
            await _ack(message)
            return
        try:
            frames = decode_frames(message.body)
        except ContractError as exc:
            log.warning("undecodable reply message: %s", exc.message)
            await _ack(message)
            return
        inboxes = self._inboxes
        unclaimed: list[Final | Error] = []
        unknown = 0
        for frame in frames:
            inbox = inboxes.get(frame.request_id)
            if inbox is not None:
                inbox.push(frame)
            elif self._durable and isinstance(frame, Final | Error):
                # A named queue outlives its client: answers to requests sent before a
                # restart are taken through results().
                pending = self._pending.get(frame.request_id)
                if pending is None or pending.submission == frame.submission:
                    unclaimed.append(frame)
            elif self._durable:
                # Starts and deltas of jobs sent before a restart: expected, not strangers'.
                continue
            elif frame.request_id not in self._pending and frame.request_id not in self._finished:
                unknown += 1
        if unknown:
            self._drop("unknown_request", message, unknown)
        if unclaimed:
            self._unclaimed.put_nowait((unclaimed, message))
        else:
            await _ack(message)


_LOGGED_DROPS = 10  # per reason; `dropped_frames` keeps counting
_FINISHED_MEMORY = 10_000  # request ids whose late frames are not counted as strangers'

# Channel errors the broker raises over one message (too big, a user_id that is
# not the login, no rights on the exchange, no such exchange).
_REFUSALS = (
    aiormq.exceptions.ChannelAccessRefused,
    aiormq.exceptions.ChannelPreconditionFailed,
    aiormq.exceptions.ChannelNotFoundEntity,
)


def _refusal_error(exc: BaseException) -> FleetError:
    text = str(exc)
    if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
        return Forbidden(f"the broker refused the publish: {text}")
    if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
        return ProviderUnavailable(
            f"the fleet's exchange is missing ({text}): no worker has declared the "
            "topology yet (start one)",
            retryable=True,
        )
    return BadRequest(f"the broker refused the job: {text}")


async def _ack(message: DeliveredMessage) -> None:
    # After a reconnect the channel is gone and the broker has requeued the message:
    # it comes again on the new session, and duplicates are dropped by seq.
    with contextlib.suppress(*BROKER_ERRORS):
        await message.channel.basic_ack(delivery_tag(message))


def _error_for_frame(frame: Error) -> FleetError:
    error = _error_for_code(
        frame.code,
        frame.message,
        frame.provider_status,
        retryable=frame.retryable,
        retry_after=frame.retry_after,
        provider_request_id=frame.provider_request_id,
    )
    error.rate_limit = frame.rate_limit
    return error


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

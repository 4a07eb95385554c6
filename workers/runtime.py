"""The worker process: consume jobs, run them, publish frames, ack only when confirmed.

One `_Session` is a pair of AMQP connections to one broker of the cluster
(consuming and publishing are kept apart, as RabbitMQ advises, so flow control
on publishes never stalls acks). When either connection drops, every in-flight
job is cancelled unacked (the broker redelivers them), the jobs are announced
as released (see workers/releases.py), and a new session is opened with
backoff, on the next broker address first.

Deliveries are taken from aiormq directly: the worker reads the few properties
it needs from the decoded frame, and a message whose properties cannot be read
(see contracts/amqp_guard.py) is refused like any other bad input.

Job slots are the broker's prefetch, which RabbitMQ counts per consumer (quorum
queues refuse a channel-wide one): each interactive queue (`llm.chat`,
`llm.embed`) has `FLEET_CONCURRENCY` unacked jobs at most, and `llm.batch`, on a
channel of its own, `FLEET_BATCH_CONCURRENCY`. So a backfill's flood of batch jobs
never takes the slots interactive jobs need, nor a chat burst the backfill's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from aio_pika.abc import AbstractConnection
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from contracts import amqp_guard
from contracts import topology as t
from contracts.amqp import declare_release_stream, declare_topology
from contracts.brokers import BROKER_ERRORS, Backoff, BrokerRing, delivery_tag, watch_channel
from contracts.codec import decode_job, encode, peek_job
from contracts.errors import (
    Cancelled,
    ContractError,
    Expired,
    FleetError,
    InternalError,
    ProviderTimeout,
    TransientError,
)
from contracts.frames import Answered, Catalog, Usage
from contracts.jobs import Job, Target, job_kind
from workers.config import Settings
from workers.dead_letters import dead_letter_copy
from workers.execute import Executor, InputRejected, RunState
from workers.metrics import WorkerMetrics
from workers.named_metrics import named_metrics
from workers.outcome import AttemptRecord, NoRecorder, Recorder, TargetRef
from workers.prices import PriceTable, load_price_table
from workers.releases import ReleaseLedger, job_key, release_note
from workers.reply import ReplyPublisher, ReplyQueueGone, ReplyStream
from workers.tracing import JobTracer

log = structlog.get_logger("llm_fleet.worker")

_CANCEL_MEMORY = 10_000  # request ids remembered for cancels that arrive before their job
_ALL = 1 << 62  # a cancel without `before`: every submission of the request
_CONTROL_BACKLOG = 10_000  # control messages a worker's queue holds at most
_MAX_RETURNS = 1 << 30  # attempts stay below t.NOTICE_ATTEMPT whatever a header says


def _dead_lettered_from_job_queue(headers: dict[str, Any]) -> bool:
    """The broker's own record (x-death) says the message died in a job queue."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], dict):
        return False
    return deaths[0].get("queue") in t.JOB_QUEUES


def _target_ref(target: Target) -> TargetRef:
    return TargetRef(target.provider, target.model, target.credential.id)


def _text(value: object) -> str | None:
    """A short-string property, or None when absent or unreadable."""
    if isinstance(value, str) and value and not isinstance(value, amqp_guard.UnreadableText):
        return value
    return None


@dataclass(slots=True)
class Delivery:
    """One message as the broker delivered it, acked on the channel it came on."""

    body: bytes
    props: Basic.Properties
    tag: int
    routing_key: str
    redelivered: bool
    channel: RawChannel
    held: dict[str, None]  # the session's unsettled jobs
    key: str | None = None
    # What the attempt's record needs, filled in as the delivery is processed.
    attempt: int = 1
    started_at: float = 0.0  # unix seconds
    job: Job | None = None
    state: RunState | None = None

    @classmethod
    def of(cls, message: DeliveredMessage, held: dict[str, None]) -> Delivery:
        deliver = message.delivery
        assert isinstance(deliver, Basic.Deliver)
        return cls(
            body=message.body,
            props=message.header.properties,
            tag=delivery_tag(message),
            routing_key=_text(deliver.routing_key) or "",
            redelivered=bool(deliver.redelivered),
            channel=message.channel,
            held=held,
        )

    @property
    def headers(self) -> dict[str, Any]:
        headers = self.props.headers
        return headers if isinstance(headers, dict) else {}

    @property
    def returns(self) -> int:
        """How often the broker returned this message to its queue before.

        Quorum queues count in `x-delivery-count`, set on redelivery. On a first
        delivery the header can only be the producer's own, so it is not believed.
        """
        count = self.headers.get(t.HDR_DELIVERY_COUNT)
        if not self.redelivered or type(count) is not int or count <= 0:
            return 0
        return min(count, _MAX_RETURNS)

    @property
    def reply_to(self) -> str | None:
        return _text(self.props.reply_to)

    @property
    def correlation_id(self) -> str | None:
        return _text(self.props.correlation_id)

    @property
    def user(self) -> str | None:
        """Who published the message: the broker refuses a user_id that is not the
        publishing connection's login, so this one can be believed."""
        return _text(self.props.user_id)

    @property
    def answer_to(self) -> str | None:
        """The reply queue, when it belongs to the message's publisher.

        Nothing is ever answered into a queue of someone else's: a message naming
        another producer's queue (or carrying no identity) is refused unanswered.
        """
        user, reply_to = self.user, self.reply_to
        if user is not None and reply_to is not None and t.owns_reply_queue(user, reply_to):
            return reply_to
        return None

    def hold(self, key: str) -> None:
        """Count the job as this session's until acked (released if the session is lost)."""
        self.key = key
        self.held[key] = None

    async def ack(self) -> None:
        await self.channel.basic_ack(self.tag)
        if self.key is not None:
            self.held.pop(self.key, None)


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    client_cancelled: bool = False


def _identity_error(delivery: Delivery) -> ContractError | None:
    """Why a job cannot be attributed to its producer, or None when it can."""
    user, reply_to = delivery.user, delivery.reply_to
    if user is None:
        return ContractError(
            "user_id",
            "the message carries no user_id: publish with the user_id property set to "
            "your broker login (RabbitMQ checks it); the fleet takes identity from the "
            "broker, never from the message",
        )
    if not reply_to:
        return ContractError("reply_to", "no reply queue given")
    if not t.owns_reply_queue(user, reply_to):
        return ContractError(
            "reply_to",
            f"reply_to {reply_to!r} is not a reply queue of broker user {user!r} "
            f"(yours are named {t.reply_queue_prefix(user)}<token>)",
        )
    return None


@dataclass(slots=True)
class _Session:
    consume: AbstractConnection
    publish: AbstractConnection
    raw_publish: RawChannel  # confirms + mandatory returns
    # Every job consumer with the channel it consumes on (one channel per pool).
    consumers: list[tuple[RawChannel, str]] = field(default_factory=list)
    held: dict[str, None] = field(default_factory=dict)
    # aio-pika resolves `closed()` only on a local close(); a broker-side close
    # (restart, forced close, network loss) is reported through close_callbacks.
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    def watch(self) -> None:
        for conn in (self.consume, self.publish):
            conn.close_callbacks.add(lambda *_: self.lost.set())

    async def close(self) -> None:
        for conn in (self.consume, self.publish):
            with contextlib.suppress(Exception):
                await conn.close()


class Worker:
    def __init__(
        self,
        settings: Settings,
        executor: Executor,
        metrics: WorkerMetrics,
        *,
        forget_credential: Callable[[str], None] | None = None,
        recorder: Recorder | None = None,
        tracer: JobTracer | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self._settings = settings
        self._forget_credential = forget_credential
        self._executor = executor
        self._metrics = metrics
        self._recorder: Recorder = recorder or NoRecorder()
        self._prices = prices or load_price_table()
        self._tracer = tracer or JobTracer()
        self._ring = BrokerRing(settings.amqp_url)
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # Keyed by (producer, request id, submission): request ids are the producer's
        # own, so one producer's ids never reach another's jobs.
        self._running: dict[tuple[str, str, int], _Running] = {}
        # Cancels that arrived before their job: (producer, request id) → first
        # submission not cancelled.
        self._cancelled: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._ledger = ReleaseLedger()
        self._session: _Session | None = None
        self._publisher: ReplyPublisher | None = None

    # -- lifecycle ---------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def broker_connected(self) -> bool:
        s = self._session
        return s is not None and not s.lost.is_set()

    async def run(self) -> None:
        s = self._settings
        backoff = Backoff(initial=s.reconnect_initial, cap=s.reconnect_cap)
        released: list[str] = []  # jobs the last lost session held, still to announce
        while not self._stop.is_set():
            try:
                session = await self._open()
            except BROKER_ERRORS as exc:
                delay = backoff.next_delay()
                log.warning("broker_unreachable", error=repr(exc), retry_in_s=round(delay, 2))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                continue
            backoff.opened()
            self._session = session
            self._metrics.broker_up()
            try:
                if released:
                    # Announced before taking jobs: a worker counting this one's
                    # crashes reads the note before it could see the job again.
                    await self._announce_release(session, released, "broker_connection_lost")
                released = []
                await self._start_consuming(session)
                released = await self._serve(session)
            except BROKER_ERRORS as exc:
                log.warning("broker_session_failed", error=repr(exc))
                released = [*released, *session.held]
                await self._cancel_all()
            finally:
                self._metrics.broker_down()
                self._session = None
                await session.close()
            if not self._stop.is_set():
                # Paced like a failed connect: a session lost at once counts as a failure.
                delay = backoff.next_delay()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        log.info("worker_stopped", worker=s.worker_id)

    async def _open(self) -> _Session:
        s = self._settings
        name = f"llm-fleet worker {s.worker_id}"
        consume = await self._ring.connect(name + " (consume)")
        try:
            publish = await self._ring.connect(name + " (publish)", same_broker=True)
        except BaseException:
            await consume.close()
            raise
        pub_channel = None
        try:
            pub_channel = await publish.channel(publisher_confirms=True, on_return_raises=True)
            session = _Session(
                consume=consume,
                publish=publish,
                raw_publish=await pub_channel.get_underlay_channel(),
            )
            session.watch()
            watch_channel(session.raw_publish, session.lost)
            self._publisher = ReplyPublisher(
                session.raw_publish,
                s.coalesce,
                user=self._ring.user,
                on_published=self._metrics.reply_published,
            )
            await declare_topology(consume, broker_delivery_limit=s.broker_delivery_limit)
            await self._consume_side_queues(session)
        except BaseException:
            await consume.close()
            await publish.close()
            raise
        return session

    async def _consume_side_queues(self, session: _Session) -> None:
        """Control messages, dead-letter notices and the release stream."""
        control = await (await session.consume.channel()).get_underlay_channel()
        watch_channel(control, session.lost)
        # Bounded like every queue the worker consumes: a flood of control messages
        # drops the oldest rather than growing without limit.
        declared = await control.queue_declare(
            exclusive=True,
            auto_delete=True,
            arguments={"x-max-length": _CONTROL_BACKLOG, "x-overflow": "drop-head"},
        )
        assert declared.queue is not None
        await control.queue_bind(declared.queue, t.CONTROL_EXCHANGE, routing_key="")
        await control.basic_consume(declared.queue, self._on_control, no_ack=True)
        notify = await (await session.consume.channel()).get_underlay_channel()
        watch_channel(notify, session.lost)
        await notify.basic_qos(prefetch_count=16)
        await notify.basic_consume(t.DEAD_NOTIFY_QUEUE, self._on_dead_notice)
        try:
            catalog = await (await session.consume.channel()).get_underlay_channel()
            await catalog.basic_qos(prefetch_count=8)
            await catalog.basic_consume(t.CATALOG_QUEUE, self._on_catalog_request)
            watch_channel(catalog, session.lost)
        except BROKER_ERRORS as exc:
            if session.lost.is_set():
                raise
            # Jobs matter more than the catalog: producers asking get a retryable timeout.
            log.warning("catalog_queue_unavailable", error=repr(exc))
        try:
            await self._read_releases(session)
        except BROKER_ERRORS as exc:
            # Jobs still flow; until the stream is back, the crash count of a job that
            # reaches the limit includes broker restarts (the backstop still holds).
            log.warning("release_stream_unavailable", error=repr(exc))

    async def _read_releases(self, session: _Session) -> None:
        await declare_release_stream(session.consume)
        releases = await (await session.consume.channel()).get_underlay_channel()
        await releases.basic_qos(prefetch_count=500)  # streams need a prefetch

        async def on_release(message: DeliveredMessage) -> None:
            try:
                if not self._ledger.read(message.body):
                    log.warning("release_note_unreadable", bytes=len(message.body))
            finally:
                await message.channel.basic_ack(delivery_tag(message))

        # From the start of what the stream keeps: notes already read count once.
        await releases.basic_consume(
            t.RELEASES_QUEUE, on_release, arguments={"x-stream-offset": "first"}
        )

    async def _start_consuming(self, session: _Session) -> None:
        s = self._settings

        async def on_delivery(message: DeliveredMessage) -> None:
            # Our own task, so cancelling a job never disturbs aiormq's delivery machinery.
            task = asyncio.create_task(self._process(Delivery.of(message, session.held)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        for queues, prefetch in s.job_pools():
            # The prefetch applies to each consumer started on the channel after it.
            jobs = await (await session.consume.channel()).get_underlay_channel()
            watch_channel(jobs, session.lost)
            await jobs.basic_qos(prefetch_count=prefetch)
            for qname in queues:
                ok = await jobs.basic_consume(qname, on_delivery)
                assert ok.consumer_tag is not None
                session.consumers.append((jobs, ok.consumer_tag))
        log.info(
            "worker_ready",
            worker=s.worker_id,
            queues=list(s.queues),
            concurrency=s.concurrency,
            batch_concurrency=s.batch_concurrency,
        )

    async def _serve(self, session: _Session) -> list[str]:
        """Run until stopped or the session is lost; return the jobs released by a loss."""
        stop = asyncio.ensure_future(self._stop.wait())
        lost = asyncio.ensure_future(session.lost.wait())
        try:
            await asyncio.wait([stop, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            lost.cancel()
        if self._stop.is_set() and not session.lost.is_set():
            await self._drain(session)
            return []
        log.warning("broker_connection_lost", inflight=len(self._tasks))
        released = list(session.held)
        # Their acks can no longer reach the broker, which requeues them for another attempt.
        await self._cancel_all()
        return released

    async def _drain(self, session: _Session) -> None:
        """SIGTERM: stop intake, let in-flight jobs finish within the grace period."""
        for channel, tag in session.consumers:
            with contextlib.suppress(*BROKER_ERRORS):
                await channel.basic_cancel(tag)
        pending = set(self._tasks)
        log.info("draining", inflight=len(pending), grace_s=self._settings.grace_period)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self._settings.grace_period)
            if late:
                log.warning("grace_period_over", unfinished=len(late))
                released = list(session.held)
                await self._cancel_all()
                with contextlib.suppress(*BROKER_ERRORS):
                    await self._announce_release(session, released, "shutdown_grace_over")

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _announce_release(self, session: _Session, keys: list[str], reason: str) -> None:
        """Best effort: a note that cannot be written leaves those returns counted as
        crashes, which the broker's backstop limit tolerates; it never stops the worker."""
        body = release_note(self._settings.worker_id, reason, keys)
        self._ledger.read(body)
        props = Basic.Properties(
            delivery_mode=2, content_type="application/msgpack", user_id=self._ring.user
        )
        try:
            # A channel of its own: an unavailable stream may close the channel it is
            # published on, and the reply channel must not go with it.
            channel = await session.publish.channel(publisher_confirms=True)
            try:
                raw = await channel.get_underlay_channel()
                await raw.basic_publish(
                    body, routing_key=t.RELEASES_QUEUE, properties=props, mandatory=True
                )
            finally:
                with contextlib.suppress(*BROKER_ERRORS):
                    await channel.close()
        except BROKER_ERRORS as exc:
            if session.lost.is_set():
                raise
            log.warning("release_note_not_written", count=len(keys), error=repr(exc))
            return
        log.info("jobs_released", count=len(keys), reason=reason)

    # -- control and notices -------------------------------------------------

    async def _on_control(self, message: DeliveredMessage) -> None:
        # Who sent it, as the broker validated; a cancel without one is nobody's.
        sender = _text(message.header.properties.user_id)
        try:
            data = msgspec.msgpack.decode(message.body)
        except Exception:
            return
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "credential_revoked":
            cid = data.get("credential_id")
            if isinstance(cid, str) and self._forget_credential is not None:
                self._forget_credential(cid)
            return
        rid = data.get("request_id")
        if kind != "cancel" or not isinstance(rid, str):
            return
        if sender is None:
            log.warning("cancel_without_identity", request_id=rid)
            return
        before = data.get("before")
        before = before if type(before) is int else _ALL
        found = False
        for (owner, running_rid, submission), running in self._running.items():
            if owner == sender and running_rid == rid and submission < before:
                running.client_cancelled = True
                running.task.cancel()
                found = True
        if not found:
            self._remember_cancel((sender, rid), before)

    def _remember_cancel(self, key: tuple[str, str], before: int) -> None:
        self._cancelled[key] = max(before, self._cancelled.get(key, 0))
        if len(self._cancelled) > _CANCEL_MEMORY:
            self._cancelled.popitem(last=False)  # forget the oldest

    async def _on_dead_notice(self, message: DeliveredMessage) -> None:
        """Answer producers whose job the broker dead-lettered (backstop limit, TTL…)."""
        # Consumed from the start of a session, before its jobs: nothing to hold here.
        delivery = Delivery.of(message, {})
        headers = delivery.headers
        reply_to = delivery.answer_to
        if t.HDR_DEAD_CODE in headers:
            pass  # the worker's own copy: its producer was answered when it was refused
        elif reply_to is None or not _dead_lettered_from_job_queue(headers):
            # Not a job the broker dead-lettered from a job queue on behalf of the
            # producer whose queue it names: nobody is told anything.
            log.warning(
                "dead_notice_unattributable", user=delivery.user, reply_to=delivery.reply_to
            )
        elif self._publisher is not None and not amqp_guard.unreadable_properties(delivery.props):
            peeked_rid, submission = peek_job(delivery.body)
            rid = delivery.correlation_id or peeked_rid or ""
            error = self._broker_dead_letter_error(headers)
            await self._answer_once(reply_to, rid, t.NOTICE_ATTEMPT, error, submission)
            log.error("job_dead_lettered_by_broker", request_id=rid, error=error.message)
        await delivery.ack()

    async def _on_catalog_request(self, message: DeliveredMessage) -> None:
        """Tell a producer which providers this worker can call (`FleetClient.providers()`).

        Whatever the request looks like it is acked, never dead-lettered: at worst
        its producer waits out its own timeout.
        """
        delivery = Delivery.of(message, {})
        # Read like a job's: the correlation id, else the body's request_id.
        rid = delivery.correlation_id or peek_job(delivery.body)[0]
        reply_to, publisher = delivery.answer_to, self._publisher
        try:
            if not rid or not reply_to or publisher is None:
                log.warning("catalog_request_unanswerable", request_id=rid, reply_to=reply_to)
                return
            providers = self._executor.catalog()
            frame = Catalog(request_id=rid, attempt=1, seq=0, providers=providers)
            with contextlib.suppress(ReplyQueueGone):  # its producer left
                await publisher.publish(reply_to, encode([frame]), 1)
        except Exception:
            log.exception("catalog_answer_failed", request_id=rid)
        finally:
            await delivery.ack()

    def _broker_dead_letter_error(self, headers: dict[str, Any]) -> FleetError:
        reason, queue = "rejected", "its queue"
        deaths = headers.get("x-death")
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
            reason = str(deaths[0].get("reason", reason))
            queue = str(deaths[0].get("queue", queue))
        if reason == "expired":
            return Expired(f"the job expired in {queue} before a worker took it (message TTL)")
        if reason == "delivery_limit":
            return InternalError(
                f"job dead-lettered by the broker (delivery_limit): it went back to {queue} "
                f"more often than the backstop limit of {self._settings.broker_delivery_limit} "
                "allows"
            )
        if reason == "maxlen":
            return InternalError(f"job dead-lettered by the broker (maxlen): {queue} is full")
        return InternalError(f"job dead-lettered by the broker ({reason}) from {queue}")

    # -- deliveries --------------------------------------------------------

    async def _process(self, delivery: Delivery) -> None:
        returns = delivery.returns
        attempt = delivery.attempt = returns + 1
        started = time.monotonic()
        delivery.started_at = time.time()
        unreadable = amqp_guard.unreadable_properties(delivery.props)
        if unreadable:
            rid = delivery.correlation_id or peek_job(delivery.body)[0] or ""
            error: FleetError = ContractError(
                "properties",
                f"AMQP properties that cannot be read: {', '.join(unreadable)} "
                "(short strings must be UTF-8, tables well formed)",
            )
            await self._refuse(delivery, rid, attempt, error, kind="unknown")
            return
        identity_error = _identity_error(delivery)
        if identity_error is not None:
            rid = delivery.correlation_id or peek_job(delivery.body)[0] or ""
            await self._refuse(delivery, rid, attempt, identity_error, kind="unknown")
            return
        user, reply_to = delivery.user, delivery.reply_to
        assert user is not None and reply_to is not None  # checked just above
        try:
            job = decode_job(delivery.body, max_bytes=self._settings.max_job_bytes)
        except ContractError as exc:
            rid = delivery.correlation_id or peek_job(delivery.body)[0] or ""
            await self._refuse(delivery, rid, attempt, exc, kind="unknown")
            return
        kind = job_kind(job)
        delivery.job = job
        # Each job runs in its own task, so this context is the job's alone.
        structlog.contextvars.bind_contextvars(
            request_id=job.request_id,
            kind=kind,
            provider=job.target.provider,
            model=job.target.model,
            attempt=attempt,
            producer=user,
        )
        delivery.hold(job_key(reply_to, job.request_id, job.submission))
        if returns >= self._settings.delivery_limit:
            crashes = await self._crashes(delivery.key or "", returns)
            if crashes >= self._settings.delivery_limit:
                error = InternalError(
                    f"the job was running on {crashes} workers that died (limit "
                    f"{self._settings.delivery_limit}); it is not tried again"
                )
                await self._refuse(
                    delivery, job.request_id, attempt, error, kind, job.submission, crashes
                )
                return
        self._metrics.inflight.inc()
        try:
            await self._run_job(delivery, user, reply_to, job, kind, attempt, started)
        finally:
            self._metrics.inflight.dec()

    async def _crashes(self, key: str, returns: int) -> int:
        """Returns to the queue that no surviving worker released: workers that died."""
        crashes = returns - self._ledger.releases(key)
        if crashes >= self._settings.delivery_limit and self._settings.release_wait > 0:
            # A worker that lost the broker holding this job announces it once it
            # reconnects, which may be just after the broker redelivered the job here.
            await asyncio.sleep(self._settings.release_wait)
            crashes = returns - self._ledger.releases(key)
        return crashes

    async def _run_job(
        self,
        delivery: Delivery,
        user: str,
        reply_to: str,
        job: Job,
        kind: str,
        attempt: int,
        started: float,
    ) -> None:
        assert self._publisher is not None
        rid = job.request_id
        stream = ReplyStream(
            self._publisher,
            reply_to=reply_to,
            request_id=rid,
            attempt=attempt,
            submission=job.submission,
        )
        state = delivery.state = RunState(started=started, tenant=user)
        queue_ms = self._queue_ms(delivery)
        task = asyncio.current_task()
        assert task is not None
        running = _Running(task)
        run_key = (user, rid, job.submission)
        self._running[run_key] = running
        traced = self._tracer.start_job(
            job,
            attempt=attempt,
            tenant=user,
            queue=delivery.routing_key,
            published_us=delivery.headers.get(t.HDR_PUBLISHED_US),
            message_id=_text(delivery.props.message_id),
            body_size=len(delivery.body),
        )
        try:
            if job.submission < self._cancelled.get((user, rid), 0):
                raise Cancelled("cancelled by the producer before it started")
            remaining = self._remaining(job)
            if remaining is not None and remaining <= 0:
                raise Expired(f"deadline passed {-remaining:.3f}s before a worker took the job")
            state.deadline = None if remaining is None else time.monotonic() + remaining
            stream.start(self._settings.worker_id)
            try:
                async with asyncio.timeout(remaining):
                    fields = await self._executor.run(job, stream, state)
            except TimeoutError:
                raise ProviderTimeout(
                    "the job's deadline passed during the provider call"
                ) from None
            self._complete_final(fields, rid, kind, state, stream.frames + 1, queue_ms)
            with self._tracer.reply(reply_to):
                await stream.finish(**fields)
            await self._settle(delivery, kind, "ok", fields=fields)
        except InputRejected as exc:
            traced.failed(exc.error)
            await self._refuse(
                delivery, rid, attempt, exc.error, kind, job.submission, stream=stream
            )
        except FleetError as exc:
            traced.failed(exc)
            await self._answer_error(delivery, stream, exc, kind)
        except ReplyQueueGone:
            traced.failed("reply_queue_gone")
            log.warning("reply_queue_gone", reply_to=reply_to)
            await self._settle(delivery, kind, "reply_queue_gone")
        except BROKER_ERRORS as exc:
            # The broker connection failed under us: nothing can be answered or acked on
            # it, and the broker requeues the job for another attempt.
            traced.failed("broker_lost")
            log.warning("broker_lost_mid_job", error=repr(exc))
        except asyncio.CancelledError:
            traced.failed("cancelled" if running.client_cancelled else "released")
            if not running.client_cancelled:
                raise  # shutdown or lost connection: leave unacked for redelivery
            task.uncancel()
            log.info("job_cancelled_by_producer")
            await self._answer_error(delivery, stream, Cancelled("cancelled by the producer"), kind)
        except Exception as exc:
            log.exception("job_crashed")
            err = FleetError(f"internal error in worker ({type(exc).__name__})")
            traced.failed(err)
            await self._refuse(delivery, rid, attempt, err, kind, job.submission, stream=stream)
        finally:
            stream.close()
            traced.end()
            if self._running.get(run_key) is running:
                del self._running[run_key]

    # -- outcomes ----------------------------------------------------------

    def _complete_final(
        self,
        fields: dict[str, Any],
        request_id: str,
        kind: str,
        state: RunState,
        frames: int,
        queue_ms: float | None,
    ) -> None:
        """What the final frame carries besides the handler's answer: the attempt's
        metrics, with the cost of the target that answered (a fallback, maybe)."""
        metrics = state.metrics(frames, queue_ms)
        answered, usage = fields.get("target"), fields.get("usage")
        if isinstance(answered, Answered) and (isinstance(usage, Usage) or kind == "verify"):
            metrics.cost_usd = self._prices.cost(
                answered.provider, answered.model, usage or Usage(), kind
            )
        fields["metrics"] = metrics
        if state.rate_limit is not None:
            fields["rate_limit"] = state.rate_limit
        fields["named_metrics"] = named_metrics(
            status="ok",
            usage=usage if isinstance(usage, Usage) else None,
            metrics=metrics,
            request_id=request_id,
            answered_provider=answered.provider if isinstance(answered, Answered) else None,
        )

    async def _answer_error(
        self, delivery: Delivery, stream: ReplyStream, exc: FleetError, kind: str
    ) -> None:
        log.info(
            "job_failed",
            code=exc.code.value,
            error=exc.message,
            provider_status=exc.provider_status,
            provider_request_id=exc.provider_request_id,
            retry_after=exc.retry_after,
        )
        # The budget the refusing response reported: a 429's is the one a producer
        # that paces itself needs most.
        rate_limit = delivery.state.rate_limit if delivery.state is not None else None
        try:
            await stream.fail_with(exc, rate_limit=rate_limit)
        except ReplyQueueGone:
            log.warning("reply_queue_gone", reply_to=delivery.reply_to)
        await self._settle(delivery, kind, exc.code.value, error=exc)

    async def _refuse(
        self,
        delivery: Delivery,
        rid: str,
        attempt: int,
        exc: FleetError,
        kind: str,
        submission: int = 0,
        crashes: int | None = None,
        *,
        stream: ReplyStream | None = None,
    ) -> None:
        """Answer (when a reply queue is known), copy to llm.dead with the reason, then ack."""
        log.warning("job_refused", request_id=rid, code=exc.code.value, error=exc.message)
        if stream is not None:
            with contextlib.suppress(ReplyQueueGone):
                await stream.fail_with(exc, retryable=False)
        elif delivery.answer_to:
            await self._answer_once(delivery.answer_to, rid, attempt, exc, submission)
        await self._dead_letter(delivery, exc, crashes)
        await self._settle(
            delivery, kind, exc.code.value, error=exc, rid=rid, submission=submission, dead=True
        )

    async def _answer_once(
        self, reply_to: str, rid: str, attempt: int, exc: FleetError, submission: int = 0
    ) -> None:
        """An error frame for a job that never got a stream of its own."""
        if self._publisher is None:
            return
        stream = ReplyStream(
            self._publisher,
            reply_to=reply_to,
            request_id=rid,
            attempt=attempt,
            submission=submission,
        )
        try:
            with contextlib.suppress(ReplyQueueGone):
                await stream.fail_with(exc)
        finally:
            stream.close()

    async def _dead_letter(
        self, delivery: Delivery, exc: FleetError, crashes: int | None = None
    ) -> None:
        """Copy the job to llm.dead with the reason (workers/dead_letters.py decides how)."""
        assert self._session is not None
        make_copy = functools.partial(
            dead_letter_copy,
            delivery.body,
            delivery.props,
            code=exc.code.value,
            reason=exc.message,
            source_queue=delivery.routing_key,
            worker=self._settings.worker_id,
            worker_user=self._ring.user,
            crashes=crashes,
            max_body=self._settings.max_job_bytes,
        )
        # Hashing an oversized body (up to the broker's limit) takes tens of ms: off the loop.
        oversized = len(delivery.body) > self._settings.max_job_bytes
        body, copy = await asyncio.to_thread(make_copy) if oversized else make_copy()
        await self._session.raw_publish.basic_publish(
            body, routing_key=t.DEAD_QUEUE, properties=copy, mandatory=True
        )

    async def _settle(
        self,
        delivery: Delivery,
        kind: str,
        outcome: str,
        *,
        error: FleetError | None = None,
        fields: dict[str, Any] | None = None,
        rid: str = "",
        submission: int = 0,
        dead: bool = False,
    ) -> None:
        """Record the attempt (durably, when the recorder is the audit trail), then ack."""
        record = self._attempt_record(
            delivery, kind, outcome, error=error, fields=fields, rid=rid, submission=submission
        )
        record.dead_lettered = dead
        try:
            await self._recorder.record(record)
        except TransientError as exc:
            # The recorder stopped (shutdown) with the row unwritten: left unacked, the
            # job comes back and its next attempt is recorded instead.
            log.warning("attempt_not_recorded", error=str(exc))
            return
        except Exception:
            # The recorder retries what can succeed; what it raises never will, and
            # holding the job unacked would only run it again.
            log.exception("attempt_record_failed")
        self._metrics.observe(record)
        await delivery.ack()

    def _attempt_record(
        self,
        delivery: Delivery,
        kind: str,
        outcome: str,
        *,
        error: FleetError | None,
        fields: dict[str, Any] | None,
        rid: str,
        submission: int,
    ) -> AttemptRecord:
        job, state, fields = delivery.job, delivery.state, fields or {}
        metrics = fields.get("metrics")
        if metrics is None and state is not None:
            metrics = state.metrics(0, self._queue_ms(delivery))
        provider_request_id = error.provider_request_id if error is not None else None
        return AttemptRecord(
            request_id=job.request_id if job is not None else rid,
            attempt=delivery.attempt,
            submission=job.submission if job is not None else submission,
            producer=delivery.user,
            kind=kind,
            queue=delivery.routing_key,
            worker=self._settings.worker_id,
            started_at=delivery.started_at,
            status=outcome,
            error=error.message if error is not None else None,
            target=_target_ref(state.target) if state and state.target else None,
            tried=[_target_ref(target) for target in state.tried] if state else [],
            answered=fields.get("target"),
            provider_request_id=provider_request_id
            or (state.provider_request_id if state else None),
            metrics=metrics,
            usage=fields.get("usage"),
            metadata=dict(job.metadata) if job is not None else {},
            reached_provider=state is not None and state.provider_time > 0,
            request_body=state.request_body if state else None,
            response_body=state.response_body if state else None,
        )

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _remaining(job: Job) -> float | None:
        if job.deadline is None:
            return None
        return job.deadline / 1000.0 - time.time()

    @staticmethod
    def _queue_ms(delivery: Delivery) -> float | None:
        published = delivery.headers.get(t.HDR_PUBLISHED_US)
        if type(published) is int:
            return max(0.0, (time.time_ns() // 1000 - published) / 1000.0)
        return None

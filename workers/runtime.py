"""The worker process: consume jobs, run them, publish frames, ack only when confirmed.

One `Session` is a pair of AMQP connections (consuming and publishing are kept
apart, as RabbitMQ advises, so flow control on publishes never stalls acks).
When either connection drops, every in-flight job is cancelled unacked (the
broker redelivers them) and a new session is opened with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import msgspec
import structlog
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pamqp.commands import Basic

from contracts import topology as t
from contracts.amqp import declare_topology
from contracts.codec import decode_job, peek_request_id
from contracts.errors import (
    Cancelled,
    ContractError,
    Expired,
    FleetError,
    InternalError,
    ProviderTimeout,
)
from contracts.jobs import Job, job_kind
from workers.config import Settings
from workers.execute import Executor, InputRejected, RunState
from workers.metrics import WorkerMetrics
from workers.reply import BROKER_ERRORS, ReplyPublisher, ReplyQueueGone, ReplyStream

log = structlog.get_logger("llm_fleet.worker")

_CANCEL_MEMORY = 10_000  # request ids remembered for cancels that arrive before their job


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    client_cancelled: bool = False


@dataclass(slots=True)
class _Session:
    consume: AbstractConnection
    publish: AbstractConnection
    raw_publish: Any  # aiormq channel with confirms + on_return_raises
    consumers: list[tuple[AbstractQueue, str]] = field(default_factory=list)
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
    ) -> None:
        self._settings = settings
        self._forget_credential = forget_credential
        self._executor = executor
        self._metrics = metrics
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, _Running] = {}
        # Cancels that arrived before their job (insertion-ordered, bounded).
        self._cancelled: OrderedDict[str, None] = OrderedDict()
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
        delay = self._settings.reconnect_delay
        while not self._stop.is_set():
            try:
                session = await self._open()
            except BROKER_ERRORS as exc:
                log.warning("broker_unreachable", error=repr(exc), retry_in_s=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = self._settings.reconnect_delay
            self._session = session
            self._metrics.broker_connected.set(1)
            try:
                await self._serve(session)
            finally:
                self._metrics.broker_connected.set(0)
                self._session = None
                await session.close()
        log.info("worker_stopped", worker=self._settings.worker_id)

    async def _open(self) -> _Session:
        s = self._settings
        name = f"llm-fleet worker {s.worker_id}"
        consume = await aio_pika.connect(
            s.amqp_url, client_properties={"connection_name": name + " (consume)"}
        )
        try:
            publish = await aio_pika.connect(
                s.amqp_url, client_properties={"connection_name": name + " (publish)"}
            )
        except BaseException:
            await consume.close()
            raise
        session = _Session(consume=consume, publish=publish, raw_publish=None)
        session.watch()
        try:
            pub_channel = await publish.channel(publisher_confirms=True, on_return_raises=True)
            session.raw_publish = await pub_channel.get_underlay_channel()
            self._publisher = ReplyPublisher(
                session.raw_publish,
                s.coalesce,
                messages=self._metrics.reply_messages,
                frames=self._metrics.frames,
            )
            channel = await consume.channel()
            await channel.set_qos(prefetch_count=s.concurrency)
            queues = await declare_topology(channel, delivery_limit=s.delivery_limit)
            for qname in s.queues:
                if qname not in queues:
                    raise ValueError(f"unknown queue {qname!r}; choose from {sorted(t.JOB_QUEUES)}")
                queue = queues[qname]
                session.consumers.append((queue, await queue.consume(self._on_delivery)))
            control = await channel.declare_queue(exclusive=True, auto_delete=True)
            await control.bind(t.CONTROL_EXCHANGE)
            await control.consume(self._on_control, no_ack=True)
            notify_channel = await consume.channel()
            await notify_channel.set_qos(prefetch_count=16)
            notify = await notify_channel.get_queue(t.DEAD_NOTIFY_QUEUE)
            await notify.consume(self._on_dead_notice)
        except BaseException:
            await session.close()
            raise
        log.info(
            "worker_ready", worker=s.worker_id, queues=list(s.queues), concurrency=s.concurrency
        )
        return session

    async def _serve(self, session: _Session) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        lost = asyncio.ensure_future(session.lost.wait())
        try:
            await asyncio.wait([stop, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            lost.cancel()
        if self._stop.is_set() and not session.lost.is_set():
            await self._drain(session)
            return
        log.warning("broker_connection_lost", inflight=len(self._tasks))
        # Their acks can no longer reach the broker, which requeues them for another attempt.
        await self._cancel_all()

    async def _drain(self, session: _Session) -> None:
        """SIGTERM: stop intake, let in-flight jobs finish within the grace period."""
        for queue, tag in session.consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        pending = set(self._tasks)
        log.info("draining", inflight=len(pending), grace_s=self._settings.grace_period)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self._settings.grace_period)
            if late:
                log.warning("grace_period_over", unfinished=len(late))
                await self._cancel_all()

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- deliveries --------------------------------------------------------

    async def _on_delivery(self, message: AbstractIncomingMessage) -> None:
        # Our own task, so cancelling a job never disturbs aio-pika's delivery machinery.
        task = asyncio.create_task(self._process(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_control(self, message: AbstractIncomingMessage) -> None:
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
        running = self._running.get(rid)
        if running is not None:
            running.client_cancelled = True
            running.task.cancel()
        else:
            self._remember_cancel(rid)

    def _remember_cancel(self, rid: str) -> None:
        self._cancelled[rid] = None
        if len(self._cancelled) > _CANCEL_MEMORY:
            self._cancelled.popitem(last=False)  # forget the oldest

    async def _on_dead_notice(self, message: AbstractIncomingMessage) -> None:
        """Answer producers whose job the broker dead-lettered (delivery limit reached)."""
        headers = message.headers or {}
        if t.HDR_DEAD_CODE not in headers and message.reply_to and self._publisher is not None:
            reason = "rejected"
            deaths = headers.get("x-death")
            if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
                reason = str(deaths[0].get("reason", reason))
            rid = message.correlation_id or peek_request_id(message.body) or ""
            # A newer attempt than any worker could have used, so the client takes it.
            await self._answer_once(
                message.reply_to,
                rid,
                self._settings.delivery_limit + 1,
                InternalError(
                    f"job dead-lettered by the broker ({reason}): no worker could finish it "
                    f"within {self._settings.delivery_limit} deliveries"
                ),
            )
            log.error("job_dead_lettered_by_broker", request_id=rid, reason=reason)
        await message.ack()

    async def _process(self, message: AbstractIncomingMessage) -> None:
        count = (message.headers or {}).get(t.HDR_DELIVERY_COUNT)
        # Quorum queues count earlier deliveries; the first delivery has no header.
        attempt = (count if isinstance(count, int) else 0) + 1
        started = time.monotonic()
        try:
            job = decode_job(message.body, max_bytes=self._settings.max_job_bytes)
        except ContractError as exc:
            rid = message.correlation_id or peek_request_id(message.body) or ""
            await self._reject(message, rid, attempt, exc, kind="unknown")
            return
        kind = job_kind(job)
        # Each job runs in its own task, so this context is the job's alone.
        structlog.contextvars.bind_contextvars(
            request_id=job.request_id,
            kind=kind,
            provider=job.target.provider,
            model=job.target.model,
            attempt=attempt,
        )
        if not message.reply_to:
            await self._reject(
                message,
                job.request_id,
                attempt,
                ContractError("reply_to", "no reply queue given"),
                kind,
            )
            return
        self._metrics.inflight.inc()
        try:
            await self._run_job(message, job, kind, attempt, started)
        finally:
            self._metrics.inflight.dec()
            self._metrics.job_seconds.labels(kind).observe(time.monotonic() - started)

    async def _run_job(
        self, message: AbstractIncomingMessage, job: Job, kind: str, attempt: int, started: float
    ) -> None:
        assert self._publisher is not None and message.reply_to is not None
        rid = job.request_id
        stream = ReplyStream(
            self._publisher,
            reply_to=message.reply_to,
            request_id=rid,
            attempt=attempt,
        )
        state = RunState(started=started)
        queue_ms = self._queue_ms(message)
        task = asyncio.current_task()
        assert task is not None
        running = _Running(task)
        self._running[rid] = running
        try:
            if rid in self._cancelled:
                del self._cancelled[rid]
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
            fields["metrics"] = state.metrics(stream.frames + 1, queue_ms)
            await stream.finish(**fields)
            await self._settle(message, kind, "ok")
            self._observe(job, state, queue_ms)
        except InputRejected as exc:
            await self._reject(message, rid, attempt, exc.error, kind, stream)
        except FleetError as exc:
            await self._answer_error(message, stream, exc, kind)
        except ReplyQueueGone:
            log.warning("reply_queue_gone", reply_to=message.reply_to)
            await self._settle(message, kind, "reply_queue_gone")
        except BROKER_ERRORS as exc:
            # The broker connection failed under us: nothing can be answered or acked on
            # it, and the broker requeues the job for another attempt.
            log.warning("broker_lost_mid_job", error=repr(exc))
        except asyncio.CancelledError:
            if not running.client_cancelled:
                raise  # shutdown or lost connection: leave unacked for redelivery
            task.uncancel()
            log.info("job_cancelled_by_producer")
            await self._answer_error(message, stream, Cancelled("cancelled by the producer"), kind)
        except Exception as exc:
            log.exception("job_crashed")
            err = FleetError(f"internal error in worker ({type(exc).__name__})")
            await self._reject(message, rid, attempt, err, kind, stream)
        finally:
            stream.close()
            self._running.pop(rid, None)

    # -- outcomes ----------------------------------------------------------

    async def _answer_error(
        self, message: AbstractIncomingMessage, stream: ReplyStream, exc: FleetError, kind: str
    ) -> None:
        log.info(
            "job_failed",
            code=exc.code.value,
            error=exc.message,
            provider_status=exc.provider_status,
        )
        try:
            await stream.fail(
                code=exc.code.value,
                message=exc.message,
                retryable=exc.retryable,
                provider_status=exc.provider_status,
            )
        except ReplyQueueGone:
            log.warning("reply_queue_gone", reply_to=message.reply_to)
        await self._settle(message, kind, exc.code.value)

    async def _reject(
        self,
        message: AbstractIncomingMessage,
        rid: str,
        attempt: int,
        exc: FleetError,
        kind: str,
        stream: ReplyStream | None = None,
    ) -> None:
        """Answer (when a reply queue is known), copy to llm.dead with the reason, then ack."""
        log.warning("job_rejected", request_id=rid, code=exc.code.value, error=exc.message)
        if stream is not None:
            with contextlib.suppress(ReplyQueueGone):
                await stream.fail(code=exc.code.value, message=exc.message, retryable=False)
        elif message.reply_to:
            await self._answer_once(message.reply_to, rid, attempt, exc)
        await self._dead_letter(message, exc)
        self._metrics.dead_lettered.labels(exc.code.value).inc()
        await self._settle(message, kind, exc.code.value)

    async def _answer_once(self, reply_to: str, rid: str, attempt: int, exc: FleetError) -> None:
        """An error frame for a job that never got a stream of its own."""
        if self._publisher is None:
            return
        stream = ReplyStream(self._publisher, reply_to=reply_to, request_id=rid, attempt=attempt)
        try:
            with contextlib.suppress(ReplyQueueGone):
                await stream.fail(code=exc.code.value, message=exc.message, retryable=False)
        finally:
            stream.close()

    async def _dead_letter(self, message: AbstractIncomingMessage, exc: FleetError) -> None:
        assert self._session is not None
        headers: dict[str, Any] = dict(message.headers or {})
        headers[t.HDR_DEAD_CODE] = exc.code.value
        headers[t.HDR_DEAD_REASON] = exc.message[:1000]
        headers[t.HDR_DEAD_QUEUE] = message.routing_key or ""
        headers["x-fleet-worker"] = self._settings.worker_id
        props = Basic.Properties(
            headers=headers,
            reply_to=message.reply_to,
            correlation_id=message.correlation_id,
            message_id=message.message_id,
            content_type=message.content_type,
            delivery_mode=2,
        )
        await self._session.raw_publish.basic_publish(
            message.body, routing_key=t.DEAD_QUEUE, properties=props, mandatory=True
        )

    async def _settle(self, message: AbstractIncomingMessage, kind: str, outcome: str) -> None:
        self._metrics.jobs.labels(kind, outcome).inc()
        await message.ack()

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _remaining(job: Job) -> float | None:
        if job.deadline is None:
            return None
        return job.deadline / 1000.0 - time.time()

    @staticmethod
    def _queue_ms(message: AbstractIncomingMessage) -> float | None:
        published = (message.headers or {}).get(t.HDR_PUBLISHED_US)
        if isinstance(published, int):
            return max(0.0, (time.time_ns() // 1000 - published) / 1000.0)
        return None

    def _observe(self, job: Job, state: RunState, queue_ms: float | None) -> None:
        if state.first_token is not None:
            self._metrics.ttft_seconds.labels(job.target.provider).observe(
                state.first_token - state.started
            )
        if queue_ms is not None:
            self._metrics.queue_seconds.observe(queue_ms / 1000)
        if state.retries:
            self._metrics.retries.labels(job.target.provider).inc(state.retries)

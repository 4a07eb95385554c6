"""Reply frames: ordered per stream, batched per reply queue, confirmed by the broker.

Every stream of one producer shares that producer's reply queue, so instead of
one AMQP message per frame (the Python AMQP client costs a few hundred µs of CPU
per publish) the worker packs the pending frames of *all* its streams bound for
one reply queue into one message: a msgpack array of frames. The next message
to that queue leaves as soon as the previous one is confirmed and at least
`min_interval` has passed. An idle fleet therefore sends a first token at once,
and a busy one sends bigger messages instead of more of them: the message rate
follows the number of producers, not streams times tokens.

A stream's text accumulates between messages, so a stream contributes at most
one delta per message however fast its provider streams.

Messages that carry a `final` or `error` frame are persistent: the job is acked
once that message is confirmed, so it must survive a broker restart in a
durable reply queue. Deltas stay transient; if a restart loses some, the final
frame (which holds the whole answer) still arrives and the client recovers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel as RawChannel
from pamqp.commands import Basic

from contracts import topology as t
from contracts.codec import encode
from contracts.errors import BadRequest, FleetError
from contracts.frames import Delta, Error, Final, RateLimit, Start, ToolCallDelta
from workers.config import CoalesceSettings

# One frame alone in a message, with the array header around it, must fit the
# broker's message-size limit.
_MAX_FRAME_BYTES = t.BROKER_MAX_MESSAGE_BYTES - 16

_FIXARRAY, _ARRAY16, _ARRAY32 = 0x90, 0xDC, 0xDD
_TERMINAL = (Final, Error)


class ReplyQueueGone(Exception):
    """The producer's reply queue no longer exists (mandatory publish was returned)."""


def _array(encoded: list[bytes]) -> bytes:
    """A msgpack array of already-encoded frames, without decoding them again."""
    n = len(encoded)
    if n < 16:
        head = bytes((_FIXARRAY | n,))
    elif n < 1 << 16:
        head = bytes((_ARRAY16,)) + n.to_bytes(2, "big")
    else:
        head = bytes((_ARRAY32,)) + n.to_bytes(4, "big")
    return head + b"".join(encoded)


class _Entry:
    """One frame to be: built (and numbered) only when its message is assembled."""

    __slots__ = ("fields", "frame_cls", "future", "stream")

    def __init__(
        self,
        stream: ReplyStream,
        frame_cls: type[Any],
        fields: dict[str, Any] | None,
        future: asyncio.Future[None] | None,
    ) -> None:
        self.stream = stream
        self.frame_cls = frame_cls
        self.fields = fields
        self.future = future


class _Outbox:
    """Frames waiting for one reply queue, and the task that sends them."""

    def __init__(self, publisher: ReplyPublisher, reply_to: str) -> None:
        self._pub = publisher
        self.reply_to = reply_to
        self.entries: list[_Entry] = []
        self.users = 0
        self._sender: asyncio.Task[None] | None = None
        self._last = 0.0

    def push(self, entry: _Entry, *, hold: float = 0.0) -> None:
        """Queue a frame; `hold` > 0 lets it wait that long for company before sending."""
        self.entries.append(entry)
        if self._sender is not None:
            return
        if hold > 0:
            asyncio.get_running_loop().call_later(hold, self.kick)
        else:
            self.kick()

    def kick(self) -> None:
        if self._sender is None and self.entries:
            self._sender = asyncio.create_task(self._send_loop())

    @property
    def idle(self) -> bool:
        return self._sender is None and not self.entries

    async def _send_loop(self) -> None:
        taken: list[_Entry] = []
        try:
            while self.entries:
                gap = self._last + self._pub.min_interval - time.monotonic()
                if gap > 0:
                    await asyncio.sleep(gap)
                taken, self.entries = self.entries, []
                self._last = time.monotonic()
                for batch, bodies in self._pub.split(self._build(taken)):
                    await self._deliver(batch, bodies)
                taken = []
        finally:
            self._sender = None
            unsent, self.entries = taken + self.entries, []
            if unsent:  # only when cancelled (session teardown)
                _fail(unsent, ConnectionError("reply publisher stopped"))
            self._pub.release(self)

    @staticmethod
    def _build(entries: list[_Entry]) -> list[tuple[_Entry, bytes]]:
        built: list[tuple[_Entry, bytes]] = []
        for e in entries:
            try:
                built.append((e, e.stream.build(e)))
            except Exception as exc:
                _fail([e], exc)
        return built

    async def _deliver(self, batch: list[_Entry], bodies: list[bytes]) -> None:
        persistent = any(e.frame_cls in _TERMINAL for e in batch)
        try:
            await self._pub.publish(self.reply_to, _array(bodies), len(bodies), persistent)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            _fail(batch, exc)
            return
        for e in batch:
            if e.future is not None and not e.future.done():
                e.future.set_result(None)


def _fail(entries: list[_Entry], exc: BaseException) -> None:
    """Tell each entry's job: its stream raises on the next call, its waiter gets `exc`."""
    for e in entries:
        e.stream.failed(exc)
        if e.future is not None and not e.future.done():
            e.future.set_exception(exc)


class ReplyPublisher:
    """Per session: one outbox per reply queue, publishing on a confirm channel."""

    def __init__(
        self,
        channel: RawChannel,
        coalesce: CoalesceSettings,
        *,
        user: str,
        on_published: Callable[[int, int], None] | None = None,
    ) -> None:
        self._channel = channel
        # Stamped on every frame; the broker checks it against our login, and
        # producers believe only frames from worker logins.
        self._user = user
        self.min_interval = coalesce.interval
        self.start_hold = coalesce.start_hold
        self._max_bytes = coalesce.max_message_bytes
        self._outboxes: dict[str, _Outbox] = {}
        # Told (frames, bytes) of each confirmed message: the worker's metrics.
        self._on_published = on_published

    def attach(self, reply_to: str) -> _Outbox:
        box = self._outboxes.get(reply_to)
        if box is None:
            box = self._outboxes[reply_to] = _Outbox(self, reply_to)
        box.users += 1
        return box

    def detach(self, box: _Outbox) -> None:
        box.users -= 1
        self.release(box)

    def release(self, box: _Outbox) -> None:
        if box.users <= 0 and box.idle and self._outboxes.get(box.reply_to) is box:
            del self._outboxes[box.reply_to]

    def split(self, built: list[tuple[_Entry, bytes]]) -> list[tuple[list[_Entry], list[bytes]]]:
        """Cut a batch into messages of at most max_message_bytes (a big frame goes alone)."""
        out: list[tuple[list[_Entry], list[bytes]]] = []
        entries: list[_Entry] = []
        bodies: list[bytes] = []
        size = 0
        for entry, body in built:
            if bodies and size + len(body) > self._max_bytes:
                out.append((entries, bodies))
                entries, bodies, size = [], [], 0
            entries.append(entry)
            bodies.append(body)
            size += len(body)
        if bodies:
            out.append((entries, bodies))
        return out

    async def publish(
        self, reply_to: str, body: bytes, n_frames: int, persistent: bool = False
    ) -> None:
        # A new object each time: aiormq writes the message id it matches returns by into it.
        props = Basic.Properties(
            delivery_mode=2 if persistent else 1,
            content_type="application/msgpack",
            user_id=self._user,
        )
        try:
            await self._channel.basic_publish(
                body, routing_key=reply_to, properties=props, mandatory=True
            )
        except aiormq.exceptions.PublishError:
            raise ReplyQueueGone(reply_to) from None
        if self._on_published is not None:
            self._on_published(n_frames, len(body))


class ReplyStream:
    """The frames of one job attempt: `start`, deltas, then `final` or `error`.

    `text()` and `tool()` run once per token: they only append to a buffer and,
    the first time after each message, put a placeholder in the outbox that
    becomes one delta holding everything buffered by then. A failed publish
    (e.g. the reply queue is gone) is raised from the next call, so the
    provider stream stops promptly.
    """

    def __init__(
        self,
        publisher: ReplyPublisher,
        *,
        reply_to: str,
        request_id: str,
        attempt: int,
        submission: int = 0,
    ) -> None:
        self._pub = publisher
        self._box: _Outbox | None = publisher.attach(reply_to)
        self._rid = request_id
        self._attempt = attempt
        self._submission = submission
        self._seq = 0
        self._text: list[str] = []
        self._tools: list[ToolCallDelta] = []
        self._refusal: list[str] = []
        self._queued = False
        self._failure: BaseException | None = None
        self.frames = 0
        self.first_delta_at: float | None = None

    def _push(
        self,
        frame_cls: type[Any],
        fields: dict[str, Any] | None,
        *,
        hold: float = 0.0,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        if self._box is None:
            raise RuntimeError("reply stream already closed")
        self._box.push(_Entry(self, frame_cls, fields, future), hold=hold)

    async def _push_confirmed(self, frame_cls: type[Any], fields: dict[str, Any]) -> None:
        """Queue a frame and return once the message carrying it is confirmed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._push(frame_cls, fields, future=future)
        await future

    def start(self, worker_id: str) -> None:
        """Announce the attempt without a publish of its own: it rides with the first
        delta (a separate publish would compete with the provider request for the
        loop), or leaves alone after `start_hold` when the provider is slow."""
        self._push(Start, {"worker": worker_id}, hold=self._pub.start_hold)

    def text(self, piece: str) -> None:
        if self._failure is not None:
            raise self._failure
        if piece:
            self._text.append(piece)
            self._mark()

    def tool(self, delta: ToolCallDelta) -> None:
        if self._failure is not None:
            raise self._failure
        self._tools.append(delta)
        self._mark()

    def refusal(self, piece: str) -> None:
        if self._failure is not None:
            raise self._failure
        if piece:
            self._refusal.append(piece)
            self._mark()

    def _mark(self) -> None:
        if self.first_delta_at is None:
            self.first_delta_at = time.monotonic()
        if not self._queued:
            self._queued = True
            self._push(Delta, None)

    def build(self, entry: _Entry) -> bytes:
        """Number and encode a frame at the moment its message is assembled."""
        if entry.frame_cls is Delta:
            self._queued = False
            fields: dict[str, Any] = {"text": "".join(self._text), "tool_calls": self._tools}
            if self._refusal:
                fields["refusal"] = "".join(self._refusal)
            self._text, self._tools, self._refusal = [], [], []
        else:
            fields = entry.fields or {}
        metrics = fields.get("metrics")
        if metrics is not None:
            metrics.frames = self.frames + 1
        body = encode(
            entry.frame_cls(
                request_id=self._rid,
                attempt=self._attempt,
                seq=self._seq,
                submission=self._submission,
                **fields,
            )
        )
        if len(body) > _MAX_FRAME_BYTES:
            # The broker would refuse the message and close the channel: the job would
            # be released and run (and billed) again, to the same end.
            raise BadRequest(
                f"the answer is {len(body)} bytes, over the broker's message limit of "
                f"{t.BROKER_MAX_MESSAGE_BYTES}: ask for fewer inputs or dimensions per job"
            )
        # Counted only once encoded: a frame that failed leaves no gap in `seq`.
        self._seq += 1
        self.frames += 1
        return body

    def failed(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc

    async def finish(self, **fields: Any) -> None:
        """Queue the final frame after any buffered text; return once it is confirmed."""
        if self._failure is not None:
            raise self._failure
        await self._push_confirmed(Final, fields)

    async def fail(self, **fields: Any) -> None:
        """Queue an error frame (text not yet sent is dropped) and wait for its confirm."""
        self._text, self._tools, self._refusal = [], [], []
        if isinstance(self._failure, ReplyQueueGone):
            raise self._failure
        await self._push_confirmed(Error, fields)

    async def fail_with(
        self,
        exc: FleetError,
        *,
        retryable: bool | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        """The error frame for `exc`, carrying everything it knows; `retryable`
        overrides its own verdict (a job refused for good is never worth resending).
        `rate_limit` is the budget the failed call's last response reported."""
        await self.fail(
            code=exc.code.value,
            message=exc.message,
            retryable=exc.retryable if retryable is None else retryable,
            provider_status=exc.provider_status,
            retry_after=exc.retry_after,
            provider_request_id=exc.provider_request_id,
            rate_limit=rate_limit,
        )

    def close(self) -> None:
        if self._box is not None:
            self._pub.detach(self._box)
            self._box = None

"""Ordered, coalesced, confirmed reply frames for one job attempt."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel as RawChannel
from pamqp.commands import Basic

from contracts.codec import encode
from contracts.frames import Delta, Error, Final, Start, ToolCallDelta
from workers.config import CoalesceSettings


class ReplyQueueGone(Exception):
    """The producer's reply queue no longer exists (mandatory publish was returned)."""


class ReplyPublisher:
    """Publishes frames to reply queues through the default exchange with confirms.

    Uses aiormq's channel directly: building aio-pika Message objects per delta
    is measurable overhead on the per-token path.
    """

    def __init__(self, channel: RawChannel) -> None:
        self._channel = channel

    async def publish(
        self, reply_to: str, correlation_id: str, message_id: str, body: bytes
    ) -> None:
        props = Basic.Properties(
            correlation_id=correlation_id,
            message_id=message_id,
            delivery_mode=1,
            content_type="application/msgpack",
        )
        try:
            await self._channel.basic_publish(
                body, routing_key=reply_to, properties=props, mandatory=True
            )
        except aiormq.exceptions.PublishError:
            raise ReplyQueueGone(reply_to) from None


class ReplyStream:
    """Frames of one attempt: `start`, coalesced `delta`s, then `final` or `error`.

    `text()`/`tool()` are synchronous and cheap (called per token); a single
    background flusher publishes batches. A failed publish (e.g. the reply queue
    is gone) is re-raised from the next `text()`/`tool()`/`finish()` call so the
    provider call stops promptly.
    """

    def __init__(
        self,
        publisher: ReplyPublisher,
        *,
        reply_to: str,
        request_id: str,
        attempt: int,
        coalesce: CoalesceSettings,
    ) -> None:
        self._pub = publisher
        self._reply_to = reply_to
        self._rid = request_id
        self._attempt = attempt
        self._interval = coalesce.interval
        self._max_chars = coalesce.max_chars
        self._seq = 0
        self._text: list[str] = []
        self._chars = 0
        self._tools: list[ToolCallDelta] = []
        self._flusher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._failure: BaseException | None = None
        self._closing = False
        self._start: asyncio.Task[None] | None = None
        self.frames = 0
        self.first_delta_at: float | None = None

    @property
    def attempt(self) -> int:
        return self._attempt

    async def _send(self, frame_cls: type[Any], **fields: Any) -> None:
        seq = self._seq
        self._seq += 1
        frame = frame_cls(request_id=self._rid, attempt=self._attempt, seq=seq, **fields)
        if self._start is not None and seq > 0:
            # Later frames go out only once `start` is confirmed, so order holds.
            start, self._start = self._start, None
            await start
        await self._pub.publish(
            self._reply_to, self._rid, f"{self._rid}:{self._attempt}:{seq}", encode(frame)
        )
        self.frames += 1

    def start(self, worker_id: str) -> None:
        """Announce the attempt without waiting for its confirm: the provider call
        should not sit behind a broker round trip (time to first token)."""
        self._start = asyncio.create_task(self._send(Start, worker=worker_id))

    def text(self, piece: str) -> None:
        if self._failure is not None:
            raise self._failure
        if not piece:
            return
        self._text.append(piece)
        self._chars += len(piece)
        self._kick()

    def tool(self, delta: ToolCallDelta) -> None:
        if self._failure is not None:
            raise self._failure
        self._tools.append(delta)
        self._kick()

    def _kick(self) -> None:
        if self.first_delta_at is None:
            self.first_delta_at = time.monotonic()
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop())
        elif self._chars >= self._max_chars:
            self._wake.set()

    def _take(self) -> tuple[str, list[ToolCallDelta]]:
        text = "".join(self._text)
        tools = self._tools
        self._text, self._chars, self._tools = [], 0, []
        return text, tools

    async def _flush_loop(self) -> None:
        try:
            while self._text or self._tools:
                text, tools = self._take()
                await self._send(Delta, text=text, tool_calls=tools)
                if self._interval > 0 and self._chars < self._max_chars and not self._closing:
                    # Collect the burst that arrives during the window into one frame.
                    self._wake.clear()
                    try:
                        async with asyncio.timeout(self._interval):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._failure = exc
        finally:
            self._flusher = None

    async def _settle_flusher(self) -> None:
        """Let an in-flight batch finish so no sequence number is left unpublished."""
        self._closing = True
        flusher = self._flusher
        if flusher is not None:
            self._wake.set()
            await asyncio.shield(flusher)

    async def _drain(self) -> None:
        await self._settle_flusher()
        if self._failure is not None:
            raise self._failure
        if self._text or self._tools:
            text, tools = self._take()
            await self._send(Delta, text=text, tool_calls=tools)

    async def finish(self, **fields: Any) -> None:
        """Flush pending deltas, then publish the final frame and wait for its confirm."""
        await self._drain()
        await self._send(Final, **fields)

    async def fail(self, **fields: Any) -> None:
        """Publish an error frame; deltas not yet sent are dropped (the attempt failed)."""
        self._text, self._tools, self._chars = [], [], 0
        await self._settle_flusher()
        if isinstance(self._failure, ReplyQueueGone):
            raise self._failure
        await self._send(Error, **fields)

    def close(self) -> None:
        for task in (self._flusher, self._start):
            if task is not None and not task.done():
                task.cancel()
        self._flusher = self._start = None

"""Broker addresses, connecting to whichever answers, and reconnect pacing.

`AMQP_URL` (and `FleetClient`'s first argument) may name several brokers of one
cluster, comma-separated. Each process starts at a random one, so a fleet
spreads its connections over the cluster, and after losing a connection it
tries the next address first: the one it was using has probably just failed.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import DeliveredMessage

from contracts import amqp_guard

# Every process that talks AMQP through `contracts` reads message properties
# through the guarded decoders (see amqp_guard): one bad byte in a message must
# never cost a connection.
amqp_guard.install()

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"

# What a lost or failing broker connection raises into a publish, an ack or a
# declare (OSError covers ConnectionError and TimeoutError; a channel the broker
# already closed raises ChannelInvalidStateError, a RuntimeError).
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
)


def watch_channel(channel: RawChannel, lost: asyncio.Event) -> None:
    """Set `lost` when the broker closes `channel` or cancels a consumer on it (the
    queue's node went down): either way the session must start again elsewhere."""
    channel.on_consumer_cancel_callbacks.add(lambda _: lost.set())
    channel.closing.add_done_callback(lambda _: lost.set())


def delivery_tag(message: DeliveredMessage) -> int:
    tag = getattr(message.delivery, "delivery_tag", None)
    return tag if isinstance(tag, int) else 0


def broker_urls(urls: str | Sequence[str]) -> tuple[str, ...]:
    """`"amqp://a/,amqp://b/"` or a list of URLs → the URLs, in order, non-empty."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out = tuple(u.strip() for u in items if u.strip())
    if not out:
        raise ValueError("no broker URL given")
    return out


def broker_user(url: str) -> str:
    """The login a URL connects as (aio-pika's default, guest, when it names none)."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).username or "") or "guest"


class BrokerRing:
    """The broker addresses of one process, tried in rotation from a random start."""

    def __init__(self, urls: str | Sequence[str]) -> None:
        self.urls = broker_urls(urls)
        users = {broker_user(u) for u in self.urls}
        if len(users) != 1:
            # The broker stamps every message with the login it came in on: one
            # process is one identity, whichever node it reaches.
            raise ValueError("every broker address of one process must use the same login")
        # The login, which the broker validates as each message's user_id.
        self.user = users.pop()
        self._next = random.randrange(len(self.urls))
        self.current: str | None = None  # the broker of the last connection made

    async def connect(
        self, name: str, *, same_broker: bool = False, connect_timeout: float = 10.0
    ) -> AbstractConnection:
        """A plain (not robust) connection to the first broker that answers.

        `same_broker` connects where the last connection went (a worker's two
        connections share one node, so losing any other node leaves them alone).
        Callers own recovery: a robust connection would resume channels whose
        unacked deliveries the broker has already requeued (see architecture.md).
        """
        if same_broker and self.current is not None:
            return await self._connect(self.current, name, connect_timeout)
        last: BaseException | None = None
        for _ in range(len(self.urls)):
            url = self.urls[self._next]
            self._next = (self._next + 1) % len(self.urls)
            try:
                connection = await self._connect(url, name, connect_timeout)
            except BROKER_ERRORS as exc:
                last = exc
                continue
            self.current = url
            return connection
        assert last is not None
        raise last

    @staticmethod
    async def _connect(url: str, name: str, connect_timeout: float) -> AbstractConnection:
        return await aio_pika.connect(
            url, timeout=connect_timeout, client_properties={"connection_name": name}
        )


@dataclass(slots=True)
class Backoff:
    """Exponential reconnect delays that reset only after a session stayed up.

    A session that opens and is lost again at once (a broker that accepts
    connections and drops them, a message that breaks the connection) is a
    failure like a refused connection: resetting the delay on every successful
    open would reconnect in a tight loop.
    """

    initial: float = 0.2
    cap: float = 30.0
    healthy_after: float = 10.0
    _delay: float = field(default=0.0, init=False)
    _opened_at: float | None = field(default=None, init=False)

    def opened(self) -> None:
        self._opened_at = time.monotonic()

    def next_delay(self) -> float:
        """The wait before the next attempt, with jitter so a fleet does not reconnect in step."""
        if self._opened_at is not None and time.monotonic() - self._opened_at >= self.healthy_after:
            self._delay = 0.0
        self._opened_at = None
        self._delay = self.initial if self._delay == 0.0 else min(self._delay * 2, self.cap)
        return self._delay * random.uniform(0.5, 1.0)

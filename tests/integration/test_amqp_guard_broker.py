"""A message pamqp cannot decode, through a real RabbitMQ, with and without the guard.

RabbitMQ relays short strings that are not UTF-8, deeply nested header tables
and out-of-range timestamps. Without contracts.amqp_guard such a delivery drops
the consumer's connection, and the broker hands the same message to the next
one; with it the consumer sees markers, can ack, and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections.abc import AsyncIterator, Iterator

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from contracts import amqp_guard
from contracts.amqp_guard import UnreadableTable, UnreadableText, unreadable_properties
from tests.amqp_raw import Outcome, RawPublisher, publish_raw

pytestmark = pytest.mark.integration


def _field(key: bytes, kind: bytes, value: bytes) -> bytes:
    return bytes([len(key)]) + key + kind + value


def _nested(levels: int) -> bytes:
    """A table value (length and content), each level holding the next under "n"."""
    content = _field(b"a", b"b", b"\x01")
    for _ in range(levels - 1):
        content = _field(b"n", b"F", struct.pack(">I", len(content)) + content)
    return struct.pack(">I", len(content)) + content


BAD_PROPERTIES: dict[str, bytes | object] = {
    "content_type": b"\xff\xfe",
    "correlation_id": b"job-\xc3(",
    "headers": (
        _field(b"x-published-us", b"l", struct.pack(">q", 1_715_000_000_000_000))
        + _field(b"\xffkey", b"b", b"\x01")
        + _field(b"when", b"T", struct.pack(">Q", 2**63 - 1))
        + _field(b"deep", b"F", _nested(500))
    ),
    "timestamp": 2**63 - 1,
}


@contextlib.contextmanager
def pamqp_decoders() -> Iterator[None]:
    """pamqp's own decoders for the duration, then the guard as it was."""
    was_installed = amqp_guard.installed()
    amqp_guard.uninstall()
    try:
        yield
    finally:
        if was_installed:
            amqp_guard.install()


@contextlib.contextmanager
def guard() -> Iterator[None]:
    was_installed = amqp_guard.installed()
    amqp_guard.install()
    try:
        yield
    finally:
        if not was_installed:
            amqp_guard.uninstall()


@pytest.fixture
async def queue_name(amqp_url: str) -> AsyncIterator[str]:
    name = f"guard-{uuid.uuid4().hex[:8]}"
    yield name
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


async def _declare(channel: aio_pika.abc.AbstractChannel, name: str) -> AbstractQueue:
    return await channel.declare_queue(name, arguments={"x-queue-type": "classic"})


async def test_guard_keeps_the_connection_serving(amqp_url: str, queue_name: str) -> None:
    setup = await aio_pika.connect(amqp_url)
    async with setup:
        await _declare(await setup.channel(), queue_name)
    outcome = await asyncio.wait_for(
        publish_raw(amqp_url, "", queue_name, b"poison", properties=BAD_PROPERTIES), 10
    )
    assert outcome == Outcome("ack")  # RabbitMQ takes it as it is

    # Without the guard: the delivery kills the consumer's connection.
    with pamqp_decoders():
        connection = await aio_pika.connect(amqp_url)
        lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        connection.close_callbacks.add(lambda _, exc: None if lost.done() else lost.set_result(exc))
        received: list[AbstractIncomingMessage] = []

        async def on_message(message: AbstractIncomingMessage) -> None:
            received.append(message)

        queue = await _declare(await connection.channel(), queue_name)
        await queue.consume(on_message)
        reason = await asyncio.wait_for(lost, 10)
        assert not connection.connected.is_set() and not received
        assert isinstance(reason, aiormq.exceptions.InvalidFrameError), reason
        assert "utf-8" in str(reason)
        await connection.close()

    # With it: the same message arrives, marked; the connection carries on.
    with guard():
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await _declare(channel, queue_name)
            inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            await queue.consume(inbox.put)
            poison = await asyncio.wait_for(inbox.get(), 10)
            assert poison.body == b"poison" and poison.redelivered
            assert unreadable_properties(poison) == ["content_type", "headers", "correlation_id"]
            assert isinstance(poison.content_type, UnreadableText)
            assert poison.content_type.raw == b"\xff\xfe"
            assert isinstance(poison.correlation_id, UnreadableText)
            headers = poison.headers
            assert headers["x-published-us"] == 1_715_000_000_000_000
            assert headers["\ufffdkey"] == 1 and headers["when"] is None
            assert poison.timestamp is None
            deep = headers["deep"]
            while isinstance(deep, dict) and not isinstance(deep, UnreadableTable):
                deep = deep["n"]
            assert isinstance(deep, UnreadableTable)
            await poison.ack()

            for i in range(3):
                await channel.default_exchange.publish(
                    aio_pika.Message(f"ok-{i}".encode(), headers={"n": i}), queue_name
                )
            for i in range(3):
                message = await asyncio.wait_for(inbox.get(), 10)
                assert message.body == f"ok-{i}".encode() and message.headers == {"n": i}
                assert unreadable_properties(message) == []
                await message.ack()
            assert not connection.is_closed


# RabbitMQ checks some of these at publish time: 3.10 answers a bad user_id or
# expiration with a 406 channel close, and a table it cannot parse with a 541
# connection close. Versions differ, so either way passes here; what matters is
# that whatever it does take reaches a guarded consumer, marked.
REFUSABLE: list[tuple[str, dict[str, bytes | object], list[str]]] = [
    ("message_id", {"message_id": b"\xc3("}, ["message_id"]),
    ("type", {"message_type": b"\xff"}, ["type"]),
    ("app_id", {"app_id": b"\xff"}, ["app_id"]),
    ("reply_to", {"reply_to": b"\xff"}, ["reply_to"]),
    ("content_encoding", {"content_encoding": b"\xff"}, ["content_encoding"]),
    ("user_id", {"user_id": b"\xff"}, ["user_id"]),
    ("expiration", {"expiration": b"\xff"}, ["expiration"]),
    ("unknown table type", {"headers": _field(b"k", b"?", b"\x01")}, ["headers"]),
    ("table past its end", {"headers": _field(b"k", b"S", b"\0\0\0\x09ab")}, ["headers"]),
    ("long string not UTF-8", {"headers": _field(b"k", b"S", b"\0\0\0\x01\xff")}, []),
]


@pytest.mark.parametrize(
    ("properties", "unreadable"),
    [case[1:] for case in REFUSABLE],
    ids=[case[0] for case in REFUSABLE],
)
async def test_what_the_broker_takes_a_guarded_consumer_reads(
    amqp_url: str, queue_name: str, properties: dict[str, bytes | object], unreadable: list[str]
) -> None:
    with guard():
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await _declare(channel, queue_name)
            async with RawPublisher(amqp_url) as publisher:
                outcome = await asyncio.wait_for(
                    publisher.publish("", queue_name, b"x", properties), 10
                )
            if outcome.status != "ack":
                assert outcome.status in ("channel-closed", "connection-closed"), outcome
                assert outcome.reply_code in (406, 541), outcome
                return
            message = await queue.get(timeout=10)
            assert unreadable_properties(message) == unreadable
            await message.ack()
            assert not connection.is_closed

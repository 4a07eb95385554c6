"""Publish messages whose properties no AMQP client library would encode.

A minimal AMQP 0-9-1 client on a bare TCP socket (no TLS): it negotiates the
connection and a channel with pamqp's encoders, then writes the basic.publish
method and the content header itself, so short strings can be any bytes
(invalid UTF-8 included) and the header table any byte sequence. Publisher confirms tell the
caller whether RabbitMQ took the message or closed the channel over it.
"""

from __future__ import annotations

import asyncio
import datetime
import struct
import urllib.parse
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, TypeVar

from pamqp import base, commands, constants, encode, frame, header, heartbeat

T = TypeVar("T")
Status = Literal["ack", "nack", "returned", "channel-closed", "connection-closed"]

# Property order and flag bits of the content header, from pamqp's spec.
_PROPERTY_TYPES: dict[str, str] = {
    name: commands.Basic.Properties.amqp_type(name)
    for name in commands.Basic.Properties.attributes()
}
_PROPERTY_FLAGS: dict[str, int] = commands.Basic.Properties.flags
_ALIASES = {"type": "message_type"}


@dataclass(frozen=True)
class Outcome:
    """What the broker did with one publish."""

    status: Status
    reply_code: int = 0
    reply_text: str = ""


def short_str(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 255:
        raise ValueError("a short string holds at most 255 bytes")
    return bytes([len(raw)]) + raw


def table_field(key: bytes, kind: bytes, value: bytes) -> bytes:
    """One entry of a field table's content: key, type byte and the value's wire form."""
    return short_str(key) + kind + value


def table_value(content: bytes) -> bytes:
    """A nested table or array value: its content behind the 4-byte length."""
    return struct.pack(">I", len(content)) + content


def nested_table(levels: int) -> bytes:
    """A table value `levels` deep, each level holding the next under "n"."""
    content = table_field(b"a", b"b", b"\x01")
    for _ in range(levels - 1):
        content = table_field(b"n", b"F", table_value(content))
    return table_value(content)


def encode_property(name: str, value: object) -> bytes:
    """The wire form of one property value.

    bytes are taken as the raw content: a short string's characters, the header
    table's content (its length prefix is added here) or a timestamp's 8 bytes.
    Anything else goes through pamqp's encoder for the property's type.
    """
    kind = _PROPERTY_TYPES[name]
    if isinstance(value, bytes):
        if kind == "shortstr":
            return short_str(value)
        if kind == "table":
            return struct.pack(">I", len(value)) + value
        return value
    if kind == "timestamp" and isinstance(value, int):
        return struct.pack(">Q", value)
    if kind == "timestamp" and isinstance(value, datetime.datetime):
        return encode.timestamp(value)
    return encode.by_type(value, kind)  # type: ignore[arg-type]


def content_header(body_size: int, properties: dict[str, object]) -> bytes:
    """Payload of a content header frame carrying these properties, in spec order."""
    named = {_ALIASES.get(name, name): value for name, value in properties.items()}
    unknown = set(named) - set(_PROPERTY_TYPES)
    if unknown:
        raise ValueError(f"unknown properties: {sorted(unknown)}")
    flags, parts = 0, []
    for name in commands.Basic.Properties.attributes():
        if name in named:
            flags |= _PROPERTY_FLAGS[name]
            parts.append(encode_property(name, named[name]))
    return struct.pack(">HHQH", commands.Basic.frame_id, 0, body_size, flags) + b"".join(parts)


def basic_publish(exchange: str | bytes, routing_key: str | bytes, *, mandatory: bool) -> bytes:
    """Payload of a basic.publish method frame; names may be any bytes."""
    return (
        struct.pack(">I", commands.Basic.Publish.index)
        + b"\0\0"  # reserved-1 (ticket)
        + short_str(exchange)
        + short_str(routing_key)
        + bytes([int(mandatory)])  # mandatory bit; immediate stays 0
    )


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + constants.FRAME_END_CHAR


def _method(data: bytes) -> object:
    """Unmarshal a method frame; a close's reply text may quote our invalid bytes."""
    (index,) = struct.unpack_from(">I", data, 7)
    close = {
        commands.Channel.Close.index: commands.Channel.Close,
        commands.Connection.Close.index: commands.Connection.Close,
    }.get(index)
    if close is None:
        return frame.unmarshal(data)[2]
    (code, length) = struct.unpack_from(">HB", data, 11)
    text = data[14 : 14 + length].decode("utf-8", errors="replace")
    return close(reply_code=code, reply_text=text)


class RawPublisher:
    """One connection; a fresh confirm-mode channel whenever the broker closed the last."""

    def __init__(self, url: str) -> None:
        self._url = urllib.parse.urlsplit(url)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._channel = 0
        self._open = False
        self._frame_max = 131072

    async def __aenter__(self) -> RawPublisher:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def frame_max(self) -> int:
        """The largest frame, as negotiated with the broker (its default before connect)."""
        return self._frame_max

    async def connect(self) -> None:
        url = self._url
        self._reader, self._writer = await asyncio.open_connection(
            url.hostname or "127.0.0.1", url.port or 5672
        )
        self._writer.write(header.ProtocolHeader().marshal())
        await self._expect(commands.Connection.Start)
        user = urllib.parse.unquote(url.username or "guest")
        password = urllib.parse.unquote(url.password or "guest")
        await self._send(
            0,
            commands.Connection.StartOk(
                client_properties={"product": "tests.amqp_raw"},
                mechanism="PLAIN",
                response=f"\0{user}\0{password}",
            ),
        )
        tune = await self._expect(commands.Connection.Tune)
        self._frame_max = min(tune.frame_max or self._frame_max, self._frame_max)
        await self._send(
            0, commands.Connection.TuneOk(tune.channel_max, self._frame_max, heartbeat=0)
        )
        vhost = urllib.parse.unquote(url.path[1:]) if len(url.path) > 1 else "/"
        await self._send(0, commands.Connection.Open(virtual_host=vhost))
        await self._expect(commands.Connection.OpenOk)

    async def close(self) -> None:
        if self._writer is None:
            return
        try:
            await self._send(0, commands.Connection.Close(200, "bye", 0, 0))
            await asyncio.wait_for(self._expect(commands.Connection.CloseOk), 5)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            self._drop()

    def _drop(self) -> None:
        # The channel went with the connection: after connect() it must be opened anew.
        self._open = False
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def publish(
        self,
        exchange: str | bytes,
        routing_key: str | bytes,
        body: bytes,
        properties: dict[str, object],
        *,
        mandatory: bool = False,
    ) -> Outcome:
        if self._writer is None:
            return Outcome("connection-closed")
        if not self._open:
            await self._open_channel()
        chunk = self._frame_max - 8
        frames = [
            _frame(
                constants.FRAME_METHOD,
                self._channel,
                basic_publish(exchange, routing_key, mandatory=mandatory),
            ),
            _frame(constants.FRAME_HEADER, self._channel, content_header(len(body), properties)),
            *(
                _frame(constants.FRAME_BODY, self._channel, body[i : i + chunk])
                for i in range(0, len(body), chunk)
            ),
        ]
        self._writer.write(b"".join(frames))
        return await self._outcome()

    async def _outcome(self) -> Outcome:
        returned = False
        while True:
            try:
                channel, received = await self._read()
            except (asyncio.IncompleteReadError, ConnectionError):
                self._drop()
                return Outcome("connection-closed")
            if isinstance(received, commands.Connection.Close):
                await self._send(0, commands.Connection.CloseOk())
                self._drop()
                return Outcome("connection-closed", received.reply_code or 0, received.reply_text)
            if channel != self._channel:
                continue
            if isinstance(received, commands.Channel.Close):
                await self._send(channel, commands.Channel.CloseOk())
                self._open = False
                return Outcome("channel-closed", received.reply_code or 0, received.reply_text)
            if isinstance(received, commands.Basic.Return):
                returned = True  # its header and body frames follow; skipped above
            elif isinstance(received, commands.Basic.Ack):
                return Outcome("returned" if returned else "ack")
            elif isinstance(received, commands.Basic.Nack):
                return Outcome("nack")

    async def _open_channel(self) -> None:
        self._channel += 1
        await self._send(self._channel, commands.Channel.Open())
        await self._expect(commands.Channel.OpenOk)
        await self._send(self._channel, commands.Confirm.Select())
        await self._expect(commands.Confirm.SelectOk)
        self._open = True

    async def _send(self, channel: int, method: base.Frame) -> None:
        assert self._writer is not None
        self._writer.write(frame.marshal(method, channel))
        await self._writer.drain()

    async def _read(self) -> tuple[int, object]:
        assert self._reader is not None
        while True:
            head = await self._reader.readexactly(7)
            kind, channel, size = struct.unpack(">BHI", head)
            payload = await self._reader.readexactly(size + 1)
            if kind == constants.FRAME_METHOD:
                return channel, _method(head + payload)
            # content frames of a basic.return, heartbeats: not needed here
            if kind == constants.FRAME_HEARTBEAT:
                assert self._writer is not None
                self._writer.write(heartbeat.Heartbeat().marshal())

    async def _expect(self, kind: type[T]) -> T:
        _, received = await self._read()
        if not isinstance(received, kind):
            raise ConnectionError(f"expected {kind.__name__}, got {received!r}")
        return received


async def publish_raw(
    url: str,
    exchange: str | bytes,
    routing_key: str | bytes,
    body: bytes,
    *,
    properties: dict[str, bytes | object],
    mandatory: bool = False,
) -> Outcome:
    """Publish one message on its own connection and report what the broker did.

    `properties` uses pamqp's names (message_type, or aio-pika's type). A bytes
    value is the raw wire content: a short string's bytes, the header table's
    content without its length prefix, a timestamp's 8 bytes.
    """
    async with RawPublisher(url) as publisher:
        return await publisher.publish(exchange, routing_key, body, properties, mandatory=mandatory)

"""Incremental Server-Sent Events decoder (WHATWG "event stream" parsing).

Bytes go in as they arrive from the socket; complete events come out. The work
is done per line with `bytes.splitlines`, which splits on exactly LF, CRLF and
CR (unlike `str.splitlines`, which also splits on U+2028 and friends). Lines
always end on an ASCII byte, so decoding per event can never cut a UTF-8
sequence in half, wherever the chunk boundaries fall.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

__all__ = ["SSEDecoder", "ServerSentEvent", "aiter_sse"]

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. `event` defaults to "message" as in the spec."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feed byte chunks with `feed()`; each call returns the events it completed.

    An event still incomplete when the stream ends is discarded (spec behaviour),
    so a truncated stream never produces a half event.
    """

    __slots__ = ("_data", "_event", "_id", "_partial", "_pending_cr", "_retry", "_started")

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # pieces of the current unterminated line
        self._pending_cr = False  # last chunk ended in CR; a leading LF belongs to it
        self._started = False  # BOM check done
        self._data: list[bytes] = []
        self._event = b""
        self._id: str | None = None  # the "last event ID" persists across events
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if not chunk:
            return []  # before the CR check: an empty chunk must not consume it
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        if b"\n" not in chunk and b"\r" not in chunk:
            # Mid-line: buffer without joining, so byte-at-a-time feeding stays linear.
            self._partial.append(chunk)
            return []
        if self._partial:
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial.clear()
        lines = chunk.splitlines(keepends=True)
        last = lines[-1]
        if last[-1:] not in (b"\n", b"\r"):
            self._partial.append(lines.pop())
        elif last[-1:] == b"\r":
            self._pending_cr = True
        if not self._started:
            self._started = True
            if lines[0].startswith(_BOM):
                lines[0] = lines[0][len(_BOM) :]
        events: list[ServerSentEvent] = []
        for raw in lines:
            event = self._line(raw.rstrip(b"\r\n"))
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: bytes) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        colon = line.find(b":")
        if colon == 0:
            return None  # comment / keep-alive
        if colon < 0:
            name, value = line, b""
        else:
            name, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event, retry = self._data, self._event, self._retry
        self._data, self._event, self._retry = [], b"", None
        if not data:
            return None
        text = data[0] if len(data) == 1 else b"\n".join(data)
        return ServerSentEvent(
            event=event.decode("utf-8", "replace") if event else "message",
            data=text.decode("utf-8", "replace"),
            id=self._id,
            retry=retry,
        )


async def aiter_sse(chunks: AsyncIterator[bytes]) -> AsyncGenerator[ServerSentEvent, None]:
    """Decode an async byte stream into events; closing this closes `chunks` too."""
    decoder = SSEDecoder()
    try:
        async for chunk in chunks:
            for event in decoder.feed(chunk):
                yield event
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()

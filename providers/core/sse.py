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

__all__ = ["RAW_JSON_EVENT", "SSEDecoder", "ServerSentEvent", "aiter_sse"]

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. `event` defaults to "message" as in the spec."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


RAW_JSON_EVENT = "raw-json"


class SSEDecoder:
    """Feed byte chunks with `feed()`; each call returns the events it completed.

    An event still incomplete when the stream ends is discarded (spec behaviour),
    so a truncated stream never produces a half event.

    With `raw_json`, JSON written outside any `data:` field (Google's APIs send a
    mid-stream error as a bare, pretty-printed JSON object) is kept rather than
    ignored as the spec would: lines from one starting with `{` or `[` until its
    brackets balance come out as one event named `RAW_JSON_EVENT`.
    """

    __slots__ = (
        "_data",
        "_depth",
        "_event",
        "_id",
        "_partial",
        "_pending_cr",
        "_raw",
        "_raw_json",
        "_retry",
        "_started",
    )

    def __init__(self, *, raw_json: bool = False) -> None:
        self._partial: list[bytes] = []  # pieces of the current unterminated line
        self._pending_cr = False  # last chunk ended in CR; a leading LF belongs to it
        self._started = False  # BOM check done
        self._data: list[bytes] = []
        self._event = b""
        self._id: str | None = None  # the "last event ID" persists across events
        self._retry: int | None = None
        self._raw_json = raw_json
        self._raw: list[bytes] = []  # lines of bare JSON still open
        self._depth = 0  # its open brackets

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
        if self._raw:
            return self._raw_line(line)
        if not line:
            return self._dispatch()
        colon = line.find(b":")
        if colon == 0:
            return None  # comment / keep-alive
        if self._raw_json and line[:1] in (b"{", b"["):
            return self._raw_line(line)
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

    def _raw_line(self, line: bytes) -> ServerSentEvent | None:
        self._raw.append(line)
        self._depth += _bracket_balance(line)
        if self._depth > 0:
            return None
        text = b"\n".join(self._raw)
        self._raw, self._depth = [], 0
        return ServerSentEvent(event=RAW_JSON_EVENT, data=text.decode("utf-8", "replace"))

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


def _bracket_balance(line: bytes) -> int:
    """Opened minus closed brackets on one line of JSON, those inside strings aside
    (JSON strings cannot span lines, so each line starts outside one)."""
    balance = 0
    in_string = escaped = False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            balance += 1
        elif byte in (0x7D, 0x5D):  # } ]
            balance -= 1
    return balance


async def aiter_sse(
    chunks: AsyncIterator[bytes], *, raw_json: bool = False
) -> AsyncGenerator[ServerSentEvent, None]:
    """Decode an async byte stream into events; closing this closes `chunks` too."""
    decoder = SSEDecoder(raw_json=raw_json)
    try:
        async for chunk in chunks:
            for event in decoder.feed(chunk):
                yield event
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()

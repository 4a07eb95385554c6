"""Newline-delimited JSON (Ollama's `application/x-ndjson` streams), decoded incrementally.

Bytes go in as they arrive from the socket, whole objects come out, one per
line. A line may be cut anywhere between two chunks (inside a UTF-8 sequence
too: lines are split on the LF byte, which never occurs inside one), a final
line without its LF still counts, and blank lines are skipped. A line that is
not a JSON object means the stream cannot be trusted: `ProviderUnavailable`,
which the worker may retry.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Final

import msgspec

from contracts.errors import ProviderUnavailable

__all__ = ["NDJSONDecoder", "aiter_ndjson"]

# Once per streamed token: msgspec builds the same dicts as json.loads in a third of the time.
_decode: Final = msgspec.json.Decoder().decode


class NDJSONDecoder:
    """Feed byte chunks with `feed()`, then call `end()` once the body is over."""

    __slots__ = ("_partial", "_provider")

    def __init__(self, provider: str) -> None:
        self._provider = provider
        self._partial: list[bytes] = []  # pieces of the current unterminated line

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        if b"\n" not in chunk:
            # Mid-line: buffer without joining, so byte-at-a-time feeding stays linear.
            if chunk:
                self._partial.append(chunk)
            return []
        if self._partial:
            self._partial.append(chunk)
            chunk = b"".join(self._partial)
            self._partial.clear()
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if tail:
            self._partial.append(tail)
        return [self._object(line) for line in lines if not line.isspace() and line]

    def end(self) -> list[dict[str, Any]]:
        """The last line, when the body ended without a final LF."""
        rest = b"".join(self._partial)
        self._partial.clear()
        if not rest.strip():
            return []
        return [self._object(rest)]

    def _object(self, line: bytes) -> dict[str, Any]:
        try:
            value = _decode(line)
        except msgspec.DecodeError:
            raise ProviderUnavailable(f"{self._provider}: malformed stream line") from None
        if not isinstance(value, dict):
            raise ProviderUnavailable(f"{self._provider}: stream line is not a JSON object")
        return value


async def aiter_ndjson(
    provider: str, chunks: AsyncIterator[bytes]
) -> AsyncGenerator[dict[str, Any], None]:
    """Decode an async byte stream into objects; closing this closes `chunks` too."""
    decoder = NDJSONDecoder(provider)
    try:
        async for chunk in chunks:
            for value in decoder.feed(chunk):
                yield value
        for value in decoder.end():
            yield value
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()

"""Newline-delimited JSON streams (`application/x-ndjson`, Ollama's native API)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

__all__ = ["aiter_lines"]


async def aiter_lines(chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """Complete non-blank lines of a byte stream; a cut last line is dropped, not guessed.

    Splits on LF only (JSON text never holds a raw LF), so a multi-byte UTF-8
    sequence is never cut. Closing this closes `chunks` too.
    """
    pending = b""
    try:
        async for chunk in chunks:
            if b"\n" not in chunk:
                pending += chunk
                continue
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if line.strip():
                    yield line
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()

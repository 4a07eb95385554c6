"""The incremental NDJSON decoder: lines cut anywhere, a last line without LF, bad lines."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from contracts.errors import ProviderUnavailable
from providers.ollama.ndjson import NDJSONDecoder, aiter_ndjson

BODY = (
    '{"message":{"content":"héllo 👋"},"done":false}\n'
    "\n"
    '{"message":{"content":" wörld"},"done":false}\r\n'
    '{"done":true,"eval_count":2}'
).encode()
EXPECTED = [
    {"message": {"content": "héllo 👋"}, "done": False},
    {"message": {"content": " wörld"}, "done": False},
    {"done": True, "eval_count": 2},
]


def decode(chunks: list[bytes]) -> list[dict[str, object]]:
    decoder = NDJSONDecoder("ollama")
    out = [value for chunk in chunks for value in decoder.feed(chunk)]
    return out + decoder.end()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50, len(BODY)])
def test_lines_cut_anywhere_decode_the_same(size: int) -> None:
    # Byte-sized pieces cut every multi-byte UTF-8 sequence too.
    chunks = [BODY[i : i + size] for i in range(0, len(BODY), size)]
    assert decode(chunks) == EXPECTED


def test_a_terminated_last_line_and_empty_chunks() -> None:
    decoder = NDJSONDecoder("ollama")
    assert decoder.feed(b"") == []
    assert decoder.feed(b'{"a":1}\n{"b"') == [{"a": 1}]
    assert decoder.feed(b"") == []
    assert decoder.feed(b":2}\n") == [{"b": 2}]
    assert decoder.end() == []


def test_blank_tail_is_nothing() -> None:
    decoder = NDJSONDecoder("ollama")
    assert decoder.feed(b'{"a":1}\n  ') == [{"a": 1}]
    assert decoder.end() == []


@pytest.mark.parametrize("line", [b"{not json}\n", b'{"a":\n', b"[1, 2]\n", b'"text"\n'])
def test_a_bad_line_is_provider_unavailable(line: bytes) -> None:
    decoder = NDJSONDecoder("ollama")
    with pytest.raises(ProviderUnavailable, match=r"^ollama: "):
        decoder.feed(line)


def test_a_bad_last_line_is_provider_unavailable() -> None:
    decoder = NDJSONDecoder("ollama")
    decoder.feed(b'{"a":1')
    with pytest.raises(ProviderUnavailable):
        decoder.end()


async def test_aiter_ndjson_closes_its_source() -> None:
    closed = False

    async def source() -> AsyncIterator[bytes]:
        nonlocal closed
        try:
            yield b'{"a":1}\n{"b":'
            yield b"2}"
        finally:
            closed = True

    got = [value async for value in aiter_ndjson("ollama", source())]
    assert got == [{"a": 1}, {"b": 2}]
    assert closed

"""The incremental SSE decoder: line endings, chunk boundaries, field rules."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.core.sse import RAW_JSON_EVENT, ServerSentEvent, SSEDecoder, aiter_sse


def decode(chunks: Iterable[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def data_of(events: list[ServerSentEvent]) -> list[str]:
    return [e.data for e in events]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_endings(eol: bytes) -> None:
    stream = b"data: one" + eol + eol + b"event: x" + eol + b"data: two" + eol + eol
    events = decode([stream])
    assert events == [
        ServerSentEvent(event="message", data="one"),
        ServerSentEvent(event="x", data="two"),
    ]


def test_cr_at_chunk_end_and_lf_at_next_start_is_one_line_end() -> None:
    # If the LF were taken as a second line end, "a" would be dispatched early
    # and "b" would become a separate event.
    events = decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert data_of(events) == ["a\nb"]


def test_bare_cr_then_next_chunk_without_lf() -> None:
    events = decode([b"data: a\r", b"\r", b"data: b\r\r"])
    assert data_of(events) == ["a", "b"]


def test_multi_line_data_joined_with_newline() -> None:
    events = decode([b"data: first\ndata: second\ndata:\ndata: third\n\n"])
    assert data_of(events) == ["first\nsecond\n\nthird"]


def test_comments_ignored_and_not_dispatched() -> None:
    events = decode([b": keep-alive\n\n:another\ndata: x\n: mid\n\n"])
    assert data_of(events) == ["x"]


def test_data_without_space_and_only_one_space_stripped() -> None:
    events = decode([b"data:x\n\n", b"data:  two spaces\n\n"])
    assert data_of(events) == ["x", " two spaces"]


def test_empty_data_line_dispatches_empty_string_but_no_data_does_not() -> None:
    events = decode([b"event: ping\n\n", b"id: 7\n\n", b"data:\n\n"])
    assert events == [ServerSentEvent(data="", id="7")]


def test_field_without_colon_and_unknown_fields() -> None:
    events = decode([b"data\nfoo: bar\ndata: y\n\n"])
    assert data_of(events) == ["\ny"]


def test_id_persists_and_retry_parsed() -> None:
    events = decode([b"id: 1\nretry: 1500\ndata: a\n\ndata: b\n\nretry: x\ndata: c\n\n"])
    assert [(e.id, e.retry) for e in events] == [("1", 1500), ("1", None), ("1", None)]


def test_event_type_resets_after_dispatch() -> None:
    events = decode([b"event: first\ndata: a\n\ndata: b\n\n"])
    assert [e.event for e in events] == ["first", "message"]


def test_split_utf8_sequence() -> None:
    payload = "data: héllo 😀 wörld\n\n".encode()
    cut = payload.index("😀".encode()) + 2  # inside the 4-byte emoji
    events = decode([payload[:cut], payload[cut:]])
    assert data_of(events) == ["héllo 😀 wörld"]


def test_byte_at_a_time() -> None:
    stream = "event: e\r\ndata: ünïcode\r\ndata: 2\r\n\r\n: c\rdata: z\r\r".encode()
    events = decode(stream[i : i + 1] for i in range(len(stream)))
    assert events == [ServerSentEvent(event="e", data="ünïcode\n2"), ServerSentEvent(data="z")]


def test_incomplete_trailing_event_is_not_dispatched() -> None:
    assert data_of(decode([b"data: a\n\ndata: partial\n"])) == ["a"]


def test_leading_bom_is_stripped() -> None:
    assert data_of(decode([b"\xef\xbb", b"\xbfdata: a\n\n"])) == ["a"]


def test_empty_chunks_are_harmless() -> None:
    assert data_of(decode([b"", b"data: a", b"", b"\n", b"", b"\n"])) == ["a"]
    # An empty chunk between a CR and its LF must not turn CRLF into two line ends.
    assert data_of(decode([b"data: a\r", b"", b"\ndata: b\r\n\r\n"])) == ["a\nb"]


async def test_aiter_sse_closes_source() -> None:
    closed: list[bool] = []

    async def source() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\ndata: 2\n\n"
            yield b"data: 3\n\n"
        finally:
            closed.append(True)

    events = aiter_sse(source())
    first = await anext(events)
    await events.aclose()
    assert first.data == "1"
    assert closed == [True]


# -- property: chunking never changes the result -----------------------------------

_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
    max_size=20,
)
_field = st.one_of(
    st.builds(lambda t: f"data: {t}", _text),
    st.builds(lambda t: f"data:{t}", _text),
    st.builds(lambda t: f"event: {t}", _text),
    st.builds(lambda t: f": {t}", _text),
    st.builds(lambda t: f"id: {t}", _text.filter(lambda s: "\0" not in s)),
    st.just(""),
)


@st.composite
def streams_and_splits(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines = draw(st.lists(_field, max_size=25))
    raw = (eol.join(lines) + eol + eol).encode()
    cuts = draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=12))
    return raw, sorted(cuts)


def reference(raw: bytes) -> list[ServerSentEvent]:
    """A slow, obviously-correct whole-stream parser to compare against."""
    events: list[ServerSentEvent] = []
    data: list[str] | None = None
    event, last_id = "", None
    for line in re.split(r"\r\n|\r|\n", raw.decode()):
        if not line:
            if data is not None:
                events.append(ServerSentEvent(event or "message", "\n".join(data), last_id))
            data, event = None, ""
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data = [*(data or []), value]
        elif name == "event":
            event = value
        elif name == "id":
            last_id = value
    return events


@settings(max_examples=300, deadline=None)
@given(streams_and_splits())
def test_any_split_gives_the_same_events(case: tuple[bytes, list[int]]) -> None:
    raw, cuts = case
    bounds = [0, *cuts, len(raw)]
    chunks = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    whole = decode([raw])
    assert decode(chunks) == whole
    assert whole == reference(raw)


# -- bare JSON between events (Google's mid-stream errors) ----------------------------

_GOOGLE_ERROR = (
    b'{\r\n  "error": {\r\n    "code": 503,\r\n    "message": "The model is {overloaded}]",\r\n'
    b'    "status": "UNAVAILABLE",\r\n    "details": [{"x": "\\"}"}]\r\n  }\r\n}\r\n'
)


def test_bare_json_is_ignored_unless_asked_for() -> None:
    body = b'data: {"a":1}\r\n\r\n' + _GOOGLE_ERROR
    assert [e.data for e in SSEDecoder().feed(body)] == ['{"a":1}']


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_bare_json_object_becomes_one_event(size: int) -> None:
    body = b'data: {"a":1}\r\n\r\n' + _GOOGLE_ERROR + b'data: {"b":2}\r\n\r\n'
    decoder = SSEDecoder(raw_json=True)
    events = [e for i in range(0, len(body), size) for e in decoder.feed(body[i : i + size])]
    assert [e.event for e in events] == ["message", RAW_JSON_EVENT, "message"]
    error = json.loads(events[1].data)
    assert error["error"]["code"] == 503 and error["error"]["details"] == [{"x": '"}'}]


def test_unfinished_bare_json_is_dropped_like_an_unfinished_event() -> None:
    decoder = SSEDecoder(raw_json=True)
    assert decoder.feed(_GOOGLE_ERROR[:40]) == []
    assert decoder.feed(b"") == []

"""contracts.amqp_guard: no byte sequence in a well-framed frame makes pamqp raise."""

from __future__ import annotations

import contextlib
import copy
import datetime
import decimal
import math
import pickle
import struct
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands, decode, encode, exceptions, frame, header

from contracts import amqp_guard
from contracts.amqp_guard import (
    MAX_DEPTH,
    UNREADABLE_KEY,
    UnreadableArray,
    UnreadableTable,
    UnreadableText,
    readable_headers,
    unreadable_properties,
)

# pamqp's own entries, whatever the import order: another module may have installed.
_was_installed = amqp_guard.installed()
amqp_guard.uninstall()
PAMQP_METHODS = dict(decode.METHODS)
PAMQP_TABLE_MAPPING = dict(decode.TABLE_MAPPING)
if _was_installed:
    amqp_guard.install()

PROPERTY_FLAGS = commands.Basic.Properties.flags
SHORT_STRINGS = [
    name
    for name in commands.Basic.Properties.attributes()
    if commands.Basic.Properties.amqp_type(name) == "shortstr"
]


@pytest.fixture(autouse=True)
def _guarded() -> Iterator[None]:
    """Each test runs guarded; the process is left as the test found it."""
    was_installed = amqp_guard.installed()
    amqp_guard.install()
    yield
    if not was_installed:
        amqp_guard.uninstall()


@contextlib.contextmanager
def pamqp_decoders() -> Iterator[None]:
    """pamqp's original decoders for the duration."""
    amqp_guard.uninstall()
    try:
        yield
    finally:
        amqp_guard.install()


# -- frames --------------------------------------------------------------------------------


def header_frame(props: commands.Basic.Properties, body_size: int = 10) -> bytes:
    return frame.marshal(header.ContentHeader(0, body_size, props), 1)


def raw_header_frame(properties: list[tuple[str, bytes]], body_size: int = 10) -> bytes:
    """A content header frame with each property's wire bytes given as is."""
    flags = 0
    for name, _ in properties:
        flags |= PROPERTY_FLAGS[name]
    order = commands.Basic.Properties.attributes()
    parts = sorted(properties, key=lambda item: order.index(item[0]))
    payload = struct.pack(">HHQH", 60, 0, body_size, flags) + b"".join(v for _, v in parts)
    return struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"


def patched(raw: bytes, old: bytes, new: bytes) -> bytes:
    """Replace bytes of equal length, so the framing stays right."""
    assert len(old) == len(new) and raw.count(old) == 1
    return raw.replace(old, new)


def sstr(value: bytes) -> bytes:
    return bytes([len(value)]) + value


def table(*items: bytes) -> bytes:
    content = b"".join(items)
    return struct.pack(">I", len(content)) + content


def field(key: bytes, kind: bytes, value: bytes) -> bytes:
    return sstr(key) + kind + value


def nested(levels: int, inner: bytes) -> bytes:
    """`levels` tables, each holding the next under "n"; the innermost holds `inner`."""
    content = inner
    for _ in range(levels - 1):
        content = field(b"n", b"F", table(content))
    return table(content)


def props_of(raw: bytes) -> commands.Basic.Properties:
    consumed, channel, decoded = frame.unmarshal(raw)
    assert consumed == len(raw) and channel == 1
    assert isinstance(decoded, header.ContentHeader)
    return decoded.properties


def headers_of(raw: bytes) -> Any:
    """The decoded header table, as Any: tests index into it freely."""
    return props_of(raw).headers


def same(a: object, b: object) -> bool:
    """Equal values of identical types, all the way down (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, decimal.Decimal) and isinstance(b, decimal.Decimal):
        return a.as_tuple() == b.as_tuple()
    return a == b


def same_properties(raw: bytes) -> None:
    """raw decodes to identical properties with pamqp's decoders and the guarded ones."""
    guarded = props_of(raw)
    with pamqp_decoders():
        original = props_of(raw)
    for name in commands.Basic.Properties.attributes():
        assert same(getattr(guarded, name), getattr(original, name)), name


USUAL = commands.Basic.Properties(
    content_type="application/msgpack",
    correlation_id="0f8fad5b-d9cb-469f-a165-70867728950e",
    reply_to="amq.rabbitmq.reply-to.g1h2AA5yZXBseUA1MjUwNDk3MQAAAAAAAAAA.abcdefghijklmnop",
    headers={"x-published-us": 1_715_000_000_123_456, "x-delivery-count": 3},
)


# -- install -------------------------------------------------------------------------------


def test_install_is_idempotent_and_uninstall_restores_pamqp() -> None:
    amqp_guard.install()
    amqp_guard.install()
    assert amqp_guard.installed()
    assert decode.METHODS["shortstr"] is amqp_guard.short_str
    assert decode.TABLE_MAPPING[b"F"] is amqp_guard.field_table
    with pamqp_decoders():
        assert not amqp_guard.installed()
        assert decode.METHODS == PAMQP_METHODS
        assert decode.TABLE_MAPPING == PAMQP_TABLE_MAPPING
        assert decode.METHODS["shortstr"] is decode.short_str
    assert amqp_guard.installed()


# -- valid input decodes as pamqp decodes it -------------------------------------------------


def test_usual_header_decodes_like_pamqp() -> None:
    same_properties(header_frame(USUAL))
    assert props_of(header_frame(USUAL)) == USUAL


def test_every_property_and_table_type_decodes_like_pamqp() -> None:
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    headers = table(
        field(b"t", b"t", b"\x01"),
        field(b"b", b"b", b"\x80"),
        field(b"B", b"B", b"\xff"),
        field(b"s", b"s", b"\x80\x00"),
        field(b"u", b"u", b"\xff\xff"),
        field(b"I", b"I", b"\x80\x00\x00\x00"),
        field(b"i", b"i", b"\xff\xff\xff\xff"),
        field(b"l", b"l", struct.pack(">q", -(2**63))),
        field(b"L", b"L", struct.pack(">q", 2**63 - 1)),
        field(b"f", b"f", struct.pack(">f", 1.5)),
        field(b"d", b"d", struct.pack(">d", -2.25)),
        field(b"nan", b"d", struct.pack(">d", math.nan)),
        field(b"D", b"D", b"\x02" + struct.pack(">i", -12345)),
        field(b"S", b"S", struct.pack(">I", 3) + b"abc"),
        field(b"S-bin", b"S", struct.pack(">I", 2) + b"\xff\xfe"),  # pamqp gives bytes
        field(b"x", b"x", struct.pack(">I", 2) + b"\x00\x01"),
        field(b"T", b"T", struct.pack(">Q", 1_715_000_000)),
        field(b"T-ms", b"T", struct.pack(">Q", 1_715_000_000_123)),
        field(b"V", b"V", b""),
        field(b"nul", b"\x00", b""),
        field(b"F", b"F", table(field(b"k", b"b", b"\x05"), field(b"e", b"F", table()))),
        field(b"A", b"A", table(b"b\x01", b"S" + struct.pack(">I", 1) + b"z", b"V", b"F\0\0\0\0")),
        field(b"A-empty", b"A", table()),
        field(b"\xc3\xa9", b"b", b"\x01"),  # a UTF-8 key that is not ASCII
    )
    raw = raw_header_frame(
        [
            ("content_type", sstr(b"text/plain")),
            ("content_encoding", sstr(b"")),
            ("headers", headers),
            ("delivery_mode", b"\x02"),
            ("priority", b"\x09"),
            ("correlation_id", sstr("ünïcode".encode())),
            ("reply_to", sstr(b"r")),
            ("expiration", sstr(b"60000")),
            ("message_id", sstr(b"m")),
            ("timestamp", struct.pack(">Q", int(when.timestamp()))),
            ("message_type", sstr(b"t")),
            ("user_id", sstr(b"guest")),
            ("app_id", sstr(b"a")),
            ("cluster_id", sstr(b"c")),
        ]
    )
    same_properties(raw)
    assert props_of(raw).timestamp == when
    assert unreadable_properties(props_of(raw)) == []


def test_method_frames_decode_like_pamqp() -> None:
    deliver = commands.Basic.Deliver("ctag", 7, True, "ex", "rk")
    start = commands.Connection.Start(
        server_properties={"product": "RabbitMQ", "capabilities": {"basic.nack": True}}
    )
    for method in (deliver, start):
        raw = frame.marshal(method, 1)
        guarded = frame.unmarshal(raw)[2]
        with pamqp_decoders():
            original = frame.unmarshal(raw)[2]
        assert isinstance(original, type(method)) and type(guarded) is type(original)
        for name, value in original:
            assert same(getattr(guarded, name), value), name


# Valid field tables of any shape, written the way a peer may write them.
_scalars = st.one_of(
    st.booleans().map(lambda v: b"t" + bytes([v])),
    st.binary(min_size=1, max_size=1).map(lambda v: b"b" + v),
    st.binary(min_size=1, max_size=1).map(lambda v: b"B" + v),
    st.binary(min_size=2, max_size=2).map(lambda v: b"s" + v),
    st.binary(min_size=2, max_size=2).map(lambda v: b"u" + v),
    st.binary(min_size=4, max_size=4).map(lambda v: b"I" + v),
    st.binary(min_size=4, max_size=4).map(lambda v: b"i" + v),
    st.binary(min_size=8, max_size=8).map(lambda v: b"l" + v),
    st.binary(min_size=8, max_size=8).map(lambda v: b"L" + v),
    st.binary(min_size=4, max_size=4).map(lambda v: b"f" + v),
    st.binary(min_size=8, max_size=8).map(lambda v: b"d" + v),
    st.binary(min_size=5, max_size=5).map(lambda v: b"D" + v),
    st.binary(max_size=20).map(lambda v: b"S" + struct.pack(">I", len(v)) + v),
    st.text(max_size=10).map(lambda v: b"S" + struct.pack(">I", len(v.encode())) + v.encode()),
    st.binary(max_size=20).map(lambda v: b"x" + struct.pack(">I", len(v)) + v),
    # in datetime's range as seconds, and as milliseconds (pamqp's reading past 2106)
    st.integers(0, 2**32 - 1).map(lambda v: b"T" + struct.pack(">Q", v)),
    st.integers(2**32, 253_402_300_799_000).map(lambda v: b"T" + struct.pack(">Q", v)),
    st.just(b"V"),
    st.just(b"\x00"),
)
_keys = st.text(max_size=12).map(lambda k: k.encode()[:255])


def _valid_values(depth: int) -> st.SearchStrategy[bytes]:
    if depth == 0:
        return _scalars
    inner = _valid_values(depth - 1)
    return st.one_of(
        _scalars,
        st.lists(st.tuples(_keys, inner), max_size=4).map(
            lambda items: b"F" + table(*(sstr(k) + v for k, v in items))
        ),
        st.lists(inner, max_size=4).map(lambda items: b"A" + table(*items)),
    )


valid_tables = st.lists(st.tuples(_keys, _valid_values(3)), max_size=6).map(
    lambda items: table(*(sstr(k) + v for k, v in items))
)


@given(headers=valid_tables, after=st.text(max_size=30).map(str.encode))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_valid_tables_decode_like_pamqp(headers: bytes, after: bytes) -> None:
    raw = raw_header_frame([("headers", headers), ("app_id", sstr(after))])
    same_properties(raw)


@given(seconds=st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32, 253_402_300_799_000)))
@settings(deadline=None)
def test_valid_timestamps_decode_like_pamqp(seconds: int) -> None:
    same_properties(raw_header_frame([("timestamp", struct.pack(">Q", seconds))]))


# -- what pamqp cannot decode -----------------------------------------------------------------


def test_invalid_utf8_content_type() -> None:
    props = commands.Basic.Properties(content_type="XX", correlation_id="c", headers={"k": 1})
    raw = patched(header_frame(props), b"\x02XX", b"\x02\xff\xfe")
    with pamqp_decoders(), pytest.raises(exceptions.UnmarshalingException):
        frame.unmarshal(raw)

    decoded = props_of(raw)
    assert isinstance(decoded.content_type, UnreadableText)
    assert decoded.content_type.raw == b"\xff\xfe"
    assert decoded.content_type == "\ufffd\ufffd"
    assert decoded.correlation_id == "c" and decoded.headers == {"k": 1}
    assert unreadable_properties(decoded) == ["content_type"]
    # pamqp can encode it again, e.g. when the properties are republished
    assert props_of(header_frame(decoded)).content_type == "\ufffd\ufffd"


def test_every_short_string_property_invalid() -> None:
    raw = raw_header_frame([(name, sstr(b"ok\xc3(" + name.encode())) for name in SHORT_STRINGS])
    decoded = props_of(raw)
    for name in SHORT_STRINGS:
        value = getattr(decoded, name)
        assert isinstance(value, UnreadableText) and value.raw == b"ok\xc3(" + name.encode()
    assert unreadable_properties(decoded) == SHORT_STRINGS


def test_aio_pika_style_message() -> None:
    # aio-pika stores most properties through str(); the marker must survive that
    text = UnreadableText(b"\xff")
    message = SimpleNamespace(
        content_type="application/json",
        headers={"k": {"deep": [1, UnreadableTable(b"?")]}},
        correlation_id=str(text),
        type=str(text),
        reply_to=None,
    )
    assert unreadable_properties(message) == ["headers", "correlation_id", "type"]
    assert isinstance(str(text), UnreadableText) and isinstance(f"{text}", UnreadableText)


def test_invalid_utf8_table_key() -> None:
    props = commands.Basic.Properties(headers={"kk": 1, "ok": "v"}, app_id="a")
    raw = patched(header_frame(props), b"\x02kk", b"\x02\xff\xfe")
    with pamqp_decoders(), pytest.raises(exceptions.UnmarshalingException):
        frame.unmarshal(raw)

    decoded = props_of(raw)
    assert decoded.headers == {"\ufffd\ufffd": 1, "ok": "v"}
    key = next(iter(decoded.headers))
    assert isinstance(key, UnreadableText) and key.raw == b"\xff\xfe"
    assert decoded.app_id == "a"
    assert unreadable_properties(decoded) == ["headers"]


def test_deep_nesting() -> None:
    deep = nested(500, field(b"a", b"b", b"\x01"))
    headers = table(field(b"x-delivery-count", b"l", struct.pack(">q", 4)), b"\x04deepF" + deep)
    raw = raw_header_frame([("headers", headers), ("reply_to", sstr(b"r"))])
    with pamqp_decoders(), pytest.raises(RecursionError):
        frame.unmarshal(raw)  # aiormq does not even catch this one

    decoded, headers = props_of(raw), headers_of(raw)
    assert headers["x-delivery-count"] == 4 and decoded.reply_to == "r"
    level, value = 2, headers["deep"]
    while not isinstance(value, UnreadableTable):
        assert isinstance(value, dict) and list(value) == ["n"]
        level, value = level + 1, value["n"]
    assert level == MAX_DEPTH + 1
    assert value[UNREADABLE_KEY] == value.raw and len(value.raw) > 400
    assert unreadable_properties(decoded) == ["headers"]


def test_nesting_within_the_bound_is_kept() -> None:
    raw = raw_header_frame([("headers", nested(MAX_DEPTH, field(b"a", b"b", b"\x01")))])
    same_properties(raw)
    assert unreadable_properties(props_of(raw)) == []


def test_unknown_type_in_the_top_table() -> None:
    props = commands.Basic.Properties(
        headers={"x-delivery-count": 1, "bad": "zz"}, correlation_id="c", reply_to="r"
    )
    raw = patched(header_frame(props), b"badS", b"bad?")
    with pamqp_decoders(), pytest.raises(exceptions.UnmarshalingException):
        frame.unmarshal(raw)

    decoded = props_of(raw)
    assert isinstance(decoded.headers, UnreadableTable)
    assert decoded.headers and list(decoded.headers) == [UNREADABLE_KEY]
    assert b"bad?" in decoded.headers.raw
    # skipped by its declared length: what follows still decodes
    assert (decoded.correlation_id, decoded.reply_to) == ("c", "r")
    assert unreadable_properties(decoded) == ["headers"]


def test_unknown_type_in_a_nested_table_and_array() -> None:
    props = commands.Basic.Properties(
        headers={"ok": 1, "inner": {"bad": "zz"}, "list": [1, "yy"]}, message_id="m"
    )
    raw = header_frame(props)
    raw = patched(raw, b"badS", b"bad?")
    raw = patched(raw, b"S\x00\x00\x00\x02yy", b"Q\x00\x00\x00\x02yy")
    decoded, headers = props_of(raw), headers_of(raw)
    assert headers["ok"] == 1 and decoded.message_id == "m"
    assert isinstance(headers["inner"], UnreadableTable)
    array = headers["list"]
    assert isinstance(array, UnreadableArray)
    assert array.raw.endswith(b"Q\x00\x00\x00\x02yy") and array == [array.raw]
    assert unreadable_properties(decoded) == ["headers"]


@pytest.mark.parametrize(
    "inner",
    [
        field(b"s", b"S", struct.pack(">I", 100) + b"ab"),  # string past the table's end
        field(b"t", b"F", struct.pack(">I", 100) + b"ab"),  # table past its parent's end
        field(b"i", b"l", b"\x00\x01"),  # integer cut short
        sstr(b"key-without-value"),
        b"\x50short",  # key longer than the table
    ],
)
def test_truncated_content_makes_the_enclosing_table_unreadable(inner: bytes) -> None:
    headers = table(field(b"ok", b"b", b"\x01"), field(b"t", b"F", table(inner)))
    raw = raw_header_frame([("headers", headers), ("app_id", sstr(b"after"))])
    decoded, headers = props_of(raw), headers_of(raw)
    assert decoded.app_id == "after" and headers["ok"] == 1
    assert isinstance(headers["t"], UnreadableTable)
    assert headers["t"].raw == inner
    assert unreadable_properties(decoded) == ["headers"]


def test_timestamps_out_of_range() -> None:
    raw = raw_header_frame(
        [
            ("headers", table(field(b"t", b"T", struct.pack(">Q", 2**63 - 1)))),
            ("timestamp", struct.pack(">Q", 2**63 - 1)),
            ("app_id", sstr(b"a")),
        ]
    )
    # year out of range here; OverflowError or OSError on other platforms
    with pamqp_decoders(), pytest.raises(exceptions.UnmarshalingException):
        frame.unmarshal(raw)

    decoded = props_of(raw)
    assert decoded.timestamp is None and decoded.headers == {"t": None}
    assert decoded.app_id == "a"
    for seconds in (2**64 - 1, 253_402_300_800_000):  # past 9999-12-31 as milliseconds
        assert (
            props_of(raw_header_frame([("timestamp", struct.pack(">Q", seconds))])).timestamp
            is None
        )


def test_method_frame_with_invalid_short_strings() -> None:
    raw = frame.marshal(commands.Basic.Deliver("CT", 9, True, "EX", "RK"), 3)
    raw = patched(patched(raw, b"\x02CT", b"\x02\xff\xfe"), b"\x02RK", b"\x02R\xc3")
    with pamqp_decoders(), pytest.raises(exceptions.UnmarshalingException):
        frame.unmarshal(raw)

    decoded = frame.unmarshal(raw)[2]
    assert isinstance(decoded, commands.Basic.Deliver)
    assert isinstance(decoded.consumer_tag, UnreadableText)
    assert isinstance(decoded.routing_key, UnreadableText) and decoded.routing_key.raw == b"R\xc3"
    assert (decoded.delivery_tag, decoded.redelivered, decoded.exchange) == (9, True, "EX")


def test_table_longer_than_the_frame_is_still_a_framing_error() -> None:
    raw = raw_header_frame([("headers", struct.pack(">I", 1000) + b"\x01a")])
    with pytest.raises(exceptions.UnmarshalingException):
        frame.unmarshal(raw)


# -- never anything but UnmarshalingException ---------------------------------------------------


def _mutated(content: bytes, data: st.DataObject) -> bytes:
    """content with a few bytes overwritten, inserted or cut."""
    out = bytearray(content)
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(out)))
        action = data.draw(st.sampled_from(["set", "insert", "cut"]))
        byte = data.draw(st.integers(0, 255))
        if action == "set" and at < len(out):
            out[at] = byte
        elif action == "insert":
            out.insert(at, byte)
        elif at < len(out):
            del out[at]
    return bytes(out)


def _property_bytes(name: str, data: st.DataObject) -> bytes:
    kind = commands.Basic.Properties.amqp_type(name)
    if kind == "shortstr":
        return sstr(data.draw(st.binary(max_size=255)))
    if kind == "octet":
        return data.draw(st.binary(min_size=1, max_size=1))
    if kind == "timestamp":
        return data.draw(st.binary(min_size=8, max_size=8))
    # a table: valid, damaged or random content under a matching length
    shape = data.draw(st.sampled_from(["valid", "damaged", "random"]))
    if shape == "random":
        return table(data.draw(st.binary(max_size=60)))
    content = data.draw(valid_tables)[4:]
    return table(_mutated(content, data) if shape == "damaged" else content)


@given(data=st.data())
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300)
def test_any_well_framed_property_values_decode(data: st.DataObject) -> None:
    names = data.draw(st.sets(st.sampled_from(commands.Basic.Properties.attributes())))
    raw = raw_header_frame([(name, _property_bytes(name, data)) for name in names])
    decoded = props_of(raw)  # no exception at all
    assert set(unreadable_properties(decoded)) <= names
    encode.field_table(readable_headers(decoded.headers))


@given(flags=st.integers(0, 0xFFFF), payload=st.binary(max_size=120))
@settings(deadline=None, max_examples=300)
def test_arbitrary_property_bytes_raise_only_unmarshaling_exception(
    flags: int, payload: bytes
) -> None:
    body = struct.pack(">HHQH", 60, 0, 1, flags) + payload
    raw = struct.pack(">BHI", 2, 1, len(body)) + body + b"\xce"
    try:
        frame.unmarshal(raw)
    except exceptions.UnmarshalingException as err:  # framing: lengths past the frame's end
        assert not isinstance(err.__cause__, UnicodeDecodeError | ArithmeticError), err


@given(
    tag=st.binary(max_size=255),
    exchange=st.binary(max_size=255),
    routing_key=st.binary(max_size=255),
)
@settings(deadline=None)
def test_any_deliver_method_decodes(tag: bytes, exchange: bytes, routing_key: bytes) -> None:
    payload = (
        struct.pack(">I", commands.Basic.Deliver.index)
        + sstr(tag)
        + struct.pack(">Q", 1)
        + b"\x01"
        + sstr(exchange)
        + sstr(routing_key)
    )
    raw = struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce"
    decoded = frame.unmarshal(raw)[2]
    assert isinstance(decoded, commands.Basic.Deliver)
    for value, sent in ((decoded.consumer_tag, tag), (decoded.routing_key, routing_key)):
        assert value is not None
        assert value.raw == sent if isinstance(value, UnreadableText) else value.encode() == sent


# -- markers and republishing -----------------------------------------------------------------


def test_markers_copy_and_pickle() -> None:
    text = UnreadableText(b"a\xffb")
    table_ = UnreadableTable(b"\x01k?")
    array = UnreadableArray(b"?")
    for marker in (text, table_, array):
        for clone in (copy.copy(marker), copy.deepcopy(marker), pickle.loads(pickle.dumps(marker))):
            assert type(clone) is type(marker) and clone == marker
            assert clone.raw == marker.raw
    assert text == "a\ufffdb" and bool(table_) and bool(array)


def test_readable_headers_can_be_published_again() -> None:
    headers = table(
        field(b"\xff\xfe", b"b", b"\x01"),
        field(b"ok", b"S", struct.pack(">I", 2) + b"hi"),
        field(b"bin", b"S", struct.pack(">I", 1) + b"\xff"),
        field(b"big", b"d", struct.pack(">d", 1e300)),  # pamqp would encode it as a 4-byte float
        field(b"t", b"T", struct.pack(">Q", 2**63 - 1)),
        field(b"inner", b"F", table(field(b"bad", b"?", b""))),
        field(b"list", b"A", table(b"b\x01", b"F" + table(field(b"x", b"Q", b"")))),
        b"\x04deepF" + nested(200, field(b"a", b"b", b"\x01")),
    )
    safe = readable_headers(headers_of(raw_header_frame([("headers", headers)])))
    again = headers_of(header_frame(commands.Basic.Properties(headers=safe)))
    assert unreadable_properties(SimpleNamespace(headers=again)) == []
    assert type(next(iter(safe))) is str and safe["\ufffd\ufffd"] == 1
    assert again["ok"] == "hi" and again["bin"] == bytearray(b"\xff") and again["t"] is None
    assert again["big"] == "1e+300"
    assert again["inner"] == bytearray(sstr(b"bad") + b"?")
    assert again["list"][0] == 1 and isinstance(again["list"][1], bytearray)
    assert readable_headers(None) == {}
    assert readable_headers(UnreadableTable(b"?")) == {UNREADABLE_KEY: bytearray(b"?")}

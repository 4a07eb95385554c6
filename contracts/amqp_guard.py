"""Keep undecodable AMQP field values from tearing down the connection.

RabbitMQ relays short strings (properties, table keys, routing keys) that are
not UTF-8, header tables nested hundreds of levels deep and timestamps past
the year 9999. pamqp raises while it unmarshals such a frame (UnicodeDecodeError,
ValueError, RecursionError), aiormq's frame reader dies of it and the
connection drops, taking every job in flight on it; the broker then hands the
same message to the next connection. RabbitMQ 3.10 refuses tables it cannot
parse itself, but not every broker or version does, so those are covered too.

`install()` swaps the decoders pamqp dispatches through (`decode.METHODS` for
method arguments and properties, `decode.TABLE_MAPPING` for table values) for
ones that turn what Python cannot read into markers instead of exceptions:

- a short string (or table key) that is not UTF-8 -> `UnreadableText`;
- a table or array that cannot be parsed -> `UnreadableTable` / `UnreadableArray`,
  skipped by its declared length so the rest of the frame still decodes;
- a timestamp outside datetime's range -> None.

Only malformed framing still raises (a property table declared longer than
the frame, properties that run out of bytes), and as a ValueError, which pamqp
reports as its own UnmarshalingException. Valid input decodes to the same
types and values as with pamqp's decoders.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable, Mapping
from typing import Any, Final

from pamqp import common, decode, encode

UNREADABLE_KEY: Final = "x-unreadable"

# Real header tables nest two or three levels (x-death is an array of tables).
# 32 leaves ample room for that while keeping the decoder (two Python frames
# per level), a later walk over the result and pamqp's recursive encoder far
# from the interpreter's recursion limit, whatever the caller's stack depth.
MAX_DEPTH: Final = 32

Decoder = Callable[..., tuple[int, common.FieldValue]]


class UnreadableText(str):
    """A short string that was not UTF-8: its text has U+FFFD for the bad bytes.

    Being a str, pamqp can still encode it if the properties are republished
    (note each U+FFFD takes three bytes there, so a long one may overflow 255).
    """

    raw: bytes

    def __new__(cls, raw: bytes) -> UnreadableText:
        text = super().__new__(cls, raw.decode("utf-8", errors="replace"))
        text.raw = raw
        return text

    def __str__(self) -> str:
        # aio-pika stores most properties as str(value); returning self keeps
        # the marker (and .raw) through that conversion.
        return self

    def __getnewargs__(self) -> tuple[bytes]:  # type: ignore[override]
        # copy and pickle rebuild it through __new__, which takes the bytes
        return (self.raw,)

    def __repr__(self) -> str:
        return f"UnreadableText({self.raw!r})"


class UnreadableTable(dict[str, common.FieldValue]):
    """A field table that could not be parsed; holds its raw content bytes.

    Non-empty on purpose: aio-pika reads headers as `headers or {}` and would
    otherwise turn the marker into an ordinary empty table.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        super().__init__({UNREADABLE_KEY: raw})
        self.raw = raw

    def __repr__(self) -> str:
        return f"UnreadableTable({self.raw!r})"


class UnreadableArray(list[common.FieldValue]):
    """A field array that could not be parsed; its one item is the raw content bytes."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        super().__init__([raw])
        self.raw = raw

    def __repr__(self) -> str:
        return f"UnreadableArray({self.raw!r})"


_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")

# What makes a table's content unparseable. A child table or array declared
# longer than its parent raises ValueError too, so the parent is the one skipped.
_UNPARSEABLE: Final = (ValueError, struct.error, IndexError, TypeError, ArithmeticError)


def short_str(value: bytes) -> tuple[int, str]:
    """Decode an AMQP short string; bytes that are not UTF-8 give UnreadableText."""
    try:
        end = value[0] + 1
    except (IndexError, TypeError) as err:
        raise ValueError("Could not unpack short string value") from err
    raw = value[1:end]
    try:
        return end, raw.decode("utf-8")
    except UnicodeDecodeError:
        return end, UnreadableText(raw)


def timestamp(value: bytes) -> tuple[int, datetime.datetime | None]:
    """Decode an AMQP timestamp; None when datetime cannot represent it."""
    try:
        (seconds,) = _U64.unpack_from(value)
    except (struct.error, TypeError) as err:
        raise ValueError("Could not unpack timestamp value") from err
    return 8, _datetime(seconds)


def _datetime(seconds: float) -> datetime.datetime | None:
    # Same reading as pamqp: values past 2106 are taken to be milliseconds.
    if seconds > 0xFFFFFFFF:
        seconds /= 1000.0
    try:
        return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return None


def field_table(value: bytes) -> tuple[int, common.FieldTable]:
    """Decode a field table (a property, a method argument or a nested 'F' value)."""
    return _table(value, 0, len(value), 1)


def field_array(value: bytes) -> tuple[int, common.FieldArray]:
    """Decode a field array (a nested 'A' value)."""
    return _array(value, 0, len(value), 1)


def _extent(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """Start and end of the length-prefixed content at pos, which must end by limit."""
    start = pos + 4
    if start > limit:
        raise ValueError("Field table or array length is truncated")
    end = start + _U32.unpack_from(data, pos)[0]
    if end > limit:
        raise ValueError("Field table or array length exceeds available data")
    return start, end


def _table(data: bytes, pos: int, limit: int, depth: int) -> tuple[int, common.FieldTable]:
    start, end = _extent(data, pos, limit)
    if depth > MAX_DEPTH:
        return end, UnreadableTable(data[start:end])
    table: common.FieldTable = {}
    pos = start
    try:
        while pos < end:
            key_end = pos + 1 + data[pos]
            if key_end >= end:  # the key and the value's type byte must both fit
                raise ValueError("Field table key exceeds the table")
            raw_key = data[pos + 1 : key_end]
            try:
                key: str = raw_key.decode("utf-8")
            except UnicodeDecodeError:
                key = UnreadableText(raw_key)
            pos, table[key] = _value(data, key_end, end, depth)
    except _UNPARSEABLE:
        return end, UnreadableTable(data[start:end])
    return end, table


def _array(data: bytes, pos: int, limit: int, depth: int) -> tuple[int, common.FieldArray]:
    start, end = _extent(data, pos, limit)
    if depth > MAX_DEPTH:
        return end, UnreadableArray(data[start:end])
    array: common.FieldArray = []
    pos = start
    try:
        while pos < end:
            pos, item = _value(data, pos, end, depth)
            array.append(item)
    except _UNPARSEABLE:
        return end, UnreadableArray(data[start:end])
    return end, array


def _value(data: bytes, pos: int, end: int, depth: int) -> tuple[int, common.FieldValue]:
    """Decode the typed value at pos, which must end by end; returns where it ends."""
    kind = data[pos : pos + 1]
    pos += 1
    fixed = _FIXED.get(kind)
    if fixed is not None:
        size, unpack = fixed
        if pos + size > end:
            raise ValueError("Field value exceeds the table")
        return pos + size, unpack(data, pos)[0]
    if kind == b"F":
        return _table(data, pos, end, depth + 1)
    if kind == b"A":
        return _array(data, pos, end, depth + 1)
    if kind == b"T":
        if pos + 8 > end:
            raise ValueError("Timestamp exceeds the table")
        return pos + 8, _datetime(_U64.unpack_from(data, pos)[0])
    # Any other type pamqp knows: its own decoder, on this value's bytes only.
    decoder = decode.TABLE_MAPPING.get(kind)
    if decoder is None:
        raise ValueError(f"Unknown field type: {kind!r}")
    consumed, value = decoder(data[pos:end])
    if consumed < 0 or pos + consumed > end:
        raise ValueError("Field value exceeds the table")
    return pos + consumed, value


# Integers and floats are most of what headers carry; unpacking them in place
# skips the copy of the table's tail a call into pamqp needs. Each entry is
# used only while pamqp maps the type to the decoder it was written against
# (checked by install()), so its result is the one pamqp would give.
_IN_PLACE: Final[dict[bytes, tuple[str, str]]] = {
    b"b": ("short_short_int", ">b"),
    b"B": ("short_short_uint", ">B"),
    b"s": ("short_int", ">h"),
    b"u": ("short_uint", ">H"),
    b"I": ("long_int", ">l"),
    b"i": ("long_uint", ">L"),
    b"l": ("long_long_int", ">q"),
    b"L": ("long_long_int", ">q"),
    b"f": ("floating_point", ">f"),
    b"d": ("double", ">d"),
}
_FIXED: dict[bytes, tuple[int, Callable[[bytes, int], tuple[Any, ...]]]] = {}

# The entries install() puts in place, by table and key.
_METHOD_DECODERS: Final[dict[str, Decoder]] = {
    "shortstr": short_str,
    "table": field_table,
    "array": field_array,
    "timestamp": timestamp,
}
_TABLE_DECODERS: Final[dict[bytes, Decoder]] = {
    b"F": field_table,
    b"A": field_array,
    b"T": timestamp,
}
# pamqp's entries that install() replaced, for uninstall().
_replaced_methods: dict[str, Decoder] = {}
_replaced_table: dict[bytes, Decoder] = {}


def install() -> None:
    """Route pamqp's decoding of these types through this module. Idempotent."""
    for name, decoder in _METHOD_DECODERS.items():
        if decode.METHODS.get(name) is not decoder:
            _replaced_methods[name] = decode.METHODS[name]
            decode.METHODS[name] = decoder
    for kind, decoder in _TABLE_DECODERS.items():
        if decode.TABLE_MAPPING.get(kind) is not decoder:
            _replaced_table[kind] = decode.TABLE_MAPPING[kind]
            decode.TABLE_MAPPING[kind] = decoder
    fixed: dict[bytes, tuple[int, Callable[[bytes, int], tuple[Any, ...]]]] = {}
    for kind, (pamqp_name, layout) in _IN_PLACE.items():
        if decode.TABLE_MAPPING.get(kind) is getattr(decode, pamqp_name, None):
            unpacker = struct.Struct(layout)
            fixed[kind] = (unpacker.size, unpacker.unpack_from)
    # One assignment, so a decode in another thread sees the old or the new map.
    global _FIXED
    _FIXED = fixed


def uninstall() -> None:
    """Put back the decoders install() replaced (for tests that need pamqp's own)."""
    decode.METHODS.update(_replaced_methods)
    decode.TABLE_MAPPING.update(_replaced_table)
    _replaced_methods.clear()
    _replaced_table.clear()


def installed() -> bool:
    return all(decode.METHODS.get(k) is v for k, v in _METHOD_DECODERS.items()) and all(
        decode.TABLE_MAPPING.get(k) is v for k, v in _TABLE_DECODERS.items()
    )


# -- reading the results ---------------------------------------------------------------

# (attribute, alternative attribute) of every short-string property and the table;
# pamqp calls the type property message_type, aio-pika calls it type.
_PROPERTIES: Final = (
    ("content_type", None),
    ("content_encoding", None),
    ("headers", None),
    ("correlation_id", None),
    ("reply_to", None),
    ("expiration", None),
    ("message_id", None),
    ("message_type", "type"),
    ("user_id", None),
    ("app_id", None),
    ("cluster_id", None),
)


def unreadable_properties(properties: object) -> list[str]:
    """Names of the properties that arrived unreadable, as attributes of `properties`.

    Takes pamqp's Basic.Properties or an aio-pika message. "headers" is listed
    when any key or value anywhere in the table is unreadable.
    """
    found: list[str] = []
    for name, alias in _PROPERTIES:
        if not hasattr(properties, name) and alias is not None:
            name = alias
        value = getattr(properties, name, None)
        if isinstance(value, UnreadableText) or (
            isinstance(value, Mapping) and _holds_unreadable(value)
        ):
            found.append(name)
    return found


def _holds_unreadable(value: object) -> bool:
    # The decoder bounds the depth, so plain recursion is safe here.
    if isinstance(value, UnreadableTable | UnreadableArray | UnreadableText):
        return True
    if isinstance(value, Mapping):
        return any(_holds_unreadable(k) or _holds_unreadable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_unreadable(item) for item in value)
    return False


def readable_headers(headers: Mapping[str, object] | None) -> common.FieldTable:
    """A copy of a header table that pamqp's encoder accepts, for republishing.

    An unparseable table or array becomes its raw bytes as a bytearray (type 'x'),
    an unreadable key its U+FFFD text, a long string pamqp left as bytes (it was
    not UTF-8) a bytearray, and any other value the encoder refuses its repr.
    """
    if headers is None:
        return {}
    if isinstance(headers, UnreadableTable):
        return {UNREADABLE_KEY: bytearray(headers.raw)}
    return _readable_table(headers, MAX_DEPTH)


def _readable_table(table: Mapping[str, object], depth: int) -> common.FieldTable:
    # str.__str__ gives a plain str, even for UnreadableText (whose __str__ is itself)
    return {str.__str__(key): _readable_value(value, depth) for key, value in table.items()}


def _readable_value(value: object, depth: int) -> common.FieldValue:
    if isinstance(value, UnreadableTable | UnreadableArray):
        return bytearray(value.raw)
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, Mapping | list):
        if depth <= 0:  # decoded headers never get here; hand-built ones might
            return f"<{type(value).__name__} nested deeper than {MAX_DEPTH}>"
        if isinstance(value, list):
            return [_readable_value(item, depth - 1) for item in value]
        return _readable_table(value, depth - 1)
    try:
        encode.encode_table_value(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ArithmeticError, struct.error):
        return repr(value)
    return value  # type: ignore[return-value]

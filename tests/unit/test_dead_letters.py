"""workers.dead_letters: what a refused job's copy in llm.dead carries."""

from __future__ import annotations

import hashlib
from typing import Any

from pamqp import header
from pamqp.commands import Basic

from contracts import topology as t
from contracts.amqp_guard import UNREADABLE_KEY, UnreadableTable, UnreadableText
from workers.dead_letters import dead_letter_copy

FRAME_MAX = 131_072  # RabbitMQ's default: a content header must fit in one frame
JOB_LIMIT = 1024 * 1024


def copy_of(
    body: bytes, props: Basic.Properties, **overrides: Any
) -> tuple[bytes, Basic.Properties]:
    kwargs: dict[str, Any] = {
        "code": "bad_request",
        "reason": "payload too big",
        "source_queue": t.QUEUE_CHAT,
        "worker": "worker-7",
        "worker_user": t.DEFAULT_WORKER_USER,
        "crashes": None,
        "max_body": JOB_LIMIT,
        **overrides,
    }
    return dead_letter_copy(body, props, **kwargs)


def headers_of(props: Basic.Properties) -> dict[str, Any]:
    assert isinstance(props.headers, dict)
    return props.headers


def republished(props: Basic.Properties, body_size: int) -> Basic.Properties:
    """The copy's properties as the broker would read them back: they must encode,
    fit in one frame, and decode to the same values."""
    raw = header.ContentHeader(0, body_size, props).marshal()
    assert len(raw) + 8 <= FRAME_MAX  # plus the frame's own header and end byte
    back = header.ContentHeader()
    back.unmarshal(raw)
    return back.properties


def test_a_body_over_the_job_limit_travels_as_a_sample_with_its_size_and_hash() -> None:
    body = bytes(range(256)) * (5 * JOB_LIMIT // 256)  # 5 MiB, a 4 MiB margin over the limit
    props = Basic.Properties(correlation_id="rid-1", reply_to="llm.reply.alice.x", user_id="alice")

    out, copy = copy_of(body, props)

    assert out == body[: t.DEAD_SAMPLE_BYTES]
    headers = headers_of(republished(copy, len(out)))
    assert headers[t.HDR_BODY_BYTES] == len(body)
    assert headers[t.HDR_BODY_SHA256] == hashlib.sha256(body).hexdigest()
    assert headers[t.HDR_BODY_SAMPLED] is True
    assert headers[t.HDR_DEAD_CODE] == "bad_request"
    assert headers[t.HDR_DEAD_USER] == "alice"
    assert copy.correlation_id == "rid-1" and copy.reply_to == "llm.reply.alice.x"


def test_the_sample_size_follows_its_setting_and_one_byte_over_the_limit_is_enough() -> None:
    body = b"x" * 101
    out, copy = copy_of(body, Basic.Properties(), max_body=100, sample_bytes=10)
    assert out == b"x" * 10
    assert headers_of(copy)[t.HDR_BODY_BYTES] == 101


def test_a_body_within_the_job_limit_is_copied_whole_for_replay() -> None:
    body = b"\x85\xa1v\x01" + b"j" * (JOB_LIMIT - 4)  # exactly at the limit
    out, copy = copy_of(body, Basic.Properties(correlation_id="rid-2"))
    assert out is body
    headers = headers_of(copy)
    for name in (t.HDR_BODY_BYTES, t.HDR_BODY_SHA256, t.HDR_BODY_SAMPLED):
        assert name not in headers


def test_reason_source_worker_crashes_and_the_copy_is_persistent_from_the_worker() -> None:
    _, copy = copy_of(b"{}", Basic.Properties(user_id="bob"), reason="r" * 5000, crashes=3)
    headers = headers_of(republished(copy, 2))
    assert headers[t.HDR_DEAD_REASON] == "r" * 1000
    assert headers[t.HDR_DEAD_QUEUE] == t.QUEUE_CHAT
    assert headers["x-fleet-worker"] == "worker-7"
    assert headers[t.HDR_DEAD_CRASHES] == 3
    assert headers[t.HDR_DEAD_USER] == "bob"
    # The broker checks user_id against the login that publishes the copy: the worker's.
    assert copy.user_id == t.DEFAULT_WORKER_USER
    assert copy.delivery_mode == 2


def test_no_user_header_without_a_user_id_and_a_forged_fleet_header_is_dropped() -> None:
    props = Basic.Properties(
        headers={"x-fleet-user": "mallory", "x-fleet-crashes": 99, "x-trace": "t-1"}
    )
    _, copy = copy_of(b"{}", props)
    headers = headers_of(copy)
    assert t.HDR_DEAD_USER not in headers
    assert t.HDR_DEAD_CRASHES not in headers
    assert headers["x-trace"] == "t-1"  # the producer's other headers travel on


def test_unreadable_short_strings_travel_as_their_raw_bytes() -> None:
    props = Basic.Properties(
        correlation_id=UnreadableText(b"job-\xc3("),
        content_type=UnreadableText(b"\xff\xfe"),
        message_id="m-1",
    )
    _, copy = copy_of(b"{}", props)
    headers = headers_of(republished(copy, 2))
    assert headers["x-fleet-raw-correlation_id"] == b"job-\xc3("
    assert headers["x-fleet-raw-content_type"] == b"\xff\xfe"
    # The unreadable ones are left off the copy's own properties, the readable kept.
    assert copy.correlation_id is None and copy.content_type is None
    assert copy.message_id == "m-1"


def test_an_oversize_header_table_is_replaced_by_its_size() -> None:
    props = Basic.Properties(headers={f"h{i}": "v" * 200 for i in range(400)})  # ~80 KB
    _, copy = copy_of(b"{}", props)
    headers = headers_of(republished(copy, 2))
    omitted = headers["x-fleet-headers-omitted"]
    assert isinstance(omitted, int) and omitted > t.DEAD_MAX_HEADER_BYTES
    assert not any(name.startswith("h") for name in headers)
    assert headers[t.HDR_DEAD_CODE] == "bad_request"  # the fleet's own headers stay


def test_an_unreadable_header_table_is_carried_once_and_within_the_cap() -> None:
    small = UnreadableTable(b"\x03k\xff\xfes")
    _, copy = copy_of(b"{}", Basic.Properties(headers=small))
    headers = headers_of(copy)
    assert headers[UNREADABLE_KEY] == b"\x03k\xff\xfes"
    assert "x-fleet-raw-headers" not in headers

    # As big as an incoming frame allows: a second copy of it would overflow the copy's.
    big = UnreadableTable(b"\xee" * (FRAME_MAX - 1024))
    _, copy = copy_of(b"{}", Basic.Properties(headers=big))
    headers = headers_of(republished(copy, 2))
    assert headers["x-fleet-headers-omitted"] > t.DEAD_MAX_HEADER_BYTES
    assert UNREADABLE_KEY not in headers and "x-fleet-raw-headers" not in headers


def test_a_header_value_pamqp_cannot_encode_does_not_stop_the_copy() -> None:
    props = Basic.Properties(headers={"n": 2**70, "ok": 1})
    _, copy = copy_of(b"{}", props)
    headers = headers_of(republished(copy, 2))
    assert headers["ok"] == 1 and isinstance(headers["n"], str)

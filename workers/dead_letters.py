"""The copy of a refused job that a worker publishes to llm.dead for operators.

One pure function, so what an operator finds in llm.dead is decided in one
place: the producer's properties and headers as far as they can be carried,
the reason in `x-fleet-*` headers, and the body whole when it could be replayed,
or a sample of it when it was over the job size limit (the broker's own limit
lets through bodies several times larger; llm.dead keeps bytes, not jobs).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from pamqp import encode as pamqp_encode
from pamqp.commands import Basic

from contracts import amqp_guard
from contracts import topology as t

FLEET_HEADER_PREFIX: Final = "x-fleet-"
HDR_WORKER: Final = "x-fleet-worker"
HDR_HEADERS_OMITTED: Final = "x-fleet-headers-omitted"
HDR_RAW_PREFIX: Final = "x-fleet-raw-"  # + the property's name
MAX_REASON_CHARS: Final = 1000


def dead_letter_copy(
    body: bytes,
    props: Basic.Properties,
    *,
    code: str,
    reason: str,
    source_queue: str,
    worker: str,
    worker_user: str,
    crashes: int | None,
    max_body: int,
    sample_bytes: int = t.DEAD_SAMPLE_BYTES,
    max_header_bytes: int = t.DEAD_MAX_HEADER_BYTES,
) -> tuple[bytes, Basic.Properties]:
    """The body and properties to publish to llm.dead for a job refused with `code`.

    `props` are the job's properties as delivered (markers from
    contracts/amqp_guard.py included); `worker_user` is the worker's own broker
    login, which the broker checks as the copy's user_id. A body over `max_body`
    (the worker's job limit) is cut to its first `sample_bytes`, its original
    size and SHA-256 in headers.
    """
    headers = _producer_headers(props, max_header_bytes)
    for name in amqp_guard.unreadable_properties(props):
        value = getattr(props, name, None)
        # Short strings only (255 bytes at most each): the raw bytes of an unreadable
        # header table are already in the copied table, under its size cap.
        if isinstance(value, amqp_guard.UnreadableText):
            headers[HDR_RAW_PREFIX + name] = bytearray(value.raw)  # pamqp encodes bytearray only
    headers[t.HDR_DEAD_CODE] = code
    headers[t.HDR_DEAD_REASON] = reason[:MAX_REASON_CHARS]
    headers[t.HDR_DEAD_QUEUE] = source_queue
    headers[HDR_WORKER] = worker
    user = _text(props.user_id)
    if user is not None:
        headers[t.HDR_DEAD_USER] = user
    if crashes is not None:
        headers[t.HDR_DEAD_CRASHES] = crashes
    if len(body) > max_body:
        headers[t.HDR_BODY_BYTES] = len(body)
        headers[t.HDR_BODY_SHA256] = hashlib.sha256(body).hexdigest()
        headers[t.HDR_BODY_SAMPLED] = True
        body = body[:sample_bytes]
    copy = Basic.Properties(
        headers=headers,
        reply_to=_text(props.reply_to),
        correlation_id=_text(props.correlation_id),
        message_id=_text(props.message_id),
        content_type=_text(props.content_type),
        delivery_mode=2,
        user_id=worker_user,
    )
    return body, copy


def _producer_headers(props: Basic.Properties, max_bytes: int) -> dict[str, Any]:
    """The job's headers as they can be republished, without the fleet's own names.

    `x-fleet-*` on a copy is the worker's word alone: a producer's header of that
    name (a forged `x-fleet-user`, say) is dropped, so an operator never takes it
    for the fleet's.
    """
    headers: dict[str, Any] = {
        key: value
        for key, value in amqp_guard.readable_headers(props.headers).items()
        if not key.startswith(FLEET_HEADER_PREFIX)
    }
    size = _table_size(headers)
    if size > max_bytes:
        # The copy's content header must fit the broker's frame_max, or the broker
        # closes the worker's connection and the job comes back to do it again.
        return {HDR_HEADERS_OMITTED: size}
    return headers


def _table_size(headers: dict[str, Any]) -> int:
    """Encoded size of a header table; a table pamqp cannot encode counts as too big."""
    try:
        return len(pamqp_encode.field_table(headers))
    except (TypeError, ValueError):
        return 1 << 30


def _text(value: object) -> str | None:
    """A short-string property, or None when absent or unreadable (its raw bytes
    travel in an `x-fleet-raw-*` header instead)."""
    if isinstance(value, str) and value and not isinstance(value, amqp_guard.UnreadableText):
        return value
    return None

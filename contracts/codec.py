"""msgpack encoding and validated decoding of jobs and frames."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from contracts.errors import ContractError
from contracts.frames import Frame
from contracts.jobs import Job

DEFAULT_MAX_JOB_BYTES = 8 * 1024 * 1024

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()
_job_decoder: msgspec.msgpack.Decoder[Job] = msgspec.msgpack.Decoder(Job)
_frame_decoder: msgspec.msgpack.Decoder[Frame] = msgspec.msgpack.Decoder(Frame)
_frames_decoder: msgspec.msgpack.Decoder[list[Frame]] = msgspec.msgpack.Decoder(list[Frame])

_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")


def _field_of(exc: msgspec.ValidationError) -> tuple[str, str]:
    """Split msgspec's message into (dotted field path, reason)."""
    text = str(exc)
    path = ""
    m = _PATH.search(text)
    if m:
        path = m.group("path")
        text = text[: m.start()]
    missing = _MISSING.search(text)
    if missing:
        path = f"{path}.{missing.group('name')}" if path else missing.group("name")
    return path or "$", text


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def _decode(decoder: msgspec.msgpack.Decoder[T], data: bytes, what: str) -> T:
    """Decode with validation; every failure becomes a `ContractError` naming the field."""
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        field, reason = _field_of(exc)
        raise ContractError(field, reason) from None
    except (msgspec.DecodeError, ValueError, TypeError, RecursionError) as exc:
        raise ContractError("$", f"undecodable {what}: {type(exc).__name__}") from None


def decode_job(data: bytes, *, max_bytes: int = DEFAULT_MAX_JOB_BYTES) -> Job:
    """Decode and validate a job, raising `ContractError` for anything wrong with it."""
    if len(data) > max_bytes:
        raise ContractError("$", f"payload of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    return _decode(_job_decoder, data, "message")


def decode_frame(data: bytes) -> Frame:
    return _decode(_frame_decoder, data, "frame")


def decode_frames(data: bytes) -> list[Frame]:
    """Decode one reply message: a msgpack array of frames (one or more requests').

    Workers batch the frames of every stream bound for one reply queue into one
    message; frames of one request keep their order, and `seq` says it anyway.
    """
    return _decode(_frames_decoder, data, "frames")


def peek_job(data: bytes) -> tuple[str | None, int]:
    """Best-effort (request id, submission) of a message that failed validation."""
    try:
        raw = msgspec.msgpack.decode(data)
    except Exception:
        return None, 0
    if not isinstance(raw, dict):
        return None, 0
    rid = raw.get("request_id")
    submission = raw.get("submission")
    return (
        rid if isinstance(rid, str) and rid else None,
        submission if type(submission) is int and submission >= 0 else 0,
    )

"""The Bedrock mock's wire: JSON bodies, AWS error responses, event-stream frames.

Errors go out as AWS sends them: status, `x-amzn-ErrorType: <Type>:http://…`,
`x-amzn-RequestId`, body `{"message": …}`. Faults become AWS's own errors:
`rate_limited` a 429 `ThrottlingException` (with the fault's `retry-after`
headers when it names them, as a gateway in front would; Bedrock itself never
says how long to wait), `quota` a `ServiceQuotaExceededException`, `overloaded`
a 503 `ServiceUnavailableException`, `context` a `ValidationException` "Input is
too long for requested model.", a 401 the refused key's
`UnrecognizedClientException`, 5xx `InternalServerException` /
`ServiceUnavailableException` with the fault's status.

Event-stream frames (botocore has a decoder, no encoder): prelude (total and
header lengths, CRC32), string headers (type 7), payload, message CRC32. Event
payloads carry AWS's `p` padding field. In-stream errors are exception frames
where ConverseStream defines one (`throttlingException`, `validationException`,
`internalServerException`, `serviceUnavailableException`,
`modelStreamErrorException` with the model's `originalStatusCode`) and generic
`:message-type error` frames otherwise.
"""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import ErrorFault, MockError, retry_headers

__all__ = [
    "REQUEST_ID",
    "dumps",
    "error_frame",
    "event",
    "fault_error",
    "frame",
    "json_response",
    "render_error",
    "stream_fault_frame",
    "validation",
]

REQUEST_ID: Final = web.RequestKey("bedrock_request_id", str)
_TYPE_NAMESPACE: Final = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
_PADDING: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_STRING: Final = 7


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_response(
    payload: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=dumps(payload).encode(), content_type="application/json", headers=headers
    )


def new_request_id() -> str:
    return str(uuid.uuid4())


def validation(message: str) -> MockError:
    return MockError(400, message, "ValidationException", kind="bad_request")


def render_error(error: MockError, request: web.Request) -> web.Response:
    headers = {
        **error.headers,
        "x-amzn-ErrorType": error.type + _TYPE_NAMESPACE,
        "x-amzn-RequestId": request.get(REQUEST_ID) or new_request_id(),
    }
    return web.Response(
        status=error.status,
        body=dumps({"message": error.message}).encode(),
        content_type="application/json",
        headers=headers,
    )


def fault_error(fault: ErrorFault) -> MockError:
    """An `ErrorFault` as Bedrock answers it."""
    kind = fault.kind
    if kind == "rate_limited":
        return MockError(
            429,
            "Too many requests, please wait before trying again.",
            "ThrottlingException",
            headers=retry_headers(fault),
            kind=kind,
        )
    if kind == "quota":
        message = (
            "Your request exceeds the service quotas for your account. You can view your "
            "quotas at https://docs.aws.amazon.com/servicequotas/latest/userguide/gs-request-quota.html"
        )
        return MockError(400, message, "ServiceQuotaExceededException", kind=kind)
    if kind == "overloaded":
        return MockError(
            503,
            "Bedrock is unable to process your request.",
            "ServiceUnavailableException",
            kind=kind,
        )
    if kind == "context":
        return MockError(
            400, "Input is too long for requested model.", "ValidationException", kind=kind
        )
    if kind == "unauthorized":
        message = "The security token included in the request is invalid."
        return MockError(403, message, "UnrecognizedClientException", kind=kind)
    if kind == "forbidden":
        message = "You don't have access to the model with the specified model ID."
        return MockError(403, message, "AccessDeniedException", kind=kind)
    if kind == "not_found":
        message = "Could not resolve the foundation model from the provided model identifier."
        return MockError(404, message, "ResourceNotFoundException", kind=kind)
    if kind == "bad_request":
        return validation("Malformed input request, please reformat your input and try again.")
    if fault.status == 503:
        return MockError(
            503,
            "Bedrock is unable to process your request.",
            "ServiceUnavailableException",
            kind=kind,
        )
    message = "The server encountered an error processing your request."
    return MockError(fault.status, message, "InternalServerException", kind=kind)


# -- event stream ---------------------------------------------------------------------


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack(">B", len(raw_name))
        + raw_name
        + struct.pack(">BH", _STRING, len(raw_value))
        + raw_value
    )


def frame(headers: Sequence[tuple[str, str]], payload: bytes) -> bytes:
    """One event-stream message."""
    encoded = b"".join(_header(name, value) for name, value in headers)
    prelude = struct.pack(">II", 16 + len(encoded) + len(payload), len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(kind: str, payload: Mapping[str, Any]) -> bytes:
    """An event frame, padded as AWS pads them (so sizes do not reveal the content)."""
    text = dumps(payload)
    padding = _PADDING[: 1 + (len(text) * 7) % len(_PADDING)]
    body = dumps({**payload, "p": padding}).encode()  # UTF-8 as AWS sends it, not \u escapes
    return frame(
        [(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")],
        body,
    )


def _exception(kind: str, payload: Mapping[str, Any]) -> bytes:
    return frame(
        [
            (":exception-type", kind),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        dumps(payload).encode(),
    )


def error_frame(code: str, message: str) -> bytes:
    return frame(
        [(":error-code", code), (":error-message", message), (":message-type", "error")], b""
    )


def stream_fault_frame(fault: ErrorFault) -> bytes:
    """An error fault as ConverseStream reports it after the 200."""
    error = fault_error(fault)
    if fault.kind == "rate_limited":
        return _exception("throttlingException", {"message": error.message})
    if fault.kind in ("bad_request", "context"):
        return _exception("validationException", {"message": error.message})
    if error.type == "ServiceUnavailableException":
        return _exception("serviceUnavailableException", {"message": error.message})
    if fault.kind == "server" and fault.status in (502, 504):
        body = {
            "message": "Received error from the model. See originalStatusCode and originalMessage.",
            "originalStatusCode": fault.status,
            "originalMessage": "upstream model error (mock fault)",
        }
        return _exception("modelStreamErrorException", body)
    if fault.kind == "server":
        return _exception("internalServerException", {"message": error.message})
    return error_frame(error.type, error.message)

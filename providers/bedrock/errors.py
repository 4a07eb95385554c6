"""AWS's error vocabulary for Bedrock, read the way botocore reads it.

An AWS error names its type in the `x-amzn-ErrorType` header
(`ThrottlingException:http://internal.amazon.com/…`, cut at the `:`), else in the
body's `__type` (`com.amazon.coral.service#UnrecognizedClientException`, cut at
the `#`) or `code`; the text is the body's `message` (or `Message`). Event-stream
exceptions name it in lowerCamelCase (`throttlingException`).

Classes narrower than the status says: every signature or key problem is a 403
from AWS but `Unauthorized` here (the credential is wrong, not its permissions);
`ModelNotReadyException` is a 429 that means "the model is loading", a transient
outage rather than the caller's rate; `ServiceQuotaExceededException` is billing-
like and never retried.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from contracts.errors import (
    FleetError,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    Unauthorized,
)
from providers.core.errors import ErrorInfo, ErrorTable
from providers.core.types import Secret

__all__ = ["BY_STATUS", "ERRORS", "AwsErrorTable", "aws_error_info", "error_type"]

_CREDENTIAL_ERRORS: Final = (
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "IncompleteSignature",
    "IncompleteSignatureException",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "InvalidClientTokenId",
)


def error_type(raw: str | None) -> str | None:
    """`ThrottlingException` from any of AWS's spellings of it."""
    if not raw:
        return None
    name = raw.split(":", 1)[0].rsplit("#", 1)[-1].strip()
    return name[:1].upper() + name[1:] if name else None


def aws_error_info(headers: Mapping[str, str], body: bytes) -> ErrorInfo:
    try:
        payload: Any = json.loads(body) if body else {}
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return ErrorInfo(
            message=" ".join(body.decode("utf-8", "replace").split()),
            type=error_type(headers.get("x-amzn-errortype")),
        )
    raw_type = headers.get("x-amzn-errortype") or _str(payload.get("__type"))
    raw_type = raw_type or _str(payload.get("code")) or _str(payload.get("Code"))
    output = payload.get("Output")
    if raw_type is None and isinstance(output, dict):  # `{"Output":{"__type":…},"Version":…}`
        raw_type = _str(output.get("__type"))
    message = payload.get("message", payload.get("Message"))
    return ErrorInfo(message=message if isinstance(message, str) else "", type=error_type(raw_type))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class AwsErrorTable(ErrorTable):
    """An `ErrorTable` that reads the type from AWS's header before the body."""

    def from_response(
        self, provider: str, status: int, headers: Mapping[str, str], body: bytes, secret: Secret
    ) -> FleetError:
        info = aws_error_info(headers, body)
        if status < 400:  # an error behind a 2xx (an unknown operation, from some fronts)
            status = self._status_of(info) or 500
        return self.from_info(provider, status, info, secret, headers=headers)


ERRORS: Final = AwsErrorTable(
    statuses={
        "ValidationException": 400,
        "SerializationException": 400,
        "ServiceQuotaExceededException": 400,
        "AccessDeniedException": 403,
        **dict.fromkeys(_CREDENTIAL_ERRORS, 403),
        "ResourceNotFoundException": 404,
        "UnknownOperationException": 404,
        "ModelTimeoutException": 408,
        "ConflictException": 409,
        "ModelErrorException": 424,
        "ModelStreamErrorException": 424,
        "DependencyFailedException": 424,
        "ThrottlingException": 429,
        "ModelNotReadyException": 429,
        "InternalServerException": 500,
        "InternalFailure": 500,
        "BadGatewayException": 502,
        "ServiceUnavailableException": 503,
    },
    classes={
        **dict.fromkeys(_CREDENTIAL_ERRORS, Unauthorized),
        "UnknownOperationException": NotFound,
        "ModelNotReadyException": ProviderUnavailable,
        "ModelStreamErrorException": ProviderUnavailable,
        "ServiceQuotaExceededException": QuotaExceeded,
    },
)

# Classes by HTTP status alone: for a model's own error relayed with its status
# (`modelStreamErrorException.originalStatusCode`).
BY_STATUS: Final = ErrorTable()

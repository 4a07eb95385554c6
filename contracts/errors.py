"""One exception hierarchy, classified by what the caller does next.

```
FleetError
├── ContractError            the message itself is malformed: fix the producer
├── TransientError           try again later (same target, backoff)
│   ├── RateLimited
│   ├── ProviderUnavailable  connect errors, 5xx, 529, dropped streams
│   └── ProviderTimeout
└── PermanentError           do not retry this target; a fallback target may still work
    ├── BadRequest
    ├── Unauthorized
    ├── Forbidden
    ├── NotFound
    ├── QuotaExceeded
    ├── ContentFiltered
    ├── Expired
    ├── Cancelled
    └── InternalError
```

Every error carries what the caller needs to act on it: `retryable` (the class
default, or the provider's own word such as `x-should-retry`), `provider_status`,
`retry_after` (seconds the provider asked to wait, when it said) and
`provider_request_id` (the provider's id for the failed call, to quote to its
support). Error frames carry all of them and `FleetClient` rebuilds them, with the
provider's budget the failed call reported (`rate_limit`, when it said).

Messages never contain credentials: adapters build them from status codes and
provider error bodies, never from request headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from contracts.codes import ErrorCode

if TYPE_CHECKING:
    from contracts.frames import RateLimit


class FleetError(Exception):
    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    default_retryable: ClassVar[bool] = False
    # Set by FleetClient from an error frame (the provider's rate-limit headers).
    rate_limit: RateLimit | None = None

    def __init__(
        self,
        message: str,
        *,
        provider_status: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        provider_request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider_status = provider_status
        # A provider may override the class default (e.g. `x-should-retry: false`).
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after = retry_after
        self.provider_request_id = provider_request_id


class ContractError(FleetError):
    """A job or frame failed validation. `field` names the offending field path."""

    code = ErrorCode.BAD_REQUEST

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid field {field!r}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class TransientError(FleetError):
    default_retryable = True


class RateLimited(TransientError):
    code = ErrorCode.RATE_LIMITED

    def __init__(
        self,
        message: str,
        *,
        provider_status: int | None = 429,
        retryable: bool | None = None,
        retry_after: float | None = None,
        provider_request_id: str | None = None,
    ) -> None:
        super().__init__(
            message,
            provider_status=provider_status,
            retryable=retryable,
            retry_after=retry_after,
            provider_request_id=provider_request_id,
        )


class ProviderUnavailable(TransientError):
    code = ErrorCode.PROVIDER_UNAVAILABLE


class ProviderTimeout(TransientError):
    code = ErrorCode.TIMEOUT


class PermanentError(FleetError):
    default_retryable = False


class BadRequest(PermanentError):
    code = ErrorCode.BAD_REQUEST


class Unauthorized(PermanentError):
    code = ErrorCode.UNAUTHORIZED


class Forbidden(PermanentError):
    code = ErrorCode.FORBIDDEN


class NotFound(PermanentError):
    code = ErrorCode.NOT_FOUND


class QuotaExceeded(PermanentError):
    code = ErrorCode.QUOTA_EXCEEDED


class ContentFiltered(PermanentError):
    code = ErrorCode.CONTENT_FILTERED


class Expired(PermanentError):
    code = ErrorCode.EXPIRED


class Cancelled(PermanentError):
    code = ErrorCode.CANCELLED


class InternalError(PermanentError):
    code = ErrorCode.INTERNAL


_BY_CODE: dict[ErrorCode, type[FleetError]] = {
    ErrorCode.BAD_REQUEST: BadRequest,
    ErrorCode.UNAUTHORIZED: Unauthorized,
    ErrorCode.FORBIDDEN: Forbidden,
    ErrorCode.NOT_FOUND: NotFound,
    ErrorCode.RATE_LIMITED: RateLimited,
    ErrorCode.QUOTA_EXCEEDED: QuotaExceeded,
    ErrorCode.PROVIDER_UNAVAILABLE: ProviderUnavailable,
    ErrorCode.TIMEOUT: ProviderTimeout,
    ErrorCode.EXPIRED: Expired,
    ErrorCode.CANCELLED: Cancelled,
    ErrorCode.CONTENT_FILTERED: ContentFiltered,
    ErrorCode.INTERNAL: InternalError,
}


def error_for_code(
    code: str,
    message: str,
    provider_status: int | None = None,
    *,
    retryable: bool | None = None,
    retry_after: float | None = None,
    provider_request_id: str | None = None,
) -> FleetError:
    """Rebuild the typed exception for an error frame (used by FleetClient).

    `retryable` is the worker's decision, kept as it was sent; None (a frame from
    a sender that did not say) falls back to the class default. An unknown code
    (from a newer worker) becomes `InternalError`.
    """
    try:
        cls = _BY_CODE[ErrorCode(code)]
    except ValueError:
        cls = InternalError
    return cls(
        message,
        provider_status=provider_status,
        retryable=retryable,
        retry_after=retry_after,
        provider_request_id=provider_request_id,
    )

"""Google's error vocabulary (`google.rpc.Status`), shared by Gemini and Vertex AI.

Every Google API answers `{"error":{"code","message","status","details":[…]}}`.
The status name says less than the details do, so `ERRORS` reads the details too:

* `google.rpc.ErrorInfo.reason` is looked up before the status name, as the core
  table looks up codes before types: Gemini refuses a bad API key with a 400
  `INVALID_ARGUMENT` whose reason is `API_KEY_INVALID`, which is `Unauthorized`.
* A 429 `RESOURCE_EXHAUSTED` is a rate limit unless its `google.rpc.QuotaFailure`
  names a quota that waiting a minute cannot refill (per day or month, or a limit
  of 0, as the free tier sets for models it does not offer): that is
  `QuotaExceeded`, never retried.
* `google.rpc.RetryInfo.retryDelay` (a protobuf Duration such as "17s" or "0.5s")
  is the `retry_after` of an error that is retried; Google sends no header for it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from contracts.errors import (
    BadRequest,
    FleetError,
    ProviderUnavailable,
    QuotaExceeded,
    Unauthorized,
)
from providers.core.errors import ErrorInfo, ErrorTable, error_info, parse_error_body
from providers.core.types import Secret

__all__ = ["ERRORS", "GoogleErrorDetails", "GoogleErrorTable", "error_details", "parse_duration"]

_ERROR_INFO: Final = "type.googleapis.com/google.rpc.ErrorInfo"
_QUOTA_FAILURE: Final = "type.googleapis.com/google.rpc.QuotaFailure"
_RETRY_INFO: Final = "type.googleapis.com/google.rpc.RetryInfo"
# Quota windows a retry within the fleet's backoff cannot outlast.
_LONG_QUOTA: Final = re.compile(r"per_?(day|month)", re.IGNORECASE)
_DURATION: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)s\s*")


@dataclass(frozen=True, slots=True)
class GoogleErrorDetails:
    """What the `details` of a Google error say, reduced to what classifies it."""

    reason: str | None = None  # google.rpc.ErrorInfo.reason
    retry_delay: float | None = None  # google.rpc.RetryInfo.retryDelay, in seconds
    quota_exhausted: bool = False  # a QuotaFailure that waiting will not refill
    quota_ids: tuple[str, ...] = ()


def parse_duration(value: Any) -> float | None:
    """A protobuf Duration in its JSON form ("17s", "0.5s") as seconds."""
    if not isinstance(value, str):
        return None
    match = _DURATION.fullmatch(value)
    if match is None:
        return None
    seconds = float(match.group(1))
    return seconds if math.isfinite(seconds) else None


def _error_object(payload: Any) -> Mapping[str, Any] | None:
    if isinstance(payload, list) and payload:
        payload = payload[0]  # Gemini's streamed-array form `[{"error": {…}}]`
    if not isinstance(payload, Mapping):
        return None
    error = payload.get("error", payload)
    return error if isinstance(error, Mapping) else None


def error_details(payload: Any) -> GoogleErrorDetails:
    """The classifying details of a decoded Google error payload (or of nothing)."""
    error = _error_object(payload)
    details = error.get("details") if error is not None else None
    if not isinstance(details, list):
        return GoogleErrorDetails()
    reason: str | None = None
    delay: float | None = None
    exhausted = False
    ids: list[str] = []
    for detail in details:
        if not isinstance(detail, Mapping):
            continue
        kind = detail.get("@type")
        if kind == _ERROR_INFO and isinstance(detail.get("reason"), str) and reason is None:
            reason = detail["reason"] or None
        elif kind == _RETRY_INFO:
            delay = parse_duration(detail.get("retryDelay"))
        elif kind == _QUOTA_FAILURE:
            for violation in detail.get("violations") or ():
                if not isinstance(violation, Mapping):
                    continue
                quota_id = str(violation.get("quotaId") or "")
                metric = str(violation.get("quotaMetric") or "")
                if quota_id:
                    ids.append(quota_id)
                if (
                    _LONG_QUOTA.search(quota_id)
                    or _LONG_QUOTA.search(metric)
                    or str(violation.get("quotaValue")) == "0"
                ):
                    exhausted = True
    return GoogleErrorDetails(reason, delay, exhausted, tuple(ids))


@dataclass(frozen=True, slots=True)
class GoogleErrorTable(ErrorTable):
    """`ErrorTable` that also reads Google's `details` (see the module docstring)."""

    def from_response(
        self, provider: str, status: int, headers: Mapping[str, str], body: bytes, secret: Secret
    ) -> FleetError:
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        info = parse_error_body(body)
        return self._google(provider, status, info, payload, secret, headers, None)

    def from_payload(
        self,
        provider: str,
        payload: Any,
        secret: Secret,
        *,
        context: str = "stream error",
    ) -> FleetError:
        info = error_info(payload)
        details = error_details(payload)
        info = replace(info, code=details.reason or info.code)
        error = _error_object(payload)
        raw_code = error.get("code") if error is not None else None
        numeric = raw_code if isinstance(raw_code, int) and 400 <= raw_code <= 599 else None
        status = numeric or self._status_of(info) or 500
        return self._google(provider, status, info, payload, secret, None, context)

    def _google(
        self,
        provider: str,
        status: int,
        info: ErrorInfo,
        payload: Any,
        secret: Secret,
        headers: Mapping[str, str] | None,
        context: str | None,
    ) -> FleetError:
        details = error_details(payload)
        info = replace(info, code=details.reason or info.code)
        error = self.from_info(provider, status, info, secret, headers=headers, context=context)
        if details.quota_exhausted and not isinstance(error, QuotaExceeded):
            error = _recast(error, QuotaExceeded)
        if error.retryable and details.retry_delay is not None:
            # Google's own signal; it never sends retry-after headers for it.
            error.retry_after = details.retry_delay
        return error


def _recast(error: FleetError, cls: type[FleetError]) -> FleetError:
    # Quota errors are never retried, whatever a header said (as the core table does).
    return cls(
        error.message,
        provider_status=error.provider_status,
        retryable=False if cls is QuotaExceeded else None,
        provider_request_id=error.provider_request_id,
    )


ERRORS: Final = GoogleErrorTable(
    statuses={
        # ErrorInfo reasons
        "API_KEY_INVALID": 400,
        "API_KEY_EXPIRED": 400,
        "ACCESS_TOKEN_EXPIRED": 401,
        "ACCESS_TOKEN_TYPE_UNSUPPORTED": 401,
        "CREDENTIALS_MISSING": 401,
        "BILLING_DISABLED": 403,
        "RATE_LIMIT_EXCEEDED": 429,
        # google.rpc.Code names, as `status`
        "INVALID_ARGUMENT": 400,
        "FAILED_PRECONDITION": 400,
        "OUT_OF_RANGE": 400,
        "UNAUTHENTICATED": 401,
        "PERMISSION_DENIED": 403,
        "NOT_FOUND": 404,
        "ABORTED": 409,
        "ALREADY_EXISTS": 409,
        "RESOURCE_EXHAUSTED": 429,
        "CANCELLED": 499,
        "INTERNAL": 500,
        "UNKNOWN": 500,
        "DATA_LOSS": 500,
        "UNIMPLEMENTED": 501,
        "UNAVAILABLE": 503,
        "DEADLINE_EXCEEDED": 504,
    },
    classes={
        # A refused key says so in a 400 (Gemini) or a 401 (OAuth tokens).
        "API_KEY_INVALID": Unauthorized,
        "API_KEY_EXPIRED": Unauthorized,
        "ACCESS_TOKEN_EXPIRED": Unauthorized,
        "ACCESS_TOKEN_TYPE_UNSUPPORTED": Unauthorized,
        "CREDENTIALS_MISSING": Unauthorized,
        # Billing, not permission: the money side must act (as OpenAI's billing_not_active).
        "BILLING_DISABLED": QuotaExceeded,
        # The server gave up on the call (the client did not cancel it): try again.
        "CANCELLED": ProviderUnavailable,
        # A method the API does not implement will not start working on retry.
        "UNIMPLEMENTED": BadRequest,
    },
)

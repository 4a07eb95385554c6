"""Errors as Google APIs send them, for the Gemini mock (and Vertex's, which mounts it).

Every error is a `google.rpc.Status`: `{"error":{"code","message","status","details"}}`,
`details` holding typed objects (`@type`): `ErrorInfo` (a reason such as
`API_KEY_INVALID`), `QuotaFailure` (which quota ran out), `RetryInfo` (how long to
wait, a Duration such as "17s"), `Help`, `LocalizedMessage`.

Fault kinds in Google's words: a refused key is 400 `INVALID_ARGUMENT` with reason
`API_KEY_INVALID` (never a 401 on Gemini); `rate_limited` is 429
`RESOURCE_EXHAUSTED` with a per-minute `QuotaFailure` and, when the fault names a
wait, a `RetryInfo` built from it; `quota` is the same 429 for a per-day quota
(Google adds a `RetryInfo` there too, which the fleet does not follow); `overloaded`
is 503 `UNAVAILABLE` "The model is overloaded"; `context` is 400 `INVALID_ARGUMENT`
"The input token count (…) exceeds the maximum number of tokens allowed (…)".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import ErrorFault, MockError

__all__ = [
    "GoogleError",
    "context_error",
    "error_body",
    "fault_error",
    "invalid_key_error",
    "missing_key_error",
    "model_not_found",
    "rate_limit_error",
    "render_error",
    "retry_delay",
    "url_error",
]

_TYPE: Final = "type.googleapis.com/google.rpc."
_RATE_LIMITS_URL: Final = "https://ai.google.dev/gemini-api/docs/rate-limits"
_QUOTA_MESSAGE: Final = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    f"information on this error, head to: {_RATE_LIMITS_URL}."
)
_METRIC: Final = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
# google.rpc.Code names by HTTP status, for errors raised without one (shared mock code).
_STATUS_NAMES: Final[Mapping[int, str]] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class GoogleError(MockError):
    """A `MockError` carrying Google's `details` objects."""

    def __init__(
        self,
        status: int,
        message: str,
        status_name: str,
        *,
        details: Sequence[Mapping[str, Any]] = (),
        kind: str = "bad_request",
    ) -> None:
        super().__init__(status, message, status_name, kind=kind)
        self.details = [dict(d) for d in details]


def _status_name(error: MockError) -> str:
    if error.type in _STATUS_NAMES.values():
        return error.type
    return _STATUS_NAMES.get(error.status, "UNKNOWN")


def error_body(error: MockError) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": error.status,
        "message": error.message,
        "status": _status_name(error),
    }
    details = getattr(error, "details", None)
    if details:
        body["details"] = details
    return {"error": body}


def render_error(exc: MockError, request: web.Request) -> web.Response:
    return web.Response(
        status=exc.status,
        # Google pretty-prints its error bodies.
        body=json.dumps(error_body(exc), indent=2).encode(),
        content_type="application/json",
        charset="UTF-8",
        headers=exc.headers,
    )


def url_error(request: web.Request, exc: web.HTTPException) -> MockError:
    """aiohttp's own 404/405 for a route the mock lacks, as Google says it."""
    return GoogleError(
        404,
        f"The requested URL {request.path} was not found on this server.",
        "NOT_FOUND",
        kind="not_found",
    )


def _error_info(reason: str, service: str) -> dict[str, Any]:
    return {
        "@type": _TYPE + "ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": service},
    }


def invalid_key_error(service: str = "generativelanguage.googleapis.com") -> GoogleError:
    message = "API key not valid. Please pass a valid API key."
    return GoogleError(
        400,
        message,
        "INVALID_ARGUMENT",
        details=[
            _error_info("API_KEY_INVALID", service),
            {"@type": _TYPE + "LocalizedMessage", "locale": "en-US", "message": message},
        ],
        kind="unauthorized",
    )


def missing_key_error() -> GoogleError:
    return GoogleError(
        403,
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
        "PERMISSION_DENIED",
        kind="unauthorized",
    )


def model_not_found(model: str, method: str = "generateContent") -> GoogleError:
    name = model if model.startswith("models/") else f"models/{model}"
    return GoogleError(
        404,
        f"{name} is not found for API version v1beta, or is not supported for {method}. "
        "Call ListModels to see the list of available models and their supported methods.",
        "NOT_FOUND",
        kind="not_found",
    )


def context_error(prompt: int, window: int) -> GoogleError:
    return GoogleError(
        400,
        f"The input token count ({prompt}) exceeds the maximum number of tokens allowed "
        f"({window}).",
        "INVALID_ARGUMENT",
        kind="context",
    )


def retry_delay(seconds: float) -> str:
    """A Duration's JSON form: whole seconds as "17s", fractions as "1.5s"."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3f}".rstrip("0") + "s"


def _quota_details(
    quota_id: str, limit: int, model: str | None, delay: float | None
) -> list[dict[str, Any]]:
    violation: dict[str, Any] = {
        "quotaMetric": _METRIC,
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": model or "mock-model"},
        "quotaValue": str(limit),
    }
    details: list[dict[str, Any]] = [
        {"@type": _TYPE + "QuotaFailure", "violations": [violation]},
        {
            "@type": _TYPE + "Help",
            "links": [
                {"description": "Learn more about Gemini API quotas", "url": _RATE_LIMITS_URL}
            ],
        },
    ]
    if delay is not None:
        details.append({"@type": _TYPE + "RetryInfo", "retryDelay": retry_delay(delay)})
    return details


def rate_limit_error(model: str | None, limit: int, wait: float | None) -> GoogleError:
    """A 429 for a per-minute quota; `wait` (seconds) becomes its `RetryInfo`."""
    message = (
        f"{_QUOTA_MESSAGE}\n* Quota exceeded for metric: {_METRIC}, limit: {limit}, "
        f"model: {model or 'mock-model'}"
    )
    if wait is not None:
        message += f"\nPlease retry in {retry_delay(wait)}."
    details = _quota_details(
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", limit, model, wait
    )
    return GoogleError(429, message, "RESOURCE_EXHAUSTED", details=details, kind="rate_limited")


def fault_error(fault: ErrorFault, model: str | None) -> MockError:
    """An injected error as Gemini says it."""
    kind = fault.kind
    if kind == "rate_limited":
        return rate_limit_error(model, 15, fault.wait)
    if kind == "quota":
        details = _quota_details(
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier", 200, model, 25.0
        )
        message = (
            f"{_QUOTA_MESSAGE}\n* Quota exceeded for metric: {_METRIC}, limit: 200, "
            f"model: {model or 'mock-model'}\nPlease retry in 25s."
        )
        return GoogleError(429, message, "RESOURCE_EXHAUSTED", details=details, kind=kind)
    if kind == "unauthorized":
        return invalid_key_error()
    if kind == "forbidden":
        return GoogleError(
            403, "The caller does not have permission", "PERMISSION_DENIED", kind=kind
        )
    if kind == "not_found":
        return model_not_found(model or "mock-model")
    if kind == "context":
        return context_error(1_048_577, 1_048_576)
    if kind == "overloaded":
        return GoogleError(
            503, "The model is overloaded. Please try again later.", "UNAVAILABLE", kind=kind
        )
    if kind == "bad_request":
        return GoogleError(400, "Request contains an invalid argument.", "INVALID_ARGUMENT")
    return server_error(fault.status)


def server_error(status: int) -> GoogleError:
    if status == 504:
        return GoogleError(
            504,
            "Deadline expired before operation could complete.",
            "DEADLINE_EXCEEDED",
            kind="server",
        )
    if status in (502, 503):
        message = "Bad Gateway" if status == 502 else "The service is currently unavailable."
        return GoogleError(status, message, "UNAVAILABLE", kind="server")
    return GoogleError(
        status,
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        "INTERNAL",
        kind="server",
    )


def budget_wait(seconds: float) -> float:
    """The wait the rate limiter computed, rounded up as Google rounds RetryInfo."""
    return float(max(math.ceil(seconds), 1))

"""Errors as Replicate's API sends them: RFC 7807 problem details.

`{"type", "title", "detail", "status"}` with `Content-Type: application/problem+json`;
a 422 adds `invalid_fields`, a 429 `retry_after` (seconds, as in its `Retry-After`).
A `MockError`'s `type` holds the title, its `message` the detail and its `param`
the invalid field.

Fault kinds in Replicate's words: `quota` is 402 "Insufficient credit",
`rate_limited` 429 "Request was throttled" with the fault's wait as `Retry-After`
(Replicate has no millisecond header: a `retry-after-ms` wait is written in
fractional seconds), `context` a 422 on `prompt` (Replicate checks inputs against
the model's schema before running it), `overloaded` 503, other 5xx as named.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import ErrorFault, MockError

__all__ = [
    "INVALID_VERSION",
    "PROBLEM_JSON",
    "fault_error",
    "invalid_input",
    "not_found",
    "problem",
    "render_error",
    "transient_code",
    "url_error",
]

PROBLEM_JSON: Final = "application/problem+json"
INVALID_VERSION: Final = "Invalid version or not permitted"
_DOCS: Final = "https://replicate.com/docs/reference/http#"

_SERVER_TITLES: Final[Mapping[int, str]] = {
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def problem(error: MockError) -> dict[str, Any]:
    """The problem-details body for `error`."""
    slug = error.type.lower().replace(" ", "-")
    body: dict[str, Any] = {
        "type": _DOCS + slug,
        "title": error.type,
        "status": error.status,
        "detail": error.message,
    }
    if error.status == 422 and error.param:
        body["invalid_fields"] = [
            {"type": "invalid", "field": error.param, "description": error.message}
        ]
    wait = error.headers.get("Retry-After")
    if error.status == 429 and wait is not None:
        body["retry_after"] = math.ceil(float(wait))
    return body


def render_error(error: MockError, request: web.Request) -> web.Response:
    return web.Response(
        status=error.status,
        body=json.dumps(problem(error)).encode(),
        content_type=PROBLEM_JSON,
        headers=error.headers,
    )


def url_error(request: web.Request, exc: web.HTTPException) -> MockError:
    if exc.status == 404:
        return not_found()
    return MockError(exc.status, exc.reason, exc.reason, kind="bad_request")


def not_found(detail: str = "The requested resource could not be found.") -> MockError:
    return MockError(404, detail, "Not found", kind="not_found")


def invalid_input(field: str, description: str) -> MockError:
    """A 422 for one input field, worded as Replicate's schema validation words it."""
    return MockError(
        422, f"- {field}: {description}", "Input validation failed", param=field, kind="bad_request"
    )


def _retry_after(fault: ErrorFault) -> dict[str, str]:
    if fault.retry_after is not None:
        return {"Retry-After": fault.retry_after}
    if fault.retry_after_ms is not None:
        return {"Retry-After": f"{float(fault.retry_after_ms) / 1000:g}"}
    return {}


def fault_error(fault: ErrorFault) -> MockError:
    """An `ErrorFault` as Replicate's API would answer it."""
    kind = fault.kind
    if kind == "rate_limited":
        headers = _retry_after(fault)
        wait = headers.get("Retry-After")
        resets = f" Your rate limit resets in ~{math.ceil(float(wait))}s." if wait else ""
        detail = "Request was throttled." + resets
        return MockError(429, detail, "Request was throttled", headers=headers, kind=kind)
    if kind == "quota":
        detail = (
            "You have insufficient credit to run this model. Go to"
            " https://replicate.com/account/billing#billing to purchase credit."
        )
        return MockError(402, detail, "Insufficient credit", kind=kind)
    if kind == "unauthorized":
        return MockError(
            401, "You did not pass a valid authentication token", "Unauthenticated", kind=kind
        )
    if kind == "forbidden":
        detail = "You do not have permission to perform this action."
        return MockError(403, detail, "Forbidden", kind=kind)
    if kind == "not_found":
        return not_found()
    if kind == "context":
        return invalid_input("prompt", "the prompt is longer than the model's context window")
    if kind == "bad_request":
        return MockError(400, "The request could not be read (mock fault).", "Bad request")
    if kind == "overloaded":
        detail = "Replicate is temporarily overloaded. Please try again shortly."
        return MockError(503, detail, "Service unavailable", kind=kind)
    title = _SERVER_TITLES.get(fault.status, "Internal server error")
    return MockError(fault.status, "Something went wrong (mock fault).", title, kind=kind)


def transient_code(kind: str) -> str | None:
    """The documented prediction error code for a failure worth retrying
    (E1000, "unknown error: try again"), for the error kinds that are transient."""
    return "E1000" if kind in ("overloaded", "server", "rate_limited") else None

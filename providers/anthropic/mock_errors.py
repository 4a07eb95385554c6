"""Errors as the Messages API sends them: `{"type":"error","error":{…},"request_id"}`.

Fault kinds in Anthropic's words: `overloaded` is 529 `overloaded_error`, `quota`
402 `billing_error` (the API documents it; low credit has also been seen as a 400),
`rate_limited` 429 `rate_limit_error` with the fault's `retry-after`, `context` 400
`invalid_request_error` "prompt is too long", 5xx `api_error` (504 `timeout_error`).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from providers.anthropic.mock_answer import dumps
from providers.mock.faults import ErrorFault, MockError, bad_request, retry_headers

__all__ = ["REQUEST_ID", "error_body", "fault_error", "render_error"]

# The id of the request being answered: in the `request-id` header and error bodies.
REQUEST_ID: Final = web.RequestKey("anthropic_request_id", str)


def error_body(error: MockError, request: web.Request) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error.type, "message": error.message},
        "request_id": request.get(REQUEST_ID),
    }


def render_error(error: MockError, request: web.Request) -> web.Response:
    return web.Response(
        status=error.status,
        body=dumps(error_body(error, request)).encode(),
        content_type="application/json",
        headers=error.headers,
    )


def fault_error(fault: ErrorFault, model: str | None) -> MockError:
    """An `ErrorFault` as the Messages API would answer it."""
    kind = fault.kind
    if kind == "overloaded":
        return MockError(529, "Overloaded", "overloaded_error", kind=kind)
    if kind == "quota":
        message = "Your credit balance is too low to access the Anthropic API."
        return MockError(402, message, "billing_error", kind=kind)
    if kind == "rate_limited":
        message = "This request would exceed the rate limit for your organization (mock fault)."
        return MockError(429, message, "rate_limit_error", headers=retry_headers(fault), kind=kind)
    if kind == "unauthorized":
        return MockError(401, "invalid x-api-key", "authentication_error", kind=kind)
    if kind == "forbidden":
        message = "Your API key does not have permission to use the specified resource."
        return MockError(403, message, "permission_error", kind=kind)
    if kind == "not_found":
        return MockError(404, f"model: {model or 'unknown'}", "not_found_error", kind=kind)
    if kind == "context":
        message = "prompt is too long: 200001 tokens > 200000 maximum"
        return MockError(400, message, "invalid_request_error", kind=kind)
    if kind == "bad_request":
        return bad_request("Invalid request (mock fault).")
    if fault.status == 504:
        return MockError(504, "Request timed out", "timeout_error", kind=kind)
    return MockError(fault.status, "Internal server error", "api_error", kind=kind)

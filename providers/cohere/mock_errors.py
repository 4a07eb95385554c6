"""Errors as Cohere sends them: `{"id": "<uuid>", "message": "…"}`, nothing more.

Fault kinds in Cohere's words (from its errors reference): `rate_limited` is a 429
"You are past the per minute request limit…" with the fault's `retry-after`;
`quota` a 429 about the Trial key's monthly call limit (the quota Cohere keys hit);
`context` a 400 "too many tokens: …"; `unauthorized` a 401 "invalid api token";
`not_found` a 404 naming the model; `overloaded` a 503; 5xx as their status says.
In a stream the same sentence becomes a `message-end` with `finish_reason: ERROR`
and `delta.error` (`stream_failure`), as Cohere reports a failed generation.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import ErrorFault, MockError, retry_headers

__all__ = [
    "PER_MINUTE",
    "TRIAL_MONTHLY",
    "cohere_id",
    "fault_error",
    "not_found",
    "render_error",
    "stream_failure",
    "url_error",
]

PER_MINUTE: Final = "You are past the per minute request limit, please wait and try again later."
TRIAL_MONTHLY: Final = (
    "You are using a Trial key, which is limited to 1000 API calls / month. You can "
    "continue to use the Trial key for free or upgrade to a Production key with higher "
    "rate limits at 'https://dashboard.cohere.com/api-keys'. Contact us on "
    "'https://discord.gg/XW44jPfYJu' or email us at support@cohere.com with any questions"
)
_CONTEXT: Final = (
    "too many tokens: total number of tokens in the prompt cannot exceed 128000 - received "
    "128001. Try using a shorter prompt, or enabling prompt truncating."
)
_BY_STATUS: Final = {
    500: "internal server error, this has been reported to our developers",
    502: "bad gateway",
    503: "service unavailable: the server is overloaded, please try again later",
    504: "gateway timeout",
}


def cohere_id() -> str:
    """An id as Cohere gives requests and responses: a UUID."""
    return str(uuid.uuid4())


def render_error(error: MockError, request: web.Request) -> web.Response:
    body = {"id": cohere_id(), "message": error.message}
    return web.Response(
        status=error.status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=error.headers,
    )


def not_found(model: str) -> MockError:
    message = (
        f"model '{model}' not found, make sure the correct model ID was used and that you "
        "have access to the model."
    )
    return MockError(404, message, "not_found", kind="not_found")


def url_error(request: web.Request, exc: web.HTTPException) -> MockError:
    # Cohere's front answers an unknown path as Go's router does.
    if exc.status == 404:
        return MockError(404, "404 page not found", "not_found", kind="not_found")
    return MockError(exc.status, exc.reason, "invalid_request")


def fault_error(fault: ErrorFault, model: str | None) -> MockError:
    """An `ErrorFault` as the Cohere API would answer it."""
    kind = fault.kind
    if kind == "rate_limited":
        return MockError(429, PER_MINUTE, kind, headers=retry_headers(fault), kind=kind)
    if kind == "quota":
        return MockError(429, TRIAL_MONTHLY, kind, kind=kind)
    if kind == "context":
        return MockError(400, _CONTEXT, kind, kind=kind)
    if kind == "bad_request":
        message = "invalid request: temperature must be between 0 and 1.0 inclusive."
        return MockError(400, message, kind, kind=kind)
    if kind == "unauthorized":
        return MockError(401, "invalid api token", kind, kind=kind)
    if kind == "forbidden":
        message = "You do not have access to this resource with your current API key."
        return MockError(403, message, kind, kind=kind)
    if kind == "not_found":
        return not_found(model or "unknown")
    status = 503 if kind == "overloaded" else fault.status
    return MockError(status, _BY_STATUS.get(status, "internal server error"), kind, kind=kind)


def stream_failure(fault: ErrorFault) -> dict[str, Any]:
    """The `message-end` delta of a generation that failed the way `fault` says."""
    return {"finish_reason": "ERROR", "error": fault_error(fault, None).message}

"""vLLM's error bodies, for the mock.

vLLM names an error by its exception class and repeats the HTTP status as a
number: `{"error": {"message", "type": "BadRequestError", "param", "code": 400}}`
(servers before 0.10 wrote the same fields flat, with `"object": "error"`; the
adapter reads both). A wrong key is answered by the `--api-key` middleware with
`{"error": "Unauthorized"}`, and an unknown route by FastAPI with
`{"detail": "Not Found"}`. The failures vLLM itself never reports (throttling,
quotas, gateways) are said as an OpenAI-compatible gateway in front of it says
them, in vLLM's shape: 429 with `retry-after`, and `type: insufficient_quota` for
a spent budget.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import ErrorFault, MockError, retry_headers

__all__ = [
    "AUTH",
    "DETAIL",
    "context_error",
    "error_body",
    "fault_error",
    "model_not_found",
    "rate_limit_error",
    "render_error",
]

AUTH: Final = "auth"  # kind: the middleware's bare `{"error": "Unauthorized"}`
DETAIL: Final = "detail"  # kind: FastAPI's `{"detail": ...}` for unknown routes
# vLLM's exception class names by status (the gateway ones as such gateways name them).
_TYPES: Final[Mapping[int, str]] = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    429: "RateLimitError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}
_SERVER: Final[Mapping[int, str]] = {
    500: "EngineCore encountered an issue. See stack trace (above) for the root cause.",
    502: "Bad Gateway",
    503: "The engine is overloaded; the request was not scheduled.",
    504: "Gateway Timeout",
}


def error_body(error: MockError) -> dict[str, Any]:
    """The error as vLLM writes it, in a body or as a `data:` event of a stream."""
    if error.kind == AUTH:
        return {"error": error.message}
    if error.kind == DETAIL:
        return {"detail": error.message}
    kind = error.type if error.type == "insufficient_quota" else _TYPES.get(error.status)
    return {
        "error": {
            "message": error.message,
            "type": kind or "InternalServerError",
            "param": error.param,
            "code": error.status,
        }
    }


def render_error(error: MockError) -> web.Response:
    return web.Response(
        status=error.status,
        body=json.dumps(error_body(error), separators=(",", ":")).encode(),
        content_type="application/json",
        headers=error.headers,
    )


def unauthorized() -> MockError:
    return MockError(401, "Unauthorized", "UnauthorizedError", kind=AUTH)


def model_not_found(model: str | None) -> MockError:
    return MockError(
        404,
        f"The model `{model}` does not exist.",
        "NotFoundError",
        param="model",
        kind="not_found",
    )


def context_error(window: int, prompt: int, completion: int) -> MockError:
    message = (
        f"This model's maximum context length is {window} tokens. However, you requested "
        f"{prompt + completion} tokens ({prompt} in the messages, {completion} in the "
        "completion). Please reduce the length of the messages or completion."
    )
    return MockError(400, message, "BadRequestError", kind="context")


def rate_limit_error(
    retry_after: float | None = None, headers: dict[str, str] | None = None
) -> MockError:
    if headers is None:
        headers = {"retry-after": str(max(1, math.ceil(retry_after or 1)))}
    return MockError(
        429,
        "Too many requests: rate limit exceeded.",
        "RateLimitError",
        headers=headers,
        kind="rate_limited",
    )


def fault_error(fault: ErrorFault, model: str | None, context_window: int) -> MockError:
    """An injected error as vLLM (or the gateway in front of it) says it."""
    kind = fault.kind
    if kind == "rate_limited":
        return rate_limit_error(headers=retry_headers(fault))
    if kind == "quota":
        message = "Budget exhausted for this key: you exceeded your current quota."
        return MockError(429, message, "insufficient_quota", kind=kind)
    if kind == "unauthorized":
        return unauthorized()
    if kind == "forbidden":
        return MockError(
            403, "Access to this model is forbidden.", "PermissionDeniedError", kind=kind
        )
    if kind == "not_found":
        return model_not_found(model)
    if kind == "context":
        return context_error(context_window, context_window + 1, 16)
    if kind == "bad_request":
        return MockError(400, "Invalid request (mock fault).", "BadRequestError", kind=kind)
    if kind == "overloaded":
        return MockError(503, _SERVER[503], "ServiceUnavailableError", kind=kind)
    return MockError(fault.status, _SERVER.get(fault.status, _SERVER[500]), "server", kind="server")

"""Ollama's errors as the mock sends them: `{"error": "<sentence>"}`.

Ollama's bodies have nothing but the sentence, so each fault is said in the
words Ollama (or ollama.com, for what only the cloud does: keys, usage limits)
uses for it; the adapter recognises the ones that matter by those words
(`providers.ollama.errors`). Unknown routes get Go's plain-text
`404 page not found`, as Ollama's router answers them.
"""

from __future__ import annotations

import json
from typing import Final

from aiohttp import web

from providers.mock.faults import ErrorFault, MockError, retry_headers

__all__ = [
    "ROUTE_NOT_FOUND",
    "bad_request",
    "context_error",
    "error_line",
    "fault_error",
    "model_not_found",
    "rate_limit_error",
    "render_error",
    "unauthorized",
]

ROUTE_NOT_FOUND: Final = "route_not_found"
_PLAIN_404: Final = b"404 page not found"
# The neutral error kinds in Ollama's words (those not built by a function below).
_SENTENCES: Final = {
    "forbidden": (
        403,
        "this model requires a subscription, upgrade for access: https://ollama.com/upgrade",
    ),
    "quota": (
        429,
        "you (mock) have reached your weekly usage limit, upgrade for higher limits: "
        "https://ollama.com/upgrade",
    ),
    "overloaded": (503, "server busy, please try again.  maximum pending requests exceeded"),
}
_SERVER: Final = {
    500: "llama runner process has terminated: exit status 2",
    502: "error reaching the cloud model: bad gateway",
    503: "Service Temporarily Unavailable",
    504: "gateway timeout",
}


def error_line(error: MockError) -> bytes:
    """An error as Ollama writes it, in a body or as a line of a stream."""
    return json.dumps({"error": error.message}, separators=(",", ":"), ensure_ascii=False).encode()


def render_error(error: MockError) -> web.Response:
    if error.kind == ROUTE_NOT_FOUND:
        return web.Response(status=404, body=_PLAIN_404, content_type="text/plain")
    return web.Response(
        status=error.status,
        body=error_line(error),
        content_type="application/json",
        headers=error.headers,
    )


def bad_request(message: str) -> MockError:
    return MockError(400, message, "bad_request")


def unauthorized() -> MockError:
    return MockError(401, "unauthorized", "unauthorized", kind="unauthorized")


def model_not_found(model: str | None) -> MockError:
    message = f'model "{model}" not found, try pulling it first'
    return MockError(404, message, "not_found", kind="not_found")


def context_error() -> MockError:
    return MockError(
        400, "the input length exceeds the context length", "bad_request", kind="context"
    )


def rate_limit_error(headers: dict[str, str]) -> MockError:
    return MockError(
        429,
        "too many requests, please try again later",
        "rate_limited",
        headers=headers,
        kind="rate_limited",
    )


def fault_error(fault: ErrorFault, model: str | None) -> MockError:
    """An injected error as Ollama says it."""
    kind = fault.kind
    if kind == "rate_limited":
        return rate_limit_error(retry_headers(fault))
    if kind == "unauthorized":
        return unauthorized()
    if kind == "not_found":
        return model_not_found(model)
    if kind == "context":
        return context_error()
    if kind == "bad_request":
        return bad_request("invalid request: mock fault")
    if kind in _SENTENCES:
        status, message = _SENTENCES[kind]
        return MockError(status, message, kind, kind=kind)
    return MockError(fault.status, _SERVER.get(fault.status, _SERVER[500]), "server", kind="server")

"""Mistral's error bodies and rate-limit headers, for the mock.

The shapes, as Mistral has been seen sending them:

* its error object, `{"object":"error","message","type","param","code",
  "raw_status_code"}`, with numeric-string codes: 429 `rate_limited` 1300,
  429 `service_tier_capacity_exceeded` 3505 (the overloaded fault), 400
  `invalid_model` 1500 (an unknown model), 403 `tier_not_allowed` 1910, 400
  `invalid_function_call` 3280 (a bad tool-call id), 400 `invalid_request_prompt`
  3210 (an embeddings batch too large);
* the gateway's 401 `{"message":"Unauthorized","request_id"}` for a wrong key, and
  FastAPI's `{"detail":"Unauthorized"}` (the 401 fault), `{"detail":"Not Found"}`
  for unknown routes and `{"detail":[…]}` 422s for bodies that do not validate;
* Envoy's plain-text 502/503/504 (`upstream connect error…`, `no healthy
  upstream`, `upstream request timeout`) in front of the API.

A spent monthly budget (the quota fault) is the per-minute 429's body with
`x-ratelimit-remaining-tokens-month: 0`: Mistral says it in the headers only.
Every chat and embeddings answer reports the per-minute and monthly budgets in
`x-ratelimit-*` headers and the request's cost in `x-ratelimit-tokens-query-cost`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import ErrorFault, MockError, retry_headers
from providers.mock.ratelimit import Budget

__all__ = [
    "batch_too_large",
    "context_error",
    "fault_error",
    "invalid_key_error",
    "invalid_tool_call_id",
    "model_not_found",
    "rate_limit_error",
    "ratelimit_headers",
    "render_error",
    "stream_error_event",
    "validation_error",
]

# Kinds rendered as something other than Mistral's error object.
_DETAIL: Final = "detail"  # FastAPI's {"detail": …}
_GATEWAY: Final = "gateway"  # the API gateway's {"message","request_id"}
_PLAIN: Final = "plain"  # Envoy's text/plain
_ENVOY: Final[Mapping[int, str]] = {
    502: "upstream connect error or disconnect/reset before headers. "
    "reset reason: connection failure",
    503: "no healthy upstream",
    504: "upstream request timeout",
}
# What the mock reports when it enforces no budget: a paying workspace's limits.
_NOMINAL_RPM: Final = 360
_NOMINAL_TPM: Final = 2_000_000
_NOMINAL_MONTH: Final = 10_000_000_000
_SPENT_MONTH: Final = 1_000_000_000


def error_body(error: MockError) -> dict[str, Any]:
    return {
        "object": "error",
        "message": error.message,
        "type": error.type,
        "param": error.param,
        "code": error.code,
        "raw_status_code": error.status,
    }


def render_error(error: MockError) -> web.Response:
    if error.type == _PLAIN:
        return web.Response(
            status=error.status,
            text=error.message,
            content_type="text/plain",
            headers=error.headers,
        )
    payload: Any
    if error.type == _DETAIL:
        payload = {"detail": json.loads(error.message)}
    elif error.type == _GATEWAY:
        payload = {"message": error.message, "request_id": os.urandom(16).hex()}
    else:
        payload = error_body(error)
    return web.Response(
        status=error.status,
        body=json.dumps(payload, separators=(",", ":")).encode(),
        content_type="application/json",
        headers=error.headers,
    )


def stream_error_event(error: MockError) -> bytes:
    """An error written into a 200 stream: Mistral's error object as an event."""
    return b"data: " + json.dumps(error_body(error), separators=(",", ":")).encode() + b"\n\n"


def detail_error(status: int, detail: Any, kind: str) -> MockError:
    """FastAPI's `{"detail": …}` body (the detail travels JSON-encoded in the message)."""
    return MockError(status, json.dumps(detail), _DETAIL, kind=kind)


def validation_error(problems: list[dict[str, Any]]) -> MockError:
    return detail_error(422, problems, "bad_request")


def invalid_key_error() -> MockError:
    return MockError(401, "Unauthorized", _GATEWAY, kind="unauthorized")


def model_not_found(model: str | None, status: int = 400) -> MockError:
    return MockError(status, f"Invalid model: {model}", "invalid_model", "1500", kind="not_found")


def invalid_tool_call_id(call_id: Any) -> MockError:
    return MockError(
        400,
        f"Tool call id was {call_id} but must be a-z, A-Z, 0-9, with a length of 9.",
        "invalid_function_call",
        "3280",
    )


def batch_too_large(what: str) -> MockError:
    return MockError(
        400, f"Too many {what}, split into more batches.", "invalid_request_prompt", "3210"
    )


def context_error(window: int, prompt: int) -> MockError:
    message = (
        f"Prompt contains {prompt} tokens, too large for model with {window} maximum context length"
    )
    return MockError(400, message, "invalid_request_error", kind="context")


def _rate_limited(headers: Mapping[str, str]) -> MockError:
    return MockError(
        429, "Rate limit exceeded", "rate_limited", "1300", headers=headers, kind="rate_limited"
    )


def rate_limit_error(budget: Budget) -> MockError:
    """The 429 for a request the per-minute budget refused."""
    return _rate_limited({"retry-after": str(max(1, math.ceil(budget.retry_after)))})


def fault_error(fault: ErrorFault, model: str | None, context_window: int) -> MockError:
    """An injected error as Mistral says it."""
    kind = fault.kind
    if kind == "rate_limited":
        return _rate_limited(retry_headers(fault))
    if kind == "quota":
        error = _rate_limited(
            {
                "x-ratelimit-limit-tokens-month": str(_SPENT_MONTH),
                "x-ratelimit-remaining-tokens-month": "0",
            }
        )
        error.kind = "quota"
        return error
    if kind == "overloaded":
        return MockError(
            429,
            "Service tier capacity exceeded for this model.",
            "service_tier_capacity_exceeded",
            "3505",
            kind=kind,
        )
    if kind == "unauthorized":
        return detail_error(401, "Unauthorized", kind)
    if kind == "forbidden":
        return MockError(
            403,
            "This model is not available in your subscription tier",
            "tier_not_allowed",
            "1910",
            kind=kind,
        )
    if kind == "not_found":
        return model_not_found(model, 404)
    if kind == "context":
        return context_error(context_window, context_window + 1)
    if kind == "bad_request":
        return MockError(400, "Invalid request (mock fault).", "invalid_request_error")
    if fault.status in _ENVOY:
        return MockError(fault.status, _ENVOY[fault.status], _PLAIN, kind="server")
    return MockError(fault.status, "Internal server error", "internal_server_error", kind="server")


def not_found_route() -> MockError:
    return detail_error(404, "Not Found", "not_found")


def method_not_allowed() -> MockError:
    return detail_error(405, "Method Not Allowed", "bad_request")


def ratelimit_headers(budget: Budget | None, tokens: int) -> dict[str, str]:
    """`x-ratelimit-*` for one answer; a budget the mock does not enforce is reported as
    a paying workspace's nominal one."""
    if budget is not None and budget.limit_requests:
        requests = (budget.limit_requests, budget.remaining_requests)
    else:
        requests = (_NOMINAL_RPM, _NOMINAL_RPM - 1)
    if budget is not None and budget.limit_tokens:
        minute = (budget.limit_tokens, budget.remaining_tokens)
    else:
        minute = (_NOMINAL_TPM, _NOMINAL_TPM - min(tokens, _NOMINAL_TPM))
    return {
        "x-ratelimit-limit-req-minute": str(requests[0]),
        "x-ratelimit-remaining-req-minute": str(requests[1]),
        "x-ratelimit-limit-tokens-minute": str(minute[0]),
        "x-ratelimit-remaining-tokens-minute": str(minute[1]),
        "x-ratelimit-limit-tokens-month": str(_NOMINAL_MONTH),
        "x-ratelimit-remaining-tokens-month": str(_NOMINAL_MONTH - tokens),
        "x-ratelimit-tokens-query-cost": str(tokens),
    }

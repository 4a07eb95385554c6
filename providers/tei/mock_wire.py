"""TEI's answers and errors, for the mock.

Errors come in the shapes a TEI server (and what stands in front of it) sends:

* TEI's own `{"error", "error_type"}` with the status of its type (`JSON`);
* axum's plain-text rejections of a body it cannot read (`TEXT`): 400 for bad
  JSON, 415 for a wrong content type, 422 for a body of the wrong shape;
* empty bodies (`EMPTY`) for a refused key (401) and an unknown route (404/405);
* a gateway's for what TEI itself never says: a 402 when the account behind an
  Inference Endpoint cannot pay, a 403 for a token without access to it, 5xx pages.

TEI sends no `retry-after`, so none is sent here whatever the fault asks; the
fault `429` is TEI's only 429 (its queue is full, `overloaded`), and the fault
`overloaded` is an endpoint that is down or still starting (503 `unhealthy`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import ErrorFault, MockError

__all__ = [
    "EMPTY",
    "JSON",
    "TEXT",
    "compute_headers",
    "fault_error",
    "render_error",
    "tei_error",
]

# `MockError.type` says how the body is written; `MockError.code` holds TEI's
# `error_type` for `JSON` errors.
JSON: Final = "json"
TEXT: Final = "text"
EMPTY: Final = "empty"

_STATUS: Final = {
    "empty": 400,
    "validation": 413,
    "tokenizer": 422,
    "backend": 424,
    "overloaded": 429,
    "unhealthy": 503,
}
_GATEWAY: Final = {500: "", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def tei_error(error_type: str, message: str, kind: str = "bad_request") -> MockError:
    """One of TEI's own errors, with the status its `error_type` has."""
    return MockError(_STATUS[error_type], message, JSON, code=error_type, kind=kind)


def render_error(error: MockError) -> web.Response:
    if error.type == JSON:
        payload: dict[str, Any] = {"error": error.message}
        if error.code is not None:
            payload["error_type"] = error.code
        body = json.dumps(payload, separators=(",", ":")).encode()
        return web.Response(
            status=error.status, body=body, content_type="application/json", headers=error.headers
        )
    if error.type == TEXT and error.message:
        return web.Response(status=error.status, text=error.message, headers=error.headers)
    return web.Response(status=error.status, headers=error.headers)


def fault_error(fault: ErrorFault, max_input_length: int) -> MockError:
    """An injected error as a TEI server, or the gateway in front of it, says it."""
    kind = fault.kind
    if kind == "bad_request":
        return tei_error("empty", "`inputs` cannot be empty", kind)
    if kind == "unauthorized":
        return MockError(401, "", EMPTY, kind=kind)
    if kind == "forbidden":
        return MockError(403, "This token does not have access to the endpoint.", JSON, kind=kind)
    if kind == "not_found":
        return MockError(404, "", EMPTY, kind=kind)
    if kind == "rate_limited":
        return tei_error("overloaded", "Model is overloaded", kind)
    if kind == "quota":
        return MockError(
            402,
            "Payment required: the account behind this endpoint has no credits left.",
            JSON,
            kind=kind,
        )
    if kind == "context":
        return tei_error(
            "validation",
            f"`inputs` must have less than {max_input_length} tokens. "
            f"Given: {max_input_length + 1}",
            kind,
        )
    if kind == "overloaded":
        return tei_error("unhealthy", "unhealthy", kind)
    return MockError(fault.status, _GATEWAY.get(fault.status, ""), TEXT, kind=kind)


def compute_headers(started: float, characters: int, tokens: int) -> dict[str, str]:
    """The timing and size headers TEI puts on every answer (milliseconds)."""
    elapsed = str(round((time.monotonic() - started) * 1000))
    return {
        "x-compute-type": "gpu+optimized",
        "x-compute-time": elapsed,
        "x-compute-characters": str(characters),
        "x-compute-tokens": str(tokens),
        "x-total-time": elapsed,
        "x-tokenization-time": "0",
        "x-queue-time": "0",
        "x-inference-time": elapsed,
    }


def characters(texts: Sequence[str]) -> int:
    return sum(len(text) for text in texts)

"""The router's error answers, for the mock: one shape per kind of failure.

The router answers errors in the shape of whoever failed (see
`providers.huggingface.errors`), and the mock mixes them as the real thing does:

| fault | status | body |
|---|---|---|
| `400` | 400 | `{"error": {"message", "type", "param", "code"}}` (an OpenAI-compatible upstream) |
| `401` | 401 | `{"error": "Invalid credentials in Authorization header"}` + `X-Error-Message` |
| `403` | 403 | `{"error": "This authentication method does not have sufficient permissions …"}` |
| `404` | 404 | `{"error": {"message", "type", "param": "model", "code": "model_not_found"}}` |
| `429` | 429 | `{"error": "…"}` + `retry-after` (seconds, fractions kept) if the fault has one |
| `quota` | 402 | `{"error": "You have exceeded your monthly included credits …"}` |
| `context` | 422 | TGI's `{"error": "Input validation error: …", "error_type": "validation"}` |
| `overloaded` | 503 | `{"error": "Model … is currently loading", "estimated_time": 20.0}` |
| `500`, `503` | same | `{"error": "Internal Server Error"}`, `{"error": "Service Unavailable"}` |
| `502`, `504` | same | the gateway's HTML page |

Inside a stream an error is one `data:` event: TGI's `{"error", "error_type"}` for
what TGI says itself (`overloaded`, `validation`, `generation`), otherwise the
upstream's `{"error": {"message", "type", "code": <status>}}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import ErrorFault, MockError

__all__ = [
    "QUOTA_MESSAGE",
    "RouterError",
    "fault_error",
    "flat_error",
    "invalid_token",
    "model_not_found",
    "nested_error",
    "render_error",
    "stream_error_payload",
    "validation_error",
]

QUOTA_MESSAGE: Final = (
    "You have exceeded your monthly included credits for Inference Providers. "
    "Subscribe to PRO to get 20x more monthly included credits."
)
_NO_PERMISSION: Final = (
    "This authentication method does not have sufficient permissions to call "
    "Inference Providers on behalf of user mock-user"
)
_BAD_TOKEN: Final = "Invalid credentials in Authorization header"
_LOADING_SECONDS: Final = 20.0
_GATEWAY: Final[Mapping[int, str]] = {502: "502 Bad Gateway", 504: "504 Gateway Time-out"}
_SEPARATORS: Final = (",", ":")


class RouterError(MockError):
    """A `MockError` whose body is already written in one of the router's shapes."""

    def __init__(
        self,
        status: int,
        message: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        kind: str = "bad_request",
    ) -> None:
        super().__init__(status, message, "router", headers=headers, kind=kind)
        self.body = body
        self.content_type = content_type


def _json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=_SEPARATORS, ensure_ascii=False).encode()


def flat_error(
    status: int,
    message: str,
    *,
    kind: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> RouterError:
    """`{"error": "text", …extra}`: the router's own (and the Hub's, and TGI's) shape."""
    body = _json({"error": message, **extra})
    return RouterError(status, message, body, headers=headers, kind=kind)


def nested_error(
    status: int,
    message: str,
    *,
    kind: str,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> RouterError:
    """`{"error": {"message", "type", "param", "code"}}`: an OpenAI-compatible upstream's."""
    error = {"message": message, "type": type_, "param": param, "code": code}
    return RouterError(status, message, _json({"error": error}), kind=kind)


def validation_error(message: str, *, status: int = 422, kind: str = "bad_request") -> RouterError:
    """TGI's and TEI's refusal of a request it cannot serve."""
    return flat_error(status, message, kind=kind, error_type="validation")


def _gateway(status: int) -> RouterError:
    title = _GATEWAY[status]
    page = f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1>"
    page += "</center>\r\n</body>\r\n</html>\r\n"
    return RouterError(status, title, page.encode(), content_type="text/html", kind="gateway")


def render_error(error: MockError, request: web.Request) -> web.Response:
    if isinstance(error, RouterError):
        body, content_type = error.body, error.content_type
    else:
        # The OpenAI-worded checks of a chat request, relayed as their upstream says them.
        fields = {"message": error.message, "type": error.type}
        body = _json({"error": {**fields, "param": error.param, "code": error.code}})
        content_type = "application/json"
    return web.Response(
        status=error.status, body=body, content_type=content_type, headers=error.headers
    )


def invalid_token(presented: str) -> RouterError:
    if not presented:
        message = "You must provide an access token (Authorization: Bearer hf_...)."
        return flat_error(401, message, kind="unauthorized")
    headers = {"X-Error-Message": _BAD_TOKEN}
    return flat_error(401, _BAD_TOKEN, kind="unauthorized", headers=headers)


def model_not_found(model: str) -> RouterError:
    message = f"The requested model '{model}' does not exist."
    return nested_error(
        404, message, kind="not_found", type_="invalid_request_error", code="model_not_found"
    )


def _wait_headers(fault: ErrorFault) -> dict[str, str]:
    wait = fault.wait
    return {} if wait is None else {"retry-after": f"{wait:g}"}


def fault_error(fault: ErrorFault, model: str | None, context_window: int) -> RouterError:
    """An injected error as the router answers it (the table in the module docstring)."""
    kind = fault.kind
    if kind == "bad_request":
        return nested_error(
            400, "Invalid request (mock fault).", kind=kind, type_="invalid_request_error"
        )
    if kind == "unauthorized":
        return invalid_token("hf_mock-fault-token")
    if kind == "forbidden":
        return flat_error(403, _NO_PERMISSION, kind=kind)
    if kind == "not_found":
        return model_not_found(model or "unknown")
    if kind == "rate_limited":
        message = "Rate limit reached. You reached the request limit; please retry later."
        return flat_error(429, message, kind=kind, headers=_wait_headers(fault))
    if kind == "quota":
        return flat_error(402, QUOTA_MESSAGE, kind=kind)
    if kind == "context":
        return validation_error(_context_message(context_window, context_window + 1, 0))
    if kind == "overloaded":
        message = f"Model {model or 'unknown'} is currently loading"
        return flat_error(503, message, kind=kind, estimated_time=_LOADING_SECONDS)
    return server_error(fault.status)


def server_error(status: int) -> RouterError:
    if status in _GATEWAY:
        return _gateway(status)
    message = "Service Unavailable" if status == 503 else "Internal Server Error"
    return flat_error(status, message, kind="server")


def context_error(window: int, prompt: int, completion: int) -> RouterError:
    return validation_error(_context_message(window, prompt, completion))


def _context_message(window: int, prompt: int, completion: int) -> str:
    return (
        f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {window}. "
        f"Given: {prompt} `inputs` tokens and {completion} `max_new_tokens`"
    )


def stream_error_payload(fault: ErrorFault, model: str | None, window: int) -> dict[str, Any]:
    """The `data:` event that ends a stream with `fault`'s error."""
    kind = fault.kind
    if kind == "overloaded":
        return {"error": "Model is overloaded", "error_type": "overloaded"}
    if kind in ("bad_request", "context"):
        return {"error": _context_message(window, window + 1, 0), "error_type": "validation"}
    if kind == "server":
        message = "Request failed during generation: Server error: CUDA out of memory."
        return {"error": message, "error_type": "generation"}
    error = fault_error(fault, model, window)
    return {
        "error": {"message": error.message, "type": _UPSTREAM_TYPES[kind], "code": error.status}
    }


_UPSTREAM_TYPES: Final[Mapping[str, str]] = {
    "unauthorized": "authentication_error",
    "forbidden": "permission_error",
    "not_found": "not_found_error",
    "rate_limited": "rate_limit_error",
    "quota": "insufficient_quota",
}

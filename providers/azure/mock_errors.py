"""Azure OpenAI's error bodies and headers, for the mock.

Azure answers in three shapes, and the mock uses each where Azure does:

* its gateway's own `{"error": {"code": "401", "message": …}}` (numeric or named
  string codes) for keys, routes, deployments, throttling and outages;
* OpenAI's `{"error": {"message", "type", "param", "code"}}`, passed through from
  the model service, for request validation, context length and server errors;
* `{"statusCode": 401, "message": …}` for a refused Entra ID bearer token.

A content filter refusal is a 400 with `code: content_filter` and the verdict
per category in `innererror.content_filter_result`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import ErrorFault, MockError, bad_request, retry_headers
from providers.openai.mock_errors import context_error, error_body

__all__ = [
    "AzureError",
    "body_of",
    "deployment_not_found",
    "fault_error",
    "invalid_key",
    "invalid_token",
    "missing_key",
    "prompt_filtered",
    "rate_limited",
    "render_error",
    "resource_not_found",
]

_QUOTA_INCREASE: Final = (
    "Please go here: https://aka.ms/oai/quotaincrease if you would like to further "
    "increase the default rate limit."
)
_SERVER_ERROR: Final = (
    "The server had an error processing your request. Sorry about that! You can retry your "
    "request, or contact us through an Azure support request at: "
    "https://go.microsoft.com/fwlink/?linkid=2213926 if you keep seeing this error. (Please "
    "include the request ID {request_id} in your email.)"
)
_FILTER_POLICY: Final = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content "
    "management policy. Please modify your prompt and retry. To learn more about our "
    "content filtering policies please read our documentation: "
    "https://go.microsoft.com/fwlink/?linkid=2198766"
)
# Gateway failures: (code, message).
_GATEWAY: Final[Mapping[int, tuple[str, str]]] = {
    502: ("502", "Bad gateway."),
    503: ("503", "Service Unavailable."),
    504: ("504", "Gateway timeout."),
}


class AzureError(MockError):
    """An error whose body is given whole, in one of Azure's shapes."""

    def __init__(
        self,
        status: int,
        body: Mapping[str, Any],
        *,
        kind: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        inner = body.get("error")
        fields: Mapping[str, Any] = inner if isinstance(inner, dict) else body
        code = fields.get("code")
        super().__init__(
            status,
            str(fields.get("message", "")),
            str(fields.get("type") or ""),
            code if isinstance(code, str) else None,
            headers=headers,
            kind=kind,
        )
        self.body = dict(body)


def _gateway(status: int, code: str, message: str, kind: str) -> AzureError:
    return AzureError(status, {"error": {"code": code, "message": message}}, kind=kind)


def body_of(error: MockError) -> dict[str, Any]:
    """Any error's body as Azure says it; a plain `MockError` (the OpenAI mock's
    request checks) in OpenAI's shape, which Azure passes through."""
    return error.body if isinstance(error, AzureError) else error_body(error)


def render_error(error: MockError) -> web.Response:
    return web.Response(
        status=error.status,
        body=json.dumps(body_of(error), separators=(",", ":")).encode(),
        content_type="application/json",
        headers=error.headers,
    )


def missing_key() -> AzureError:
    return _gateway(
        401,
        "401",
        "Access denied due to missing subscription key. Make sure to include subscription "
        "key when making requests to an API.",
        "unauthorized",
    )


def invalid_key() -> AzureError:
    return _gateway(
        401,
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
        "provide a valid key for an active subscription and use a correct regional API "
        "endpoint for your resource.",
        "unauthorized",
    )


def invalid_token() -> AzureError:
    message = (
        "Unauthorized. Access token is missing, invalid, audience is incorrect "
        "(https://cognitiveservices.azure.com), or have expired."
    )
    return AzureError(401, {"statusCode": 401, "message": message}, kind="unauthorized")


def resource_not_found() -> AzureError:
    """A path or api-version Azure does not serve."""
    return _gateway(404, "404", "Resource not found", "not_found")


def deployment_not_found() -> AzureError:
    return _gateway(
        404,
        "DeploymentNotFound",
        "The API deployment for this resource does not exist. If you created the deployment "
        "within the last 5 minutes, please wait a moment and try again.",
        "not_found",
    )


def rate_limited(
    operation: str, api_version: str, seconds: str | None, headers: Mapping[str, str]
) -> AzureError:
    """A 429 for `operation` (`ChatCompletions_Create`, `Embeddings_Create`)."""
    wait = f" Please retry after {seconds} seconds." if seconds is not None else ""
    message = (
        f"Requests to the {operation} Operation under Azure OpenAI API version {api_version} "
        f"have exceeded call rate limit of your current OpenAI S0 pricing tier.{wait} "
        f"{_QUOTA_INCREASE}"
    )
    body = {"error": {"code": "429", "message": message}}
    return AzureError(429, body, kind="rate_limited", headers=headers)


def prompt_filtered(verdict: Mapping[str, Any]) -> AzureError:
    body = {
        "error": {
            "message": _FILTER_POLICY,
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": dict(verdict),
            },
        }
    }
    return AzureError(400, body, kind="bad_request")


def fault_error(
    fault: ErrorFault, operation: str, api_version: str, context_window: int
) -> MockError:
    """An injected error as Azure says it."""
    kind = fault.kind
    if kind == "rate_limited":
        seconds = fault.retry_after
        if seconds is None and fault.retry_after_ms is not None:
            seconds = str(max(1, round(float(fault.retry_after_ms) / 1000)))
        return rate_limited(operation, api_version, seconds, retry_headers(fault))
    if kind == "quota":
        # Billing, not throttling: Azure's OpenAI-compatible code for it.
        message = "You exceeded your current quota, please check your plan and billing details."
        body = {"error": {"code": "insufficient_quota", "message": message}}
        return AzureError(429, body, kind=kind)
    if kind == "unauthorized":
        return invalid_key()
    if kind == "forbidden":
        return _gateway(403, "403", "Access denied due to Virtual Network/Firewall rules.", kind)
    if kind == "not_found":
        return deployment_not_found()
    if kind == "context":
        return context_error(context_window, context_window + 1, None)
    if kind == "overloaded":
        return _gateway(
            503,
            "ServiceUnavailable",
            "The service is temporarily unable to process your request. Please try again later.",
            kind,
        )
    if kind == "bad_request":
        return bad_request("Invalid request (mock fault).")
    return server_error(fault.status)


def server_error(status: int) -> MockError:
    if status in _GATEWAY:
        code, message = _GATEWAY[status]
        return _gateway(status, code, message, "server")
    message = _SERVER_ERROR.format(request_id=uuid.uuid4())
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return AzureError(status, body, kind="server")

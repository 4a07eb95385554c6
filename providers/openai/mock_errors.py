"""OpenAI's error bodies and rate-limit headers, for the mock.

Every error is `{"error":{"message","type","param","code"}}` with the status,
type and code OpenAI uses for that failure (the gateway errors in front of it
carry a numeric `code` and a `cf_…` type, as Cloudflare's do). Rate limits are
reported in `x-ratelimit-*` headers on every chat and embeddings answer, with
reset times written as Go durations (`6m0s`, `1s`, `120ms`), as OpenAI does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import ErrorFault, MockError, bad_request, mask_key, retry_headers
from providers.mock.ratelimit import Budget

__all__ = [
    "context_error",
    "duration",
    "error_body",
    "fault_error",
    "invalid_key_error",
    "model_not_found",
    "rate_limit_error",
    "ratelimit_headers",
    "render_error",
    "server_error",
]

_ORGANIZATION: Final = "org-mock"
_LIMITS_URL: Final = "Visit https://platform.openai.com/account/rate-limits to learn more."
_QUOTA: Final = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
# What the mock reports when it enforces no budget: a large account's limits.
_NOMINAL_RPM: Final = 10_000
_NOMINAL_TPM: Final = 30_000_000
# Gateway failures: (message, type) of the JSON body with a numeric `code`.
_GATEWAY: Final[Mapping[int, tuple[str, str]]] = {
    502: ("Bad gateway.", "cf_bad_gateway"),
    503: ("Service Unavailable.", "cf_service_unavailable"),
    504: ("Gateway timeout.", "cf_gateway_timeout"),
}


def error_body(error: MockError) -> dict[str, Any]:
    code: str | int | None = error.code
    if error.kind == "gateway":
        code = error.status
    return {
        "error": {"message": error.message, "type": error.type, "param": error.param, "code": code}
    }


def render_error(error: MockError) -> web.Response:
    return web.Response(
        status=error.status,
        body=json.dumps(error_body(error), separators=(",", ":")).encode(),
        content_type="application/json",
        headers=error.headers,
    )


def invalid_key_error(presented: str | None) -> MockError:
    if not presented:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or "
            "as the password field (with blank username) if you're accessing the API from "
            "your browser and are prompted for a username and password. You can obtain an API "
            "key from https://platform.openai.com/account/api-keys."
        )
        return MockError(401, message, "invalid_request_error", kind="unauthorized")
    message = (
        f"Incorrect API key provided: {mask_key(presented)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )
    return MockError(401, message, "invalid_request_error", "invalid_api_key", kind="unauthorized")


def model_not_found(model: str | None) -> MockError:
    message = f"The model `{model}` does not exist or you do not have access to it."
    return MockError(404, message, "invalid_request_error", "model_not_found", kind="not_found")


def context_error(window: int, prompt: int, completion: int | None) -> MockError:
    head = f"This model's maximum context length is {window} tokens. However, "
    if completion is None:
        message = (
            f"{head}your messages resulted in {prompt} tokens. Please reduce the length of "
            "the messages."
        )
    else:
        message = (
            f"{head}you requested {prompt + completion} tokens ({prompt} in the messages, "
            f"{completion} in the completion). Please reduce the length of the messages or "
            "completion."
        )
    return MockError(
        400, message, "invalid_request_error", "context_length_exceeded", "messages", kind="context"
    )


def rate_limit_error(model: str, budget: Budget, tokens: int) -> MockError:
    """The 429 for a request the budget refused, naming the budget that ran out."""
    if budget.limit_requests and budget.remaining_requests < 1:
        what, unit, limit, used, asked = (
            "requests",
            "requests per min (RPM)",
            budget.limit_requests,
            budget.limit_requests - budget.remaining_requests,
            1,
        )
    else:
        what, unit, limit, used, asked = (
            "tokens",
            "tokens per min (TPM)",
            budget.limit_tokens,
            budget.limit_tokens - budget.remaining_tokens,
            tokens,
        )
    message = (
        f"Rate limit reached for {model} in organization {_ORGANIZATION} on {unit}: "
        f"Limit {limit}, Used {used}, Requested {asked}. Please try again in "
        f"{duration(budget.retry_after)}. {_LIMITS_URL}"
    )
    headers = {
        "retry-after": str(max(1, math.ceil(budget.retry_after))),
        "retry-after-ms": str(max(1, math.ceil(budget.retry_after * 1000))),
    }
    return MockError(
        429, message, what, "rate_limit_exceeded", headers=headers, kind="rate_limited"
    )


def fault_error(fault: ErrorFault, model: str | None, context_window: int) -> MockError:
    """An injected error as OpenAI says it."""
    kind = fault.kind
    if kind == "quota":
        return MockError(429, _QUOTA, "insufficient_quota", "insufficient_quota", kind=kind)
    if kind == "rate_limited":
        message = (
            f"Rate limit reached for {model or 'requests'} in organization {_ORGANIZATION} on "
            f"requests per min (RPM): Limit 3, Used 3, Requested 1. {_LIMITS_URL}"
        )
        return MockError(
            429, message, "requests", "rate_limit_exceeded", headers=retry_headers(fault), kind=kind
        )
    if kind == "unauthorized":
        return invalid_key_error("mock-fault-key")
    if kind == "forbidden":
        return MockError(
            403,
            "Country, region, or territory not supported",
            "request_forbidden",
            "unsupported_country_region_territory",
            kind=kind,
        )
    if kind == "not_found":
        return model_not_found(model)
    if kind == "context":
        return context_error(context_window, context_window + 1, None)
    if kind == "overloaded":
        return MockError(
            503,
            "The engine is currently overloaded, please try again later.",
            "server_error",
            kind=kind,
        )
    if kind == "bad_request":
        return bad_request("Invalid request (mock fault).")
    return server_error(fault.status)


def server_error(status: int) -> MockError:
    if status in _GATEWAY:
        message, type_ = _GATEWAY[status]
        return MockError(status, message, type_, kind="gateway")
    return MockError(
        status,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        kind="server",
    )


def ratelimit_headers(budget: Budget | None, tokens: int) -> dict[str, str]:
    """`x-ratelimit-*` for one answer; a budget the mock does not enforce is reported as
    a large account's nominal one."""
    if budget is not None and budget.limit_requests:
        requests = (budget.limit_requests, budget.remaining_requests, budget.reset_requests)
    else:
        requests = (_NOMINAL_RPM, _NOMINAL_RPM - 1, 60.0 / _NOMINAL_RPM)
    if budget is not None and budget.limit_tokens:
        tokens_left = (budget.limit_tokens, budget.remaining_tokens, budget.reset_tokens)
    else:
        spent = min(tokens, _NOMINAL_TPM)
        tokens_left = (_NOMINAL_TPM, _NOMINAL_TPM - spent, spent * 60.0 / _NOMINAL_TPM)
    headers: dict[str, str] = {}
    for unit, (limit, remaining, reset) in (("requests", requests), ("tokens", tokens_left)):
        headers[f"x-ratelimit-limit-{unit}"] = str(limit)
        headers[f"x-ratelimit-remaining-{unit}"] = str(remaining)
        headers[f"x-ratelimit-reset-{unit}"] = duration(reset)
    return headers


def duration(seconds: float) -> str:
    """`seconds` the way Go prints a duration at millisecond precision: 6m0s, 1.5s, 120ms."""
    millis = max(round(seconds * 1000), 0)
    if millis < 1000:
        return f"{millis}ms" if millis else "0s"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs

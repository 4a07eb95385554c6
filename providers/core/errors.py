"""Provider error bodies → `contracts.errors`, driven by one table per provider.

Every provider says what went wrong in two places: the HTTP status and a body
whose `type` and `code` fields have meant different things over the years (an
OpenAI 429 is a rate limit unless its code is `insufficient_quota`; Anthropic's
529 is `overloaded_error`). An adapter states its provider's vocabulary once, in
an `ErrorTable`; the parsing of bodies of any shape, the scrubbing of secrets and
the choice of exception class live here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from contracts.errors import (
    BadRequest,
    FleetError,
    Forbidden,
    InternalError,
    NotFound,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from providers.core.http import scrub, truncate
from providers.core.types import Secret
from providers.retry import retry_after_from_headers

__all__ = ["ErrorInfo", "ErrorTable", "error_info", "parse_error_body"]

# Headers that carry the provider's id for one request, most specific first.
REQUEST_ID_HEADERS = ("x-request-id", "request-id", "apim-request-id", "x-amzn-requestid")


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What an error body says, whatever its shape."""

    message: str
    code: str | None = None  # string codes only (OpenAI `error.code`)
    type: str | None = None  # `error.type`, or Google's `status`
    request_id: str | None = None  # when the body carries it (Anthropic)


@dataclass(frozen=True, slots=True)
class ErrorTable:
    """One provider's error vocabulary.

    `statuses` gives the HTTP status an error `code` or `type` stands for: errors
    inside a stream arrive without one, and some servers answer 200 with an error
    body. `classes` names codes or types whose meaning is narrower than their
    status says (a quota error inside a 429, a content filter inside a 400).
    Codes are looked up before types, the more specific first.
    """

    statuses: Mapping[str, int] = field(default_factory=dict)
    classes: Mapping[str, type[FleetError]] = field(default_factory=dict)

    def from_response(
        self, provider: str, status: int, headers: Mapping[str, str], body: bytes, secret: Secret
    ) -> FleetError:
        """The exception for a non-success HTTP response."""
        return self.from_info(
            provider, status, parse_error_body(body), secret, headers=headers, context=None
        )

    def from_payload(
        self,
        provider: str,
        payload: Any,
        secret: Secret,
        *,
        context: str = "stream error",
    ) -> FleetError:
        """The exception for an error object met without a trustworthy HTTP status."""
        info = error_info(payload)
        status = self._status_of(info) or _numeric_code(payload) or 500
        return self.from_info(provider, status, info, secret, context=context)

    def from_info(
        self,
        provider: str,
        status: int,
        info: ErrorInfo,
        secret: Secret,
        *,
        headers: Mapping[str, str] | None = None,
        context: str | None = None,
    ) -> FleetError:
        headers = headers if headers is not None else {}
        label = info.code or info.type
        # Scrub before truncating: a cut could leave a key prefix that no longer matches.
        detail = truncate(scrub(" ".join(info.message.split()), secret))
        head = f"{provider}: {context or f'HTTP {status}'}" + (f" {label}" if label else "")
        message = scrub(f"{head}: {detail}" if detail else head, secret)
        error = self._classify(status, info, message, headers)
        request_id = request_id_of(headers) or info.request_id
        if request_id:
            error.provider_request_id = truncate(scrub(request_id, secret))
        return error

    def _status_of(self, info: ErrorInfo) -> int | None:
        for key in (info.code, info.type):
            if key is not None and key in self.statuses:
                return self.statuses[key]
        return None

    def _class_of(self, info: ErrorInfo) -> type[FleetError] | None:
        for key in (info.code, info.type):
            if key is not None and key in self.classes:
                return self.classes[key]
        return None

    def _classify(
        self, status: int, info: ErrorInfo, message: str, headers: Mapping[str, str]
    ) -> FleetError:
        cls = self._class_of(info) or _class_for_status(status)
        # Billing, not throttling: never retried, whatever the headers say.
        retryable = False if cls is QuotaExceeded else _should_retry(headers)
        error = cls(message, provider_status=status, retryable=retryable)
        if error.retryable:
            # A wait is advice for the next attempt: an error not retried has none.
            error.retry_after = retry_after_from_headers(headers)
        return error


def _class_for_status(status: int) -> type[FleetError]:
    if status in (400, 413, 422):
        return BadRequest
    if status == 429:
        return RateLimited
    if status >= 500 or status == 409:
        return ProviderUnavailable
    return _SIMPLE_STATUS.get(status, InternalError)


_SIMPLE_STATUS: dict[int, type[FleetError]] = {
    401: Unauthorized,
    402: QuotaExceeded,
    403: Forbidden,
    404: NotFound,
    408: ProviderTimeout,
}


def _should_retry(headers: Mapping[str, str]) -> bool | None:
    value = headers.get("x-should-retry", "").strip().lower()
    return {"true": True, "false": False}.get(value)


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The provider's id for a response (x-request-id and the like), if it sent one."""
    for name in REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None


def _numeric_code(payload: Any) -> int | None:
    """A status hidden in the body: vLLM's `code: 400`, Azure's `code: "429"`."""
    error = payload.get("error", payload) if isinstance(payload, dict) else None
    raw = error.get("code") if isinstance(error, dict) else None
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit()):
        value = int(raw)
        return value if 400 <= value <= 599 else None
    return None


def parse_error_body(body: bytes) -> ErrorInfo:
    """Parse an error body: `{"error":{…}}`, `{"error":"text"}`, `{"detail":…}`,
    `{"message":…}`, a list wrapping one of those, or plain text."""
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    if payload is None:
        return ErrorInfo(message=" ".join(body.decode("utf-8", "replace").split()))
    return error_info(payload)


def error_info(payload: Any) -> ErrorInfo:
    """`ErrorInfo` from an already-decoded JSON error payload."""
    if isinstance(payload, list) and payload:
        payload = payload[0]  # Gemini-style `[{"error": {...}}]`
    if not isinstance(payload, dict):
        return ErrorInfo(message=_text(payload))
    request_id = _opt_str(payload.get("request_id"))
    error = payload.get("error")
    if isinstance(error, dict):
        return _info_from_object(error, request_id)
    if isinstance(error, str):
        return ErrorInfo(
            message=error, type=_opt_str(payload.get("error_type")), request_id=request_id
        )
    if "detail" in payload:
        return ErrorInfo(
            message=_text(payload["detail"]),
            type=_opt_str(payload.get("title")),
            request_id=request_id,
        )
    if "message" in payload:
        return _info_from_object(payload, request_id)
    return ErrorInfo(message=_text(payload), request_id=request_id)


def _info_from_object(obj: Mapping[str, Any], request_id: str | None) -> ErrorInfo:
    return ErrorInfo(
        message=_text(obj.get("message", "")),
        code=_opt_str(obj.get("code")),
        type=_opt_str(obj.get("type")) or _opt_str(obj.get("status")),
        request_id=request_id,
    )


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)

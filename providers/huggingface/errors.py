"""The Hugging Face router's error vocabulary.

The router answers in whichever shape the upstream serving the model uses:
`{"error": "text"}` (the router itself, the Hub), `{"error": "text", "error_type":
"validation"}` (TGI and TEI), `{"error": {"message", "type", "code"}}` (OpenAI-compatible
providers), an HTML page from a gateway, or only an `X-Error-Message` header. What
the statuses mean:

* 401: a wrong token. 402: the account's credits ran out: `QuotaExceeded`, never
  retried. 403: usually a fine-grained token without the "Make calls to Inference
  Providers" permission, which the error then says; also gated models.
* 404: the model, or the provider named by its suffix. A `model_not_supported`
  code (no enabled provider serves the model) is `NotFound` whatever its status.
* 422: TGI's validation (a prompt past the context window among them).
* 424: TGI's generation error: retryable, as it is mostly the server's state (memory).
* 429: throttling, with `retry-after` when sent.
* 503: the model is loading (or the service is down): retryable, waiting for
  `retry-after` or else the body's `estimated_time`.

Inside a stream, errors arrive as `data: {"error": …}` events in any of the JSON
shapes above; `error_type` and `type` give them the status they stand for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from contracts.errors import FleetError, Forbidden, NotFound, ProviderUnavailable
from providers.core.errors import ErrorInfo, ErrorTable, parse_error_body
from providers.core.http import scrub, truncate
from providers.core.types import Secret
from providers.openai.errors import ERRORS as OPENAI_ERRORS

__all__ = ["ERRORS", "NO_INFERENCE_PERMISSION", "HuggingFaceErrorTable"]

NO_INFERENCE_PERMISSION: Final = (
    "the token lacks the 'Make calls to Inference Providers' permission "
    "(fine-grained tokens need it: huggingface.co/settings/tokens)"
)
_PERMISSION_WORDS: Final = ("sufficient permissions", "inference providers")
_TITLE: Final = re.compile(rb"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TRACE_HEADER: Final = "x-amzn-trace-id"


class HuggingFaceErrorTable(ErrorTable):
    """OpenAI's table with TGI's and the router's words, and the router's extras:
    gateway pages, header-only messages, `estimated_time`, the 403 that means a
    missing permission, and `X-Amzn-Trace-Id` as the request id."""

    def from_response(
        self, provider: str, status: int, headers: Mapping[str, str], body: bytes, secret: Secret
    ) -> FleetError:
        info = _error_info(headers, body)
        error = self.from_info(provider, status, info, secret, headers=headers)
        if error.provider_request_id is None and headers.get(_TRACE_HEADER):
            error.provider_request_id = truncate(scrub(headers[_TRACE_HEADER], secret))
        if error.retryable and error.retry_after is None:
            error.retry_after = _estimated_time(body)
        if isinstance(error, Forbidden) and _lacks_permission(info.message):
            detail = truncate(scrub(" ".join(info.message.split()), secret))
            head = f"{provider}: HTTP {status}: {NO_INFERENCE_PERMISSION}"
            return _reworded(error, f"{head}: {detail}")
        return error


def _error_info(headers: Mapping[str, str], body: bytes) -> ErrorInfo:
    stripped = body.lstrip()
    if stripped[:1] == b"<":
        # A gateway's HTML page: its title says it all ("502 Bad Gateway").
        title = _TITLE.search(stripped)
        text = title.group(1).decode("utf-8", "replace") if title else ""
        return ErrorInfo(message=" ".join(text.split()))
    info = parse_error_body(body)
    if not info.message:
        return ErrorInfo(message=headers.get("x-error-message", ""), code=info.code, type=info.type)
    return info


def _estimated_time(body: bytes) -> float | None:
    """HF Inference's `{"error": "Model … is currently loading", "estimated_time": 20.0}`."""
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return None
    value = payload.get("estimated_time") if isinstance(payload, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 3600:
        return float(value)
    return None


def _lacks_permission(message: str) -> bool:
    lowered = message.lower()
    return all(words in lowered for words in _PERMISSION_WORDS)


def _reworded(error: FleetError, message: str) -> FleetError:
    return type(error)(
        message,
        provider_status=error.provider_status,
        retryable=error.retryable,
        retry_after=error.retry_after,
        provider_request_id=error.provider_request_id,
    )


ERRORS = HuggingFaceErrorTable(
    statuses={
        **OPENAI_ERRORS.statuses,
        # TGI's `error_type`s (lower case) and TEI's (capitalised).
        "validation": 422,
        "Validation": 422,
        "Tokenizer": 422,
        "Empty": 400,
        "generation": 424,
        "incomplete_generation": 500,
        "overloaded": 503,
        "Overloaded": 503,
        "Backend": 500,
        "Unhealthy": 503,
        # The router's codes.
        "model_not_supported": 400,
    },
    classes={
        **OPENAI_ERRORS.classes,
        "generation": ProviderUnavailable,
        "incomplete_generation": ProviderUnavailable,
        "model_not_supported": NotFound,
    },
)

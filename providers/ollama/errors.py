"""Ollama's errors: `{"error": "<text>"}` and nothing more.

Ollama's bodies carry no code or type, only a sentence, and an error inside a
stream comes as a line `{"error": "..."}` with no HTTP status at all. So the
few sentences whose meaning matters are recognised by their wording and given a
code here, which the `ErrorTable` then reads as for any other provider:

* `model "x" not found, try pulling it first` (404): `NotFound`;
* ollama.com's `you (...) have reached your session/weekly usage limit, upgrade
  for higher limits` (429): the plan's allowance is spent, `QuotaExceeded`
  (never retried: it resets in hours or days), unlike a plain 429 throttle;
* `server busy, please try again.  maximum pending requests exceeded` (503);
* `... exceeds the context length` (400);
* `unauthorized` (401, ollama.com with a wrong key).

Anything else is classified by its HTTP status (500 for an in-stream line).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from contracts.errors import FleetError, NotFound, QuotaExceeded
from providers.core.errors import ErrorInfo, ErrorTable, error_info, parse_error_body
from providers.core.types import Secret

__all__ = ["ERRORS", "OllamaErrorTable", "code_of"]

# (words in the lower-cased message, the code they stand for), most specific first.
_WORDINGS: Final = (
    ("usage limit", "usage_limit"),
    ("try pulling it first", "model_not_found"),
    ("too many requests", "rate_limited"),
    ("rate limit", "rate_limited"),
    ("server busy", "server_busy"),
    ("context length", "context_length_exceeded"),
    ("unauthorized", "unauthorized"),
)


def code_of(message: str) -> str | None:
    """The code Ollama's wording stands for, if it is one the fleet tells apart."""
    text = message.lower()
    return next((code for words, code in _WORDINGS if words in text), None)


def _coded(info: ErrorInfo) -> ErrorInfo:
    if info.code is not None:
        return info
    return replace(info, code=code_of(info.message))


@dataclass(frozen=True, slots=True)
class OllamaErrorTable(ErrorTable):
    """An `ErrorTable` that first gives Ollama's sentences their codes."""

    def from_response(
        self, provider: str, status: int, headers: Mapping[str, str], body: bytes, secret: Secret
    ) -> FleetError:
        info = _coded(parse_error_body(body))
        return self.from_info(provider, status, info, secret, headers=headers, context=None)

    def from_payload(
        self, provider: str, payload: Any, secret: Secret, *, context: str = "stream error"
    ) -> FleetError:
        info = _coded(error_info(payload))
        status = self.statuses.get(info.code, 500) if info.code is not None else 500
        return self.from_info(provider, status, info, secret, context=context)


ERRORS: Final = OllamaErrorTable(
    statuses={
        "usage_limit": 429,
        "model_not_found": 404,
        "rate_limited": 429,
        "server_busy": 503,
        "context_length_exceeded": 400,
        "unauthorized": 401,
    },
    classes={"usage_limit": QuotaExceeded, "model_not_found": NotFound},
)

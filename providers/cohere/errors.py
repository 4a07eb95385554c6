"""Cohere's error vocabulary: a status and a sentence, nothing else.

Every Cohere error body is flat, `{"id": "<request id>", "message": "…"}`: no code,
no type. What the status alone does not say is in the wording, so `ERRORS` reads
the message too and names what it found (the label shown in the fleet's message):

* `trial_key_monthly_limit`: a 429 saying "You are using a Trial key, which is
  limited to 1000 API calls / month" (or a 402/429 "Maximum billing reached"). A
  month does not pass inside any retry, so it is `QuotaExceeded`, never retried;
  the per-minute trial limit ("… API calls / minute") stays a `RateLimited`.
* `invalid_token` (498), `request_cancelled` (499: the server saw the request as
  abandoned, worth another try), `not_implemented` (501: a feature the model or
  endpoint lacks, which no retry adds).
* Inside a stream there is no status at all: a `message-end` with
  `finish_reason: ERROR` carries only `delta.error`, a sentence. Its wording gives
  the status (`too many tokens: …` and `invalid request: …` are 400s, the rate-limit
  sentences 429s, the API-key ones 401s); anything else is the internal error
  Cohere's docs say `ERROR` means (500, retried).

The body's `id` is Cohere's request id (`provider_request_id`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from contracts.errors import (
    BadRequest,
    FleetError,
    ProviderUnavailable,
    QuotaExceeded,
    Unauthorized,
)
from providers.core.errors import ErrorInfo, ErrorTable, error_info, parse_error_body
from providers.core.types import Secret

__all__ = ["ERRORS", "CohereErrorTable", "label_for"]

# Labels for what Cohere's wording says, most specific first (see the docstring).
_WORDING: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (re.compile(r"API calls\s*/\s*month|Maximum billing reached", re.I), "trial_key_monthly_limit"),
    # Validation prefixes before the rate-limit words a sentence may quote.
    (re.compile(r"^\s*too many tokens:", re.I), "too_many_tokens"),
    (re.compile(r"^\s*invalid request:", re.I), "invalid_request"),
    (
        re.compile(
            r"per minute request limit|API calls\s*/\s*minute|rate limit|"
            r"please wait and try again later",
            re.I,
        ),
        "rate_limited",
    ),
    (
        re.compile(r"invalid api token|no api key supplied|api key has expired", re.I),
        "invalid_api_token",
    ),
    (re.compile(r"request cancelled", re.I), "request_cancelled"),
)
_BY_STATUS: Final[Mapping[int, str]] = {
    498: "invalid_token",
    499: "request_cancelled",
    501: "not_implemented",
}


def label_for(message: str, status: int | None = None) -> str | None:
    """What a Cohere error is, from its wording first and its status second."""
    for pattern, label in _WORDING:
        if pattern.search(message):
            return label
    return _BY_STATUS.get(status) if status is not None else None


@dataclass(frozen=True, slots=True)
class CohereErrorTable(ErrorTable):
    """`ErrorTable` reading Cohere's flat bodies (see the module docstring)."""

    def from_response(
        self, provider: str, status: int, headers: Mapping[str, str], body: bytes, secret: Secret
    ) -> FleetError:
        info = _with_request_id(parse_error_body(body), body)
        info = replace(info, code=label_for(info.message, status))
        return self.from_info(provider, status, info, secret, headers=headers)

    def from_payload(
        self,
        provider: str,
        payload: Any,
        secret: Secret,
        *,
        context: str = "stream error",
    ) -> FleetError:
        info = error_info(payload)
        info = replace(info, code=label_for(info.message))
        status = self._status_of(info) or 500
        return self.from_info(provider, status, info, secret, context=context)


def _with_request_id(info: ErrorInfo, body: bytes) -> ErrorInfo:
    if info.request_id is not None:
        return info
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        return info
    found = payload.get("id") if isinstance(payload, dict) else None
    return replace(info, request_id=found) if isinstance(found, str) and found else info


ERRORS: Final = CohereErrorTable(
    statuses={
        "trial_key_monthly_limit": 429,
        "rate_limited": 429,
        "too_many_tokens": 400,
        "invalid_request": 400,
        "invalid_api_token": 401,
        "invalid_token": 498,
        "request_cancelled": 499,
        "not_implemented": 501,
    },
    classes={
        "trial_key_monthly_limit": QuotaExceeded,
        "invalid_api_token": Unauthorized,
        "invalid_token": Unauthorized,
        "request_cancelled": ProviderUnavailable,
        "not_implemented": BadRequest,
    },
)

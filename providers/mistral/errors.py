"""Mistral's error vocabulary, and the two signals its bodies leave out.

Mistral answers errors in several shapes, all read by `providers.core.errors`:
`{"object":"error","message","type","param","code"}` (newer ones add
`raw_status_code`), FastAPI's `{"detail": …}` (401 `Unauthorized`, 422
validation lists) and the gateway's `{"message":"Unauthorized","request_id"}`.
Codes are numeric strings (`"1300"` rate limited, `"1500"` invalid model,
`"3505"` capacity, `"3280"` a bad tool-call id, `"3210"` an embeddings batch too
large); types say the same in words and older bodies send only the type.

What the body does not say:

* A spent monthly budget is the same 429 `rate_limited` body as a per-minute
  limit; only `x-ratelimit-remaining-tokens-month: 0` (or the older
  `x-ratelimitbysize-remaining-month: 0`) tells them apart. That one is
  `QuotaExceeded`, never retried: waiting a minute does not help.
* The request's id travels as `mistral-correlation-id` (and Kong's
  `x-kong-request-id`), which the shared table does not look for.
* A 429 without `Retry-After` may still say when its window resets, in the
  older gateway's `ratelimitbysize-reset` (seconds; seen in reports, not
  documented): that is the wait then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from contracts.errors import (
    FleetError,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
)
from providers.core.errors import ErrorTable, error_info, parse_error_body
from providers.core.http import scrub, truncate
from providers.core.types import Secret

__all__ = ["ERRORS", "MONTH_HEADERS", "MistralErrorTable", "monthly_budget_spent"]

# Headers saying how much of the monthly budget is left, newest spelling first.
MONTH_HEADERS: Final = (
    "x-ratelimit-remaining-tokens-month",
    "x-ratelimit-remaining-req-month",
    "x-ratelimitbysize-remaining-month",
)
_REQUEST_ID_HEADERS: Final = ("mistral-correlation-id", "x-kong-request-id")
_RESET_HEADER: Final = "ratelimitbysize-reset"
# A reset further away than this is a monthly window, not a wait worth taking.
_MAX_RESET: Final = 3600.0
_MONTHLY_QUOTA: Final = "monthly_quota_exhausted"


def monthly_budget_spent(headers: Mapping[str, str]) -> bool:
    """Whether a 429's headers say the month's budget, not the minute's, ran out."""
    for name in MONTH_HEADERS:
        value = headers.get(name)
        if value is not None and value.strip().lstrip("-").isdigit() and int(value) <= 0:
            return True
    return False


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds <= _MAX_RESET else None


@dataclass(frozen=True, slots=True)
class MistralErrorTable(ErrorTable):
    """`ErrorTable` reading Mistral's headers too: the monthly budget and request ids."""

    def from_response(
        self, provider: str, status: int, headers: Mapping[str, str], body: bytes, secret: Secret
    ) -> FleetError:
        info = parse_error_body(body)
        if status == 429 and monthly_budget_spent(headers):
            # The body is the per-minute limit's; the label says what really happened.
            info = replace(info, code=_MONTHLY_QUOTA)
        error = self.from_info(provider, status, info, secret, headers=headers, context=None)
        if isinstance(error, RateLimited) and error.retryable and error.retry_after is None:
            error.retry_after = _seconds(headers.get(_RESET_HEADER))
        if error.provider_request_id is None:
            request_id = next((v for h in _REQUEST_ID_HEADERS if (v := headers.get(h))), None)
            if request_id:
                error.provider_request_id = truncate(scrub(request_id, secret))
        return error

    def from_stream_payload(self, provider: str, payload: Any, secret: Secret) -> FleetError:
        """An error object written into a 200 stream; its `raw_status_code` (newer
        bodies) or its code and type give the status it stands for."""
        info = error_info(payload)
        raw = payload.get("raw_status_code") if isinstance(payload, dict) else None
        status = raw if isinstance(raw, int) and 400 <= raw <= 599 else None
        if status is None:
            return self.from_payload(provider, payload, secret)
        return self.from_info(provider, status, info, secret, context="stream error")


ERRORS: Final = MistralErrorTable(
    statuses={
        # codes
        "1300": 429,  # rate limited
        "1500": 400,  # invalid model
        "1910": 403,  # model not in the subscription tier
        "3210": 400,  # embeddings: too many inputs or tokens in one request
        "3280": 400,  # a tool-call id that is not 9 letters and digits
        "3505": 429,  # service tier capacity exceeded
        _MONTHLY_QUOTA: 429,
        # types
        "invalid_request_error": 400,
        "invalid_request_prompt": 400,
        "invalid_request_message": 400,
        "invalid_function_call": 400,
        "invalid_model": 400,
        "authentication_error": 401,
        "tier_not_allowed": 403,
        "rate_limited": 429,
        "rate_limit_error": 429,
        "rate_limit_exceeded": 429,
        "service_tier_capacity_exceeded": 429,
        "server_error": 500,
        "internal_server_error": 500,
    },
    classes={
        # Mistral answers a model it does not serve with a 400.
        "1500": NotFound,
        "invalid_model": NotFound,
        # Capacity is Mistral's shortage, not the caller's budget: worth retrying,
        # with backoff, like any overloaded server.
        "3505": ProviderUnavailable,
        "service_tier_capacity_exceeded": ProviderUnavailable,
        _MONTHLY_QUOTA: QuotaExceeded,
    },
)

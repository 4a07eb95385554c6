"""Replicate's error vocabulary: RFC 7807 problem bodies, failed predictions, stream errors.

HTTP errors are problem details (`application/problem+json`): `{"type", "title",
"detail", "status", "instance"}`, a 422 adding `invalid_fields`. The shared parser
reads `detail` as the message and `title` as the type, so titles whose meaning is
narrower than their status are named here: a 422 "Invalid version or not permitted"
is the answer for a version id that does not exist (or is not yours), i.e. an
unknown model. Everything else is classed by its status: 401, 402 (credit:
`QuotaExceeded`), 403, 404, 422 (`BadRequest`), 429 (`RateLimited`, with
`Retry-After`, or the body's `retry_after` when the header is missing), 5xx.

A prediction that ran and `failed` carries only an `error` string (the SDK's
`ModelError`): the model's own failure, permanent, unless it quotes one of
Replicate's documented error codes (`E####`) that says to try again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from contracts.errors import (
    BadRequest,
    FleetError,
    InternalError,
    NotFound,
    ProviderUnavailable,
)
from providers.core.errors import ErrorTable, error_info
from providers.core.http import scrub, truncate
from providers.core.types import Secret

__all__ = [
    "ERRORS",
    "canceled_error",
    "failed_prediction_error",
    "retry_after_in_body",
    "stream_error",
]

ERRORS = ErrorTable(
    statuses={"Invalid version or not permitted": 404},
    classes={"Invalid version or not permitted": NotFound},
)

# Replicate's documented prediction error codes (docs/reference/error-codes) that
# change what the caller should do; any other failure is the model's and permanent.
_MODEL_CODES: Final[Mapping[str, type[FleetError]]] = {
    "E1000": ProviderUnavailable,  # unknown error: "try retrying your prediction"
    "E6716": ProviderUnavailable,  # timeout starting the prediction (load, cold boot)
    "E1001": BadRequest,  # out of memory: the input is too large for the model
}
_CODE: Final = re.compile(r"\bE\d{4}\b")


def failed_prediction_error(
    provider: str, prediction: Mapping[str, Any], secret: Secret
) -> FleetError:
    """The exception for a prediction whose status is `failed`."""
    raw = prediction.get("error")
    text = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    detail = truncate(scrub(" ".join(text.split()), secret))
    found = _CODE.search(text)
    code = found.group(0) if found else None
    cls = _MODEL_CODES.get(code, InternalError) if code else InternalError
    label = f" {code}" if code else ""
    message = f"{provider}: prediction failed{label}" + (f": {detail}" if detail else "")
    return cls(scrub(message, secret), provider_request_id=_prediction_id(prediction))


def canceled_error(provider: str, prediction: Mapping[str, Any]) -> FleetError:
    """A prediction canceled by someone else (the dashboard, another client, the
    platform). Not the fleet's `Cancelled`, which means the producer withdrew the job
    and rules out fallbacks: another target may well answer this one."""
    return InternalError(
        f"{provider}: prediction was canceled", provider_request_id=_prediction_id(prediction)
    )


def stream_error(provider: str, payload: Any, secret: Secret) -> FleetError:
    """The exception for an `event: error` of an output stream.

    Its data is `{"detail": …}`; problem fields alongside (`status`, `title`) class it
    as the same HTTP error would be. Without a status it is the prediction failing,
    classed as a failed prediction is.
    """
    if not isinstance(payload, dict):
        payload = {"detail": payload}
    status = payload.get("status")
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        info = error_info(payload)
        return ERRORS.from_info(provider, status, info, secret, context="stream error")
    return failed_prediction_error(provider, {"error": error_info(payload).message}, secret)


def retry_after_in_body(body: Any) -> float | None:
    """The wait a 429 body names (`retry_after`, seconds) when no header said it."""
    if not isinstance(body, dict):
        return None
    value = body.get("retry_after")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value >= 0 else None


def _prediction_id(prediction: Mapping[str, Any]) -> str | None:
    value = prediction.get("id")
    return value if isinstance(value, str) and value else None

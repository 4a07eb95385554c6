"""Azure's error vocabulary, and its content filter's verdicts in words.

Azure answers in OpenAI's shape (`{"error": {"code", "message", …}}`) with its
own codes beside OpenAI's: numeric strings (`"401"`, `"429"`), names
(`DeploymentNotFound`, `InternalServerError`) and `content_filter`. A refused
Entra token answers `{"statusCode": 401, "message": …}` instead.

A content filter verdict names its categories with a severity (`hate`,
`violence`, …: safe, low, medium, high) or a detection (`jailbreak`,
`protected_material_text`, …), and custom blocklists by id. A `ContentFiltered`
error says which categories stopped the call, e.g. "azure: HTTP 400
content_filter: blocked by Azure's content filter: hate (medium), violence
(high)": the body's own message never says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from contracts.errors import ContentFiltered, FleetError, NotFound, QuotaExceeded
from providers.core.errors import ErrorTable
from providers.core.http import scrub, truncate
from providers.core.types import Secret
from providers.openai.errors import ERRORS as OPENAI_ERRORS

__all__ = [
    "ERRORS",
    "AzureErrorTable",
    "answer_filtered",
    "filtered_categories",
    "reworded",
]


class AzureErrorTable(ErrorTable):
    """OpenAI's table with Azure's codes, naming content filter categories."""

    def from_response(
        self, provider: str, status: int, headers: Mapping[str, str], body: bytes, secret: Secret
    ) -> FleetError:
        error = super().from_response(provider, status, headers, body, secret)
        if isinstance(error, ContentFiltered):
            try:
                payload = json.loads(body)
            except ValueError:
                return error
            return _prompt_filtered(provider, f"HTTP {status}", error, payload, secret)
        return error

    def from_payload(
        self, provider: str, payload: Any, secret: Secret, *, context: str = "stream error"
    ) -> FleetError:
        error = super().from_payload(provider, payload, secret, context=context)
        if isinstance(error, ContentFiltered):
            return _prompt_filtered(provider, context, error, {"error": payload}, secret)
        return error


ERRORS = AzureErrorTable(
    statuses={
        **OPENAI_ERRORS.statuses,
        # Azure's own codes (numeric ones like "429" are read as their status).
        "BadRequest": 400,
        "OperationNotSupported": 400,
        "Unauthorized": 401,
        "PermissionDenied": 403,
        "Forbidden": 403,
        "NotFound": 404,
        "DeploymentNotFound": 404,
        "Timeout": 408,
        "TooManyRequests": 429,
        "InsufficientQuota": 429,
        "InternalServerError": 500,
        "ServiceUnavailable": 503,
    },
    classes={
        **OPENAI_ERRORS.classes,
        "InsufficientQuota": QuotaExceeded,
        "QuotaExceeded": QuotaExceeded,
        "DeploymentNotFound": NotFound,
    },
)


def filtered_categories(results: Any) -> list[str]:
    """`hate (medium)`, `jailbreak (detected)`, `custom_blocklists (ids)` for every
    category a `content_filter_results` object says was filtered."""
    if not isinstance(results, dict):
        return []
    return [label for name, result in results.items() if (label := _label(name, result))]


def _label(name: str, result: Any) -> str | None:
    if isinstance(result, list):  # custom blocklists, older form: [{"filtered", "id"}]
        ids = _blocklist_ids(result)
        return f"{name} ({ids})" if ids else None
    if not isinstance(result, dict) or result.get("filtered") is not True:
        return None
    severity = result.get("severity")
    if isinstance(severity, str) and severity:
        return f"{name} ({severity})"
    details = result.get("details")  # custom blocklists: {"filtered", "details": [...]}
    if isinstance(details, list):
        ids = _blocklist_ids(details)
        return f"{name} ({ids})" if ids else name
    if result.get("detected") is True:
        return f"{name} (detected)"
    return name


def _blocklist_ids(items: list[Any]) -> str:
    return ", ".join(
        str(item.get("id"))
        for item in items
        if isinstance(item, dict) and item.get("filtered") is True and item.get("id")
    )


def _inner_results(payload: Any) -> Any:
    """The verdict inside an error body: `innererror.content_filter_result` as Azure
    sends it, or `inner_error.content_filter_results` as its API spec writes it."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None
    for inner_name in ("innererror", "inner_error"):
        inner = error.get(inner_name)
        if isinstance(inner, dict):
            for results_name in ("content_filter_result", "content_filter_results"):
                if results_name in inner:
                    return inner[results_name]
    return None


def _prompt_filtered(
    provider: str, where: str, error: FleetError, payload: Any, secret: Secret
) -> FleetError:
    categories = filtered_categories(_inner_results(payload))
    if not categories:
        return error  # Azure's own message is the best there is
    words = truncate(scrub(", ".join(categories), secret))
    message = f"{provider}: {where} content_filter: blocked by Azure's content filter: {words}"
    return reworded(error, message)


def answer_filtered(provider: str, results: Any) -> ContentFiltered:
    """The error for an answer stopped with `finish_reason: content_filter`."""
    categories = filtered_categories(results)
    head = f"{provider}: the answer was stopped by Azure's content filter"
    if not categories:
        return ContentFiltered(f"{head} (finish_reason content_filter)")
    return ContentFiltered(f"{head}: {truncate(', '.join(categories))}")


def reworded(error: FleetError, message: str) -> FleetError:
    """The same error (class, status, retry advice, request id) with a new message."""
    return type(error)(
        message,
        provider_status=error.provider_status,
        retryable=error.retryable,
        retry_after=error.retry_after,
        provider_request_id=error.provider_request_id,
    )

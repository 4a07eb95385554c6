"""Errors as Vertex AI says them: Google's `google.rpc.Status`, in Vertex's words.

The body is Gemini's (`providers.gemini.mock_errors` renders it); what differs is
what Vertex answers: a bad or expired access token is 401 `UNAUTHENTICATED`
(Gemini has API keys and a 400), a missing project 404, a throttled call 429
"Resource exhausted" about Vertex's own quotas, a per-day quota a 429 whose
`QuotaFailure` names a daily quota. The rest (overload, context, server errors,
permission, not found) is as Gemini says it.
"""

from __future__ import annotations

from typing import Any, Final

from providers.gemini.mock_errors import GoogleError, retry_delay
from providers.gemini.mock_errors import fault_error as gemini_fault_error
from providers.mock.faults import ErrorFault, MockError

__all__ = [
    "fault_error",
    "missing_token_error",
    "project_not_found",
    "rate_limit_error",
    "unauthenticated_error",
]

_TYPE: Final = "type.googleapis.com/google.rpc."
_UNAUTHENTICATED: Final = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_RESOURCE_EXHAUSTED: Final = (
    "Resource exhausted. Please try again later. Please refer to "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details."
)
_METRIC: Final = "aiplatform.googleapis.com/generate_content_requests_per_minute_per_project"


def _error_info(reason: str) -> dict[str, Any]:
    return {
        "@type": _TYPE + "ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "aiplatform.googleapis.com", "method": "PredictionService"},
    }


def unauthenticated_error(reason: str = "ACCESS_TOKEN_TYPE_UNSUPPORTED") -> GoogleError:
    """A bearer token Google does not take (unknown, expired: `ACCESS_TOKEN_EXPIRED`)."""
    return GoogleError(
        401, _UNAUTHENTICATED, "UNAUTHENTICATED", details=[_error_info(reason)], kind="unauthorized"
    )


def missing_token_error() -> GoogleError:
    return unauthenticated_error("CREDENTIALS_MISSING")


def project_not_found(project: str) -> GoogleError:
    return GoogleError(
        404, f"Project '{project}' not found or permission denied.", "NOT_FOUND", kind="not_found"
    )


def rate_limit_error(model: str | None, wait: float | None) -> GoogleError:
    """A 429 for a per-minute quota; `wait` (seconds) becomes its `RetryInfo`."""
    violation = {
        "quotaMetric": _METRIC,
        "quotaId": "GenerateContentRequestsPerMinutePerProjectPerBaseModel",
        "quotaDimensions": {"base_model": model or "mock-model", "region": "us-central1"},
    }
    details: list[dict[str, Any]] = [{"@type": _TYPE + "QuotaFailure", "violations": [violation]}]
    if wait is not None:
        details.append({"@type": _TYPE + "RetryInfo", "retryDelay": retry_delay(wait)})
    return GoogleError(
        429, _RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED", details=details, kind="rate_limited"
    )


def _quota_error(model: str | None) -> GoogleError:
    violation = {
        "quotaMetric": "aiplatform.googleapis.com/generate_content_requests_per_day_per_project",
        "quotaId": "GenerateContentRequestsPerDayPerProjectPerBaseModel",
        "quotaDimensions": {"base_model": model or "mock-model", "region": "us-central1"},
        "quotaValue": "1000",
    }
    message = (
        "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_day_per_"
        f"project with base model: {model or 'mock-model'}. Please submit a quota increase "
        "request. https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai."
    )
    details = [{"@type": _TYPE + "QuotaFailure", "violations": [violation]}]
    return GoogleError(429, message, "RESOURCE_EXHAUSTED", details=details, kind="quota")


def fault_error(fault: ErrorFault, model: str | None) -> MockError:
    """An injected error as Vertex AI says it."""
    if fault.kind == "unauthorized":
        return unauthenticated_error()
    if fault.kind == "rate_limited":
        return rate_limit_error(model, fault.wait)
    if fault.kind == "quota":
        return _quota_error(model)
    return gemini_fault_error(fault, model)

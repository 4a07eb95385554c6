"""OpenAI's error vocabulary, as OpenAI, Azure, vLLM and Ollama have sent it.

A status alone says too little: a 429 is throttling unless the body says the
money ran out, a 400 may be a content filter. `ERRORS` reads `code` and `type`
together (codes first, the more specific), and gives in-stream errors, which
arrive without an HTTP status, the status their code or type stands for.
"""

from __future__ import annotations

from contracts.errors import ContentFiltered, NotFound, QuotaExceeded
from providers.core.errors import ErrorTable

__all__ = ["ERRORS"]

ERRORS = ErrorTable(
    statuses={
        # codes
        "context_length_exceeded": 400,
        "string_above_max_length": 400,
        "unsupported_parameter": 400,
        "unsupported_value": 400,
        "invalid_value": 400,
        "content_filter": 400,
        "content_policy_violation": 400,
        "invalid_api_key": 401,
        "unsupported_country_region_territory": 403,
        "model_not_found": 404,
        "DeploymentNotFound": 404,
        "rate_limit_exceeded": 429,
        "insufficient_quota": 429,
        "billing_hard_limit_reached": 429,
        # types: OpenAI's, then the names vLLM and Ollama use
        "invalid_request_error": 400,
        "authentication_error": 401,
        "permission_error": 403,
        "request_forbidden": 403,
        "not_found_error": 404,
        "requests": 429,  # a rate limit on requests per minute or day
        "tokens": 429,  # a rate limit on tokens per minute or day
        "rate_limit_error": 429,
        "server_error": 500,
        "api_error": 500,
        "cf_bad_gateway": 502,
        "cf_service_unavailable": 503,
        "cf_gateway_timeout": 504,
        "overloaded_error": 529,
        "BadRequestError": 400,
        "NotFoundError": 404,
        "InternalServerError": 500,
    },
    classes={
        # A 429 is throttling unless its code or type says the money ran out: OpenAI
        # sent `type: insufficient_quota` with `code: null` (2022), then both fields
        # (2023 on); a request refused for an account's hard limit says so in the code.
        "insufficient_quota": QuotaExceeded,
        "billing_hard_limit_reached": QuotaExceeded,
        "billing_not_active": QuotaExceeded,
        # Azure: a 400 `code: content_filter` (with `innererror`); OpenAI's images
        # said `content_policy_violation`.
        "content_filter": ContentFiltered,
        "content_policy_violation": ContentFiltered,
        "model_not_found": NotFound,
        "DeploymentNotFound": NotFound,
    },
)

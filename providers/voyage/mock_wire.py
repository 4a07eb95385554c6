"""Voyage's bodies and errors, for the mock.

Errors are FastAPI's: `{"detail": "…"}`, or on a 422 (a body that does not fit
the schema) `{"detail": [{"type", "loc", "msg", "input"}]}`; the statuses are
the ones Voyage documents. Voyage documents no billing error: the mock says
`quota` as a 402 (what a billing refusal is in HTTP), which Voyage's SDK raises
as a plain `APIError` and the fleet as `QuotaExceeded`.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import ErrorFault, MockError, retry_headers
from providers.mock.ratelimit import Budget
from providers.mock.rerank import rank
from providers.mock.text import embedding_bytes, embedding_floats

__all__ = [
    "VALIDATION",
    "bad_request",
    "context_error",
    "embeddings_body",
    "fault_error",
    "invalid",
    "invalid_key",
    "rate_limit_error",
    "render_error",
    "rerank_body",
    "unsupported_model",
]

# `MockError.type` of a 422, whose detail is a list naming the field (`param`).
VALIDATION: Final = "validation"
_SEPARATORS: Final = (",", ":")


def render_error(error: MockError) -> web.Response:
    detail: Any = error.message
    if error.type == VALIDATION:
        location = ["body", error.param] if error.param else ["body"]
        detail = [{"type": "value_error", "loc": location, "msg": error.message, "input": None}]
    return web.Response(
        status=error.status,
        body=json.dumps({"detail": detail}, separators=_SEPARATORS).encode(),
        content_type="application/json",
        headers=error.headers,
    )


def invalid(message: str, field: str | None = None) -> MockError:
    """A body that does not fit the schema: FastAPI's 422."""
    return MockError(422, message, VALIDATION, param=field)


def bad_request(message: str) -> MockError:
    return MockError(400, message, "invalid_request")


def invalid_key(presented: str) -> MockError:
    message = "Provided API key is invalid." if presented else "No API key provided."
    return MockError(401, message, "unauthorized", kind="unauthorized")


def unsupported_model(model: str, supported: Sequence[str]) -> MockError:
    listed = ", ".join(repr(m) for m in supported)
    return bad_request(f"Model {model} is not supported. Supported models are [{listed}].")


def context_error(model: str, limit: int, tokens: int) -> MockError:
    return MockError(
        400,
        f"Request to model '{model}' failed. The max allowed tokens per submitted batch is "
        f"{limit}. Your batch has {tokens} tokens after truncation. Please lower the number "
        "of tokens in the batch.",
        "invalid_request",
        kind="context",
    )


def rate_limit_error(budget: Budget) -> MockError:
    wait = max(1, math.ceil(budget.retry_after))
    return MockError(
        429,
        "You have exceeded your organization's rate limit. Please slow down your requests "
        "(https://docs.voyageai.com/docs/rate-limits).",
        "rate_limited",
        headers={"retry-after": str(wait)},
        kind="rate_limited",
    )


_SERVER: Final = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def fault_error(fault: ErrorFault, model: str | None, context_window: int) -> MockError:
    """An injected error as Voyage says it."""
    kind = fault.kind
    if kind == "bad_request":
        return bad_request("Invalid request (mock fault).")
    if kind == "unauthorized":
        return invalid_key("mock-fault-key")
    if kind == "forbidden":
        return MockError(
            403, "Your IP address is not allowed to access the API.", "forbidden", kind=kind
        )
    if kind == "not_found":
        return MockError(404, "Not Found", "not_found", kind=kind)
    if kind == "rate_limited":
        return MockError(
            429,
            "You have exceeded your organization's rate limit. Please slow down your requests "
            "(https://docs.voyageai.com/docs/rate-limits).",
            "rate_limited",
            headers=retry_headers(fault),
            kind=kind,
        )
    if kind == "quota":
        return MockError(
            402,
            "Your organization has used up its usage limit. Please add a payment method or "
            "raise the limit in the billing page (https://dash.voyageai.com/billing).",
            "quota",
            kind=kind,
        )
    if kind == "context":
        return context_error(model or "voyage-3.5", context_window, context_window + 1)
    if kind == "overloaded":
        return MockError(503, "The server is overloaded.", "overloaded", kind=kind)
    return MockError(fault.status, _SERVER.get(fault.status, "Server Error"), "server", kind=kind)


def embeddings_body(
    texts: Sequence[str], dims: int, base64_encoded: bool, model: str, tokens: int
) -> dict[str, Any]:
    data = [
        {
            "object": "embedding",
            "embedding": (
                base64.b64encode(embedding_bytes(text, dims)).decode()
                if base64_encoded
                else embedding_floats(text, dims)
            ),
            "index": index,
        }
        for index, text in enumerate(texts)
    ]
    return {"object": "list", "data": data, "model": model, "usage": {"total_tokens": tokens}}


def rerank_body(
    query: str,
    documents: list[str],
    top_k: int | None,
    return_documents: bool,
    model: str,
    tokens: int,
) -> dict[str, Any]:
    ranked = rank(query, documents)
    data: list[dict[str, Any]] = []
    for index, score in ranked[:top_k] if top_k is not None else ranked:
        item: dict[str, Any] = {"relevance_score": score, "index": index}
        if return_documents:
            item["document"] = documents[index]
        data.append(item)
    return {"object": "list", "data": data, "model": model, "usage": {"total_tokens": tokens}}

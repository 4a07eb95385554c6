"""TEI's errors: `{"error": "…", "error_type": "…"}` with one status per type.

| `error_type` | status | meaning                                          | fleet          |
|--------------|--------|--------------------------------------------------|----------------|
| `empty`      | 400    | no inputs                                        | BadRequest     |
| `validation` | 413    | too many inputs, an input too long, a bad prompt | BadRequest     |
| `tokenizer`  | 422    | the tokenizer failed on an input                 | BadRequest     |
| `backend`    | 424    | inference failed                                 | retried        |
| `overloaded` | 429    | the request queue is full (no `retry-after`)     | RateLimited    |
| `unhealthy`  | 503    | the model is down                                | retried        |

Not everything comes as that object: a refused key is an empty 401 (TEI's
`--api-key` check), an unknown route an empty 404, a body axum cannot read a
plain-text 400/415/422, and a gateway in front (Inference Endpoints) says 402,
403 or 5xx its own way; the table's defaults classify those by status.

Two 4xx answers are read closer (`classify`):

* a 413 "batch size 40 > maximum allowed batch size 16" names the server's
  limit (`--max-client-batch-size`), which the adapter learns and re-splits by
  (`batch_limit`);
* a 424 "model is not a re-ranker model" (or not an embedding model) is an
  endpoint serving the other kind of model: retrying cannot help, so it is a
  `BadRequest` (`WRONG_MODEL_TYPE`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Final

import httpx

from contracts.errors import BadRequest, FleetError, ProviderUnavailable
from providers.core.errors import ErrorTable, parse_error_body
from providers.core.types import Secret

__all__ = ["ERRORS", "WRONG_MODEL_TYPE", "batch_limit", "error_from_response"]

WRONG_MODEL_TYPE: Final = "wrong_model_type"
_BATCH_LIMIT: Final = re.compile(r"batch size \d+ > maximum allowed batch size (\d+)")
_MODEL_TYPE: Final = re.compile(r"model is not an? [\w -]+ model", re.IGNORECASE)

ERRORS: Final = ErrorTable(
    statuses={
        "empty": 400,
        "validation": 413,
        "tokenizer": 422,
        "backend": 424,
        "overloaded": 429,
        "unhealthy": 503,
    },
    classes={
        "backend": ProviderUnavailable,
        "unhealthy": ProviderUnavailable,
        WRONG_MODEL_TYPE: BadRequest,
    },
)


def batch_limit(response: httpx.Response) -> int | None:
    """The server's batch limit, when `response` refused a batch for its size."""
    if response.status_code != 413:
        return None
    found = _BATCH_LIMIT.search(parse_error_body(response.content).message)
    return int(found.group(1)) if found else None


def error_from_response(provider: str, response: httpx.Response, secret: Secret) -> FleetError:
    """The exception for a read, non-success TEI response."""
    info = parse_error_body(response.content)
    if response.status_code == 424 and _MODEL_TYPE.search(info.message):
        info = replace(info, type=WRONG_MODEL_TYPE)
    return ERRORS.from_info(provider, response.status_code, info, secret, headers=response.headers)

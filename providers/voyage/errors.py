"""Voyage's errors: `{"detail": "…"}` (a list of FastAPI validation items on a 422).

The status says it all (400 invalid request, 401 key, 403 the caller's IP, 429
rate limit, 500 server, 502/503/504 unavailable), so the table is the defaults
plus one case the status gets wrong for the fleet: an unknown model is a 400
whose detail reads "Model X is not supported. Supported models are […]"; the
adapter tags it (`UNSUPPORTED_MODEL`) so it is raised as `NotFound`, as every
other provider's unknown model is. Voyage documents no billing error; a 402, if
its gateway ever sends one, is `QuotaExceeded` by the table's default.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Final

import httpx

from contracts.errors import FleetError, NotFound
from providers.core.errors import ErrorTable, parse_error_body
from providers.core.types import Secret

__all__ = ["ERRORS", "UNSUPPORTED_MODEL", "error_from_response"]

UNSUPPORTED_MODEL: Final = "unsupported_model"
_UNSUPPORTED: Final = re.compile(r"^Model \S+ is not supported\b")

ERRORS: Final = ErrorTable(classes={UNSUPPORTED_MODEL: NotFound})


def error_from_response(provider: str, response: httpx.Response, secret: Secret) -> FleetError:
    """The exception for a read, non-success Voyage response."""
    info = parse_error_body(response.content)
    if response.status_code == 400 and _UNSUPPORTED.match(info.message):
        info = replace(info, type=UNSUPPORTED_MODEL)
    return ERRORS.from_info(provider, response.status_code, info, secret, headers=response.headers)

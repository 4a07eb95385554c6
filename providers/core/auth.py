"""How a request proves who sends it, as `httpx.Auth` classes.

An adapter picks one per request from the opened credential. Values are
checked before they reach a header: httpx would quote a bad value in its
exception, and that value is a secret.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping

import httpx

from contracts.errors import BadRequest

__all__ = ["HeaderAuth", "header_value"]


def header_value(provider: str, field: str, value: str) -> str:
    """`value` stripped, if it can travel in an HTTP header; never echoes it."""
    value = value.strip()
    if not (value.isascii() and value.isprintable()):
        raise BadRequest(f"{provider}: credential field {field!r} is not a valid header")
    return value


class HeaderAuth(httpx.Auth):
    """Sets fixed headers (an API key header, a version header) on every request."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = dict(headers)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(self._headers)
        yield request

    def __repr__(self) -> str:  # the values are secrets
        return f"{type(self).__name__}(headers={sorted(self._headers)})"

"""Bearer tokens traded for a credential (Entra ID, Google service accounts).

A provider that does not take its credential directly (Azure with Entra ID,
Vertex AI) wants a short-lived access token, got from a token endpoint. Getting
one costs a round trip (and, for Google, an RSA signature), so tokens are cached
in this worker's memory per credential until shortly before they expire; the
credential itself never leaves memory either. Concurrent requests for the same
credential wait for one fetch instead of each making their own.

`BearerTokenAuth` puts the token on a request and, when the provider still
answers 401 (a token revoked or expired early), drops it and tries once more
with a fresh one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx

from contracts.errors import (
    BadRequest,
    FleetError,
    InternalError,
    ProviderUnavailable,
    Unauthorized,
)
from providers.core.errors import ErrorInfo, ErrorTable
from providers.core.http import HttpClientPool, translate_transport_errors
from providers.core.types import Secret

__all__ = [
    "AccessToken",
    "BearerTokenAuth",
    "TokenCache",
    "credential_key",
    "fetch_oauth2_token",
]

# Refresh this long before expiry (or at half-life for short-lived tokens), so a
# token is never sent in its last moments and refused on the way.
REFRESH_MARGIN: Final = 300.0
# Credentials a worker keeps tokens for; the least recently used go first.
MAX_CACHED: Final = 10_000


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str
    expires_in: float  # seconds from when it was issued

    def __repr__(self) -> str:  # the value is a secret
        return f"AccessToken(expires_in={self.expires_in})"


TokenFetch = Callable[[], Awaitable[AccessToken]]


def credential_key(secret: Secret, fields: tuple[str, ...]) -> str:
    """A cache key for the credential `fields` make up: a digest, never the values.

    Keyed by content rather than by credential id, a rotated credential gets its
    own token at once, and the same credential sealed twice shares one.
    """
    digest = hashlib.sha256()
    for name in fields:
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update((secret.get(name) or "").encode())
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(slots=True)
class _Entry:
    token: str
    refresh_at: float


class TokenCache:
    """Access tokens per credential key, each until `REFRESH_MARGIN` before expiry."""

    def __init__(
        self,
        *,
        max_entries: int = MAX_CACHED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._max_entries = max_entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def _fresh(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None or self._clock() >= entry.refresh_at:
            return None
        self._entries.move_to_end(key)
        return entry.token

    async def get(self, key: str, fetch: TokenFetch) -> str:
        """The cached token for `key`, or a new one from `fetch` (one fetch at a time)."""
        token = self._fresh(key)
        if token is not None:
            return token
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                token = self._fresh(key)  # another caller may have fetched it meanwhile
                if token is not None:
                    return token
                issued = self._clock()
                fetched = await fetch()
                lifetime = max(fetched.expires_in, 0.0)
                margin = min(REFRESH_MARGIN, lifetime / 2)
                self._entries[key] = _Entry(fetched.value, issued + lifetime - margin)
                self._entries.move_to_end(key)
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
                return fetched.value
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]

    def invalidate(self, key: str, token: str) -> None:
        """Forget `token` (refused by the provider), unless a newer one replaced it."""
        entry = self._entries.get(key)
        if entry is not None and entry.token == token:
            del self._entries[key]


class BearerTokenAuth(httpx.Auth):
    """`Authorization: Bearer <token>` from a `TokenCache`; on a 401, one fresh token."""

    def __init__(self, cache: TokenCache, key: str, fetch: TokenFetch) -> None:
        self._cache = cache
        self._key = key
        self._fetch = fetch

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._cache.get(self._key, self._fetch)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        self._cache.invalidate(self._key, token)
        token = await self._cache.get(self._key, self._fetch)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("BearerTokenAuth fetches tokens asynchronously")
        yield request  # pragma: no cover  (makes this a generator, as httpx expects)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# RFC 6749 §5.2 error codes: a refused credential is the caller's to fix.
OAUTH2_ERRORS: Final = ErrorTable(
    classes={
        "invalid_client": Unauthorized,
        "invalid_grant": Unauthorized,
        "unauthorized_client": Unauthorized,
        "invalid_request": BadRequest,
        "invalid_scope": BadRequest,
        "unsupported_grant_type": BadRequest,
    },
)


async def fetch_oauth2_token(
    provider: str,
    http: HttpClientPool,
    url: str,
    form: Mapping[str, str],
    secret: Secret,
) -> AccessToken:
    """POST an RFC 6749 token request; the answer's `access_token` and lifetime.

    Error messages carry the endpoint's `error` code and description, scrubbed of
    the credential, and say it was the token endpoint that refused.
    """
    with translate_transport_errors(provider, secret=secret):
        response = await http.client.post(
            url, data=dict(form), headers={"Accept": "application/json"}
        )
    payload = _json_object(response.content)
    if response.status_code != 200:
        raise _token_error(provider, response, payload, secret)
    token = payload.get("access_token")
    if not isinstance(token, str) or not token:
        raise ProviderUnavailable(f"{provider}: token endpoint answered without an access_token")
    expires_in = payload.get("expires_in", 3600)
    try:
        lifetime = float(expires_in)
    except (TypeError, ValueError):
        raise InternalError(f"{provider}: token endpoint sent a bad expires_in") from None
    return AccessToken(token, lifetime)


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(content) if content else {}
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _token_error(
    provider: str, response: httpx.Response, payload: dict[str, Any], secret: Secret
) -> FleetError:
    code = payload.get("error")
    description = payload.get("error_description")
    info = ErrorInfo(
        message=description if isinstance(description, str) else "",
        code=code if isinstance(code, str) else None,
    )
    return OAUTH2_ERRORS.from_info(
        provider,
        response.status_code,
        info,
        secret,
        headers=response.headers,
        context="token endpoint",
    )

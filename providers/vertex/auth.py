"""OAuth2 access tokens for a service account (RFC 7523 JWT bearer grant).

A signed JWT (RS256, `kid` = the key file's `private_key_id`, scope
`cloud-platform`, one hour) is traded at the token endpoint for an access token,
which is cached per credential until shortly before it expires
(`providers.core.tokens`). google-auth signs; our pooled client sends, so the
exchange has the fleet's timeouts and error mapping.

The token endpoint is, in order: the operator's (FLEET_PROVIDER_TOKEN_URLS), the
key file's `token_uri`, Google's. The JWT's audience is Google's token endpoint
whichever endpoint it is sent to, as google-auth has it (`google.oauth2.
service_account`): Google checks that audience, also behind a proxy or a private
endpoint, and the mock takes it too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from typing import Final

import httpx
from google.auth import crypt, jwt

from contracts.errors import BadRequest
from providers.core.http import HttpClientPool
from providers.core.tokens import AccessToken, BearerTokenAuth, TokenCache, fetch_oauth2_token
from providers.vertex.account import ServiceAccount

__all__ = [
    "ASSERTION_LIFETIME",
    "GOOGLE_TOKEN_URL",
    "JWT_BEARER_GRANT",
    "SCOPE",
    "ServiceAccountTokens",
    "signed_assertion",
]

GOOGLE_TOKEN_URL: Final = "https://oauth2.googleapis.com/token"
SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Google refuses assertions meant to live longer than an hour.
ASSERTION_LIFETIME: Final = 3600

# google-auth's functions carry no annotations: these say what they take and give.
_rsa_signer: Callable[[Mapping[str, str | None]], crypt.Signer] = (
    crypt.RSASigner.from_service_account_info
)
_encode_jwt: Callable[..., bytes] = jwt.encode


def signed_assertion(
    provider: str, account: ServiceAccount, now: int, audience: str = GOOGLE_TOKEN_URL
) -> str:
    """The JWT the token endpoint trades for an access token."""
    claims = {
        "iss": account.client_email,
        "scope": SCOPE,
        "aud": audience,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    }
    try:
        signer = _rsa_signer(
            {"private_key": account.private_key, "private_key_id": account.private_key_id}
        )
        # An EC key loads as a signer, then fails to sign (TypeError).
        return _encode_jwt(signer, claims, key_id=account.private_key_id).decode("ascii")
    except (ValueError, TypeError):
        # The library's message may quote the key material: ours never does.
        raise BadRequest(
            f"{provider}: the service account's private_key is not a valid PEM RSA key"
        ) from None


class ServiceAccountTokens:
    """Access tokens for every credential an adapter serves, one cache per adapter."""

    def __init__(
        self,
        provider: str,
        http: HttpClientPool,
        token_url: str | None,
        *,
        cache: TokenCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._provider = provider
        self._http = http
        self._token_url = token_url
        self._cache = cache if cache is not None else TokenCache()
        self._clock = clock

    def token_url(self, account: ServiceAccount) -> str:
        return self._token_url or account.token_uri or GOOGLE_TOKEN_URL

    async def fetch(self, account: ServiceAccount) -> AccessToken:
        """A new access token (no cache)."""
        url = self.token_url(account)
        assertion = signed_assertion(self._provider, account, int(self._clock()))
        form = {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
        return await fetch_oauth2_token(self._provider, self._http, url, form, account.redact)

    def auth(self, account: ServiceAccount) -> httpx.Auth:
        """`Authorization: Bearer …` (refreshed once on a 401), plus the quota project."""
        bearer = BearerTokenAuth(self._cache, account.cache_key, lambda: self.fetch(account))
        if account.quota_project is None:
            return bearer
        return _WithHeaders(bearer, {"x-goog-user-project": account.quota_project})


class _WithHeaders(httpx.Auth):
    """Another auth flow, with fixed headers set on the request first."""

    def __init__(self, inner: httpx.Auth, headers: dict[str, str]) -> None:
        self._inner = inner
        self._headers = headers

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers.update(self._headers)
        flow = self._inner.async_auth_flow(request)
        outgoing = await flow.__anext__()
        while True:
            response = yield outgoing
            try:
                outgoing = await flow.asend(response)
            except StopAsyncIteration:
                return

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("service account tokens are fetched asynchronously")
        yield request  # pragma: no cover  (makes this a generator, as httpx expects)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r}, headers={sorted(self._headers)})"

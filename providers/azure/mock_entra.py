"""Microsoft Entra ID's token endpoint as the mock plays it: client credentials only.

`POST /login/{tenant}/oauth2/v2.0/token` (under the mock's `/azure` prefix) takes
the form a confidential client sends (`grant_type=client_credentials`,
`client_id`, `client_secret`, `scope`) and answers as Entra does: a bearer
token with `expires_in`, or an RFC 6749 error with Entra's AADSTS description
(an unknown tenant or client is a 400, a wrong secret a 401 `invalid_client`).
The API routes accept the tokens issued here until they expire.
"""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Final

from aiohttp import web

__all__ = [
    "MOCK_CLIENT_ID",
    "MOCK_CLIENT_SECRET",
    "MOCK_TENANT",
    "SCOPES",
    "TOKENS",
    "TOKEN_LIFETIME",
    "TokenBook",
    "token_endpoint",
]

# The one app registration the mock knows (long values: tests look for them in messages).
MOCK_TENANT: Final = "mock-tenant-0000"
MOCK_CLIENT_ID: Final = "mock-client-id-0000"
MOCK_CLIENT_SECRET: Final = "mock-client-secret-5b7e2d"
SCOPES: Final = frozenset(
    {"https://cognitiveservices.azure.com/.default", "https://ai.azure.com/.default"}
)
TOKEN_LIFETIME: Final = 3599
# Issued tokens kept at most (a load test may fetch many); the oldest go first.
_MAX_TOKENS: Final = 10_000


def now() -> float:
    """The mock's clock for token lifetimes (tests replace it to expire tokens)."""
    return time.monotonic()


class TokenBook:
    """Bearer tokens this mock issued, each until it expires."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}

    def issue(self) -> str:
        if len(self._expiry) >= _MAX_TOKENS:
            oldest = next(iter(self._expiry))
            del self._expiry[oldest]
        token = "mock-entra-" + secrets.token_urlsafe(32)
        self._expiry[token] = now() + TOKEN_LIFETIME
        return token

    def valid(self, token: str) -> bool:
        expiry = self._expiry.get(token)
        return expiry is not None and now() < expiry


TOKENS: Final = web.AppKey("azure_tokens", TokenBook)


def _refusal(status: int, error: str, code: int, description: str) -> web.Response:
    trace, correlation = uuid.uuid4(), uuid.uuid4()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return web.json_response(
        {
            "error": error,
            "error_description": (
                f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} "
                f"Timestamp: {stamp}"
            ),
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": str(trace),
            "correlation_id": str(correlation),
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
        status=status,
    )


async def token_endpoint(request: web.Request) -> web.Response:
    tenant = request.match_info["tenant"]
    form = await request.post()
    grant = str(form.get("grant_type", ""))
    client_id = str(form.get("client_id", ""))
    client_secret = str(form.get("client_secret", ""))
    scope = str(form.get("scope", ""))
    if tenant != MOCK_TENANT:
        return _refusal(
            400,
            "invalid_request",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )
    if grant != "client_credentials":
        return _refusal(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant}'.",
        )
    if not client_id:
        return _refusal(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        )
    if client_id != MOCK_CLIENT_ID:
        return _refusal(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{tenant}'. This can happen if the application has not been installed by the "
            "administrator of the tenant or consented to by any user in the tenant.",
        )
    if not client_secret:
        return _refusal(
            401,
            "invalid_client",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the "
            "'client_credentials' grant type.",
        )
    if not secrets.compare_digest(client_secret, MOCK_CLIENT_SECRET):
        return _refusal(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the "
            f"client secret value, not the client secret ID, for a secret added to app "
            f"'{client_id}'.",
        )
    if scope not in SCOPES:
        return _refusal(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must "
            "have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )
    token = request.app[TOKENS].issue()
    return web.json_response(
        {
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME,
            "ext_expires_in": TOKEN_LIFETIME,
            "access_token": token,
        }
    )

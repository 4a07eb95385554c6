"""How a request to Azure proves who sends it: an API key, or an Entra ID token.

A credential carries one of two things:

* `api_key`, sent as the `api-key` header;
* Entra ID client credentials (`tenant_id`, `client_id`, `client_secret`), traded
  at the tenant's token endpoint for a bearer token of the Cognitive Services
  scope. Tokens are cached per credential in the adapter (`TokenCache`), so many
  requests share one fetch, and a 401 gets one retry with a fresh token.

Only `api_key` and `client_secret` are secrets; the rest (endpoint, API version,
deployment, tenant and client ids) stay readable in error messages, where they
are what an operator needs to see (see `secret_fields`).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

import httpx

from contracts.errors import BadRequest
from providers.core.auth import HeaderAuth, header_value
from providers.core.http import HttpClientPool
from providers.core.tokens import (
    AccessToken,
    BearerTokenAuth,
    TokenCache,
    credential_key,
    fetch_oauth2_token,
)
from providers.core.types import Secret

__all__ = ["ENTRA_SCOPE", "ENTRA_TOKEN_URL", "AzureAuth", "secret_fields"]

# `{tenant_id}` is filled in per credential; an operator's FLEET_PROVIDER_TOKEN_URLS
# entry (a sovereign cloud, a proxy) may use the same placeholder.
ENTRA_TOKEN_URL: Final = "https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token"
ENTRA_SCOPE: Final = "https://cognitiveservices.azure.com/.default"
_TENANT: Final = "{tenant_id}"
_ENTRA_FIELDS: Final = ("tenant_id", "client_id", "client_secret")
# Everything one Entra token depends on: the token cache's key.
_TOKEN_FIELDS: Final = (*_ENTRA_FIELDS, "token_url", "scope")
_SECRET_FIELDS: Final = ("api_key", "client_secret")


def secret_fields(secret: Secret) -> dict[str, str]:
    """The credential's secret values only: what messages are scrubbed of."""
    return {name: value for name in _SECRET_FIELDS if (value := secret.get(name))}


class AzureAuth:
    """The `httpx.Auth` for each credential, and the adapter's Entra token cache.

    `token_url` is the operator's token endpoint (or the spec's default); a
    credential's own `token_url` wins over it.
    """

    def __init__(self, provider: str, http: HttpClientPool, token_url: str | None) -> None:
        self._provider = provider
        self._http = http
        self._token_url = token_url or ENTRA_TOKEN_URL
        self._tokens = TokenCache()

    def for_credential(self, secret: Secret, scrub: Secret) -> httpx.Auth:
        """`api-key` or Entra ID bearer auth; `BadRequest` for a credential with
        neither (naming what is missing) or with both."""
        name = self._provider
        api_key = (secret.get("api_key") or "").strip()
        entra = {field: (secret.get(field) or "").strip() for field in _ENTRA_FIELDS}
        given = [field for field, value in entra.items() if value]
        if api_key and given:
            raise BadRequest(
                f"{name}: the credential holds both api_key and Entra ID fields "
                f"({', '.join(given)}); keep one way to sign in"
            )
        if api_key:
            return HeaderAuth({"api-key": header_value(name, "api_key", api_key)})
        missing = [field for field, value in entra.items() if not value]
        if len(missing) == len(_ENTRA_FIELDS):
            raise BadRequest(
                f"{name}: the credential needs api_key, or tenant_id, client_id and "
                "client_secret (Entra ID)"
            )
        if missing:
            raise BadRequest(f"{name}: the Entra ID credential lacks {', '.join(missing)}")
        url = self._url(secret.get("token_url"), entra["tenant_id"])
        form = {
            "grant_type": "client_credentials",
            "client_id": entra["client_id"],
            "client_secret": entra["client_secret"],
            "scope": (secret.get("scope") or "").strip() or ENTRA_SCOPE,
        }

        async def fetch() -> AccessToken:
            return await fetch_oauth2_token(name, self._http, url, form, scrub)

        return BearerTokenAuth(self._tokens, credential_key(secret, _TOKEN_FIELDS), fetch)

    def _url(self, own: str | None, tenant: str) -> str:
        template = (own or "").strip() or self._token_url
        # Quoted: the tenant is one path segment, whatever the credential holds.
        return template.replace(_TENANT, quote(tenant, safe=""))

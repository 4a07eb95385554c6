"""AWS Signature Version 4 for httpx requests, computed by botocore's own signer.

`SigV4Auth` signs each request as it is sent (so the `X-Amz-Date` is fresh on
every attempt) and signs only the headers that reach AWS unchanged: `host`,
`content-type` and the `x-amz-*` headers botocore adds. Headers a transport or a
proxy may rewrite (`accept-encoding`, `connection`, `user-agent`) stay unsigned,
which is what makes a signature survive them.

The path is signed exactly as httpx holds it (`request.url.raw_path`), so the
double encoding of the canonical URI is botocore's business: a path carrying
`%2F` is signed as `%252F`, as AWS computes it from what it receives.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Final

import httpx
from botocore.auth import SigV4Auth as BotocoreSigV4
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from contracts.errors import BadRequest
from providers.core.auth import header_value
from providers.core.types import Secret

__all__ = ["SERVICE", "SigV4Auth", "credentials_of", "sign"]

# The signing name of bedrock-runtime, bedrock and bedrock-agent-runtime alike.
SERVICE: Final = "bedrock"
# What botocore adds to a request, copied back onto the httpx one.
_ADDED: Final = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-SHA256")


def credentials_of(provider: str, secret: Secret) -> Credentials:
    """botocore credentials from the credential's fields (values checked, never echoed)."""
    fields = {}
    for name in ("access_key_id", "secret_access_key", "session_token"):
        value = (secret.get(name) or "").strip()
        if value:
            fields[name] = header_value(provider, name, value)
    if "access_key_id" not in fields or "secret_access_key" not in fields:
        raise BadRequest(
            f"{provider}: the credential needs access_key_id and secret_access_key, or an api_key"
        )
    return Credentials(
        fields["access_key_id"], fields["secret_access_key"], fields.get("session_token")
    )


def sign(request: httpx.Request, credentials: Credentials, region: str) -> None:
    """Add the SigV4 headers to `request` (its body must be read)."""
    headers = {"host": request.headers["host"]}
    content_type = request.headers.get("content-type")
    if content_type is not None:
        headers["content-type"] = content_type
    url = request.url.copy_with(fragment=None)
    aws = AWSRequest(
        method=request.method,
        url=f"{url.scheme}://{url.netloc.decode('ascii')}{url.raw_path.decode('ascii')}",
        headers=headers,
        data=request.content,
    )
    BotocoreSigV4(credentials, SERVICE, region).add_auth(aws)
    for name in _ADDED:
        value = aws.headers.get(name)
        if value is not None:
            request.headers[name] = value


class SigV4Auth(httpx.Auth):
    """Signs every request (and every retry httpx makes of it) with SigV4."""

    requires_request_body = True

    def __init__(self, credentials: Credentials, region: str) -> None:
        self._credentials = credentials
        self._region = region

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sign(request, self._credentials, self._region)
        yield request

    def __repr__(self) -> str:  # the credentials are secrets
        return f"{type(self).__name__}(region={self._region!r})"

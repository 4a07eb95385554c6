"""The Bedrock mock's door: SigV4 checked for real, or a Bedrock API key.

For a SigV4 request the mock parses `Authorization` (`AWS4-HMAC-SHA256
Credential=AKID/date/region/service/aws4_request, SignedHeaders=…, Signature=…`),
looks up the secret of that access key id among its own keys, recomputes the
signature with botocore over the request as received (raw path, the signed
headers, the body) and compares the two in constant time. The refusals follow
AWS, each a 403 unless said otherwise:

* no `Authorization` → `MissingAuthenticationTokenException` "Missing Authentication Token";
* an Authorization that is not SigV4 or lacks a part → `IncompleteSignatureException`;
* an access key id the mock does not know, or a session token that does not match
  the key's → `UnrecognizedClientException` "The security token included in the
  request is invalid.";
* a scope for another service or an unknown region, a date more than 5 minutes off,
  a different signature → `InvalidSignatureException` with AWS's wording.

`Authorization: Bearer <key>` is a Bedrock API key: `MockConfig.api_keys` (or any,
with `accept_any_key`).
"""

from __future__ import annotations

import datetime
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from providers.bedrock.endpoints import is_known_region
from providers.mock.config import MockConfig
from providers.mock.faults import MockError

__all__ = [
    "ACCESS_KEY_ID",
    "MOCK_REGION",
    "SECRET_ACCESS_KEY",
    "SESSION_ACCESS_KEY_ID",
    "SESSION_SECRET",
    "SESSION_TOKEN",
    "WRONG_SECRET",
    "Identity",
    "authenticate",
    "expected_signature",
]

# The mock's own keys: long-lived, and temporary (the second needs its session token).
ACCESS_KEY_ID: Final = "AKIAMOCKBEDROCK0FLEET"
SECRET_ACCESS_KEY: Final = "mockBedrockSecret/K7MDENG+bPxRfiCYFLEETKEY1"
SESSION_ACCESS_KEY_ID: Final = "ASIAMOCKBEDROCK0FLEET"
SESSION_SECRET: Final = "mockBedrockSession/wJalrXUtnFEMI+K7MDENGFLEET2"
SESSION_TOKEN: Final = "mockSessionToken//IQoJb3JpZ2luX2VjEFLEET3"
# Well-formed, refused: the good access key id with this secret fails its signature.
WRONG_SECRET: Final = "mockBedrockWrong/0000000000000000000000000000"
MOCK_REGION: Final = "us-east-1"
_KEYS: Final[Mapping[str, tuple[str, str | None]]] = {
    ACCESS_KEY_ID: (SECRET_ACCESS_KEY, None),
    SESSION_ACCESS_KEY_ID: (SESSION_SECRET, SESSION_TOKEN),
}

_SERVICE: Final = "bedrock"
_SKEW: Final = datetime.timedelta(minutes=5)
_TIMESTAMP: Final = "%Y%m%dT%H%M%SZ"
_AUTH: Final = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<headers>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)
_INVALID_TOKEN: Final = "The security token included in the request is invalid."
_MISMATCH: Final = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who called (access key id or API key: the rate limiter's key) and for which region."""

    principal: str
    region: str


def _refuse(kind: str, message: str, status: int = 403) -> MockError:
    return MockError(status, message, kind, kind="unauthorized")


def authenticate(request: web.Request, body: bytes, config: MockConfig) -> Identity:
    """Who signed the request, or a `MockError` as AWS words the refusal."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise _refuse("MissingAuthenticationTokenException", "Missing Authentication Token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer":
        token = token.strip()
        if not config.accepts(token):
            raise _refuse("UnrecognizedClientException", _INVALID_TOKEN)
        return Identity(token, MOCK_REGION)
    match = _AUTH.fullmatch(header.strip())
    if match is None:
        raise _refuse(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
            "parameters (AWS4-HMAC-SHA256).",
        )
    akid, date, region, service, terminator = (match["credential"].split("/") + [""] * 5)[:5]
    if terminator != "aws4_request":
        raise _refuse("IncompleteSignatureException", "Credential is malformed.")
    known = _KEYS.get(akid)
    if known is None and not config.accept_any_key:
        raise _refuse("UnrecognizedClientException", _INVALID_TOKEN)
    if service != _SERVICE:
        raise _refuse(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{_SERVICE}'. ",
        )
    if not is_known_region(region):
        raise _refuse(
            "InvalidSignatureException", "Credential should be scoped to a valid region. "
        )
    amz_date = _check_date(request.headers.get("X-Amz-Date", ""))
    if known is None:
        return Identity(akid, region)  # accept_any_key: a stranger's signature cannot be checked
    secret, session_token = known
    if session_token is not None and request.headers.get("X-Amz-Security-Token") != session_token:
        raise _refuse("UnrecognizedClientException", _INVALID_TOKEN)
    signed = match["headers"].split(";")
    if "host" not in signed:
        raise _refuse(
            "InvalidSignatureException", "'Host' must be a 'SignedHeader' in the AWS Authorization."
        )
    headers = {name: ",".join(request.headers.getall(name, [])) for name in signed}
    expected = expected_signature(
        request.method,
        f"{request.scheme}://{request.host}{request.raw_path}",
        headers,
        body,
        amz_date,
        Credentials(akid, secret, session_token),
        region,
    )
    if date != amz_date[:8] or not hmac.compare_digest(expected, match["signature"]):
        raise _refuse("InvalidSignatureException", _MISMATCH)
    return Identity(akid, region)


def _check_date(raw: str) -> str:
    try:
        when = datetime.datetime.strptime(raw, _TIMESTAMP).replace(tzinfo=datetime.UTC)
    except ValueError:
        raise _refuse(
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        ) from None
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    if when < now - _SKEW:
        raise _refuse(
            "InvalidSignatureException",
            f"Signature expired: {raw} is now earlier than {(now - _SKEW).strftime(_TIMESTAMP)} "
            f"({now.strftime(_TIMESTAMP)} - 5 min.)",
        )
    if when > now + _SKEW:
        raise _refuse(
            "InvalidSignatureException",
            f"Signature not yet current: {raw} is still later than "
            f"{(now + _SKEW).strftime(_TIMESTAMP)} ({now.strftime(_TIMESTAMP)} + 5 min.)",
        )
    return raw


def expected_signature(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    amz_date: str,
    credentials: Credentials,
    region: str,
) -> str:
    """The SigV4 signature AWS would compute for this request, by botocore's rules."""
    aws = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    aws.context["timestamp"] = amz_date
    signer = SigV4Auth(credentials, _SERVICE, region)
    canonical = signer.canonical_request(aws)
    signature: str = signer.signature(signer.string_to_sign(aws, canonical), aws)
    return signature
